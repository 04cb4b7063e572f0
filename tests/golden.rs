//! Golden files: every `tests/golden/*.hl7` converts to exactly `tests/golden/*.json`
//! (`{"bundle": …, "outcome": …}`). Refresh with `UPDATE_GOLDEN=1 cargo test --test golden`
//! and review the diff.

mod common;

use common::{hl7_files, plan};
use serde_json::{Value, json};
use std::path::Path;
use v2fhir::mapping::eval::{self, ConvertOptions};

fn convert(plan: &v2fhir::mapping::plan::Plan, path: &Path) -> (Value, eval::Conversion) {
    let bytes = std::fs::read(path).expect("read");
    let parsed = v2fhir::v2::parse(&bytes).expect("parse");
    let c = eval::convert(plan, &parsed.messages[0], &ConvertOptions::default());
    (json!({"bundle": c.bundle, "outcome": c.outcome()}), c)
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let plan = plan();
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    let inputs = hl7_files(&dir);
    assert!(inputs.len() >= 7, "golden inputs missing");
    let mut mismatched = Vec::new();
    for input in &inputs {
        let (got, conv) = convert(&plan, input);
        assert!(
            !conv.failed(),
            "{}: conversion failed: {:?}",
            input.display(),
            conv.issues
        );
        let expected_path = input.with_extension("json");
        let text = serde_json::to_string_pretty(&got).expect("json") + "\n";
        if update {
            std::fs::write(&expected_path, &text).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} missing: run UPDATE_GOLDEN=1 cargo test --test golden",
                expected_path.display()
            )
        });
        if want != text {
            mismatched.push(expected_path.display().to_string());
        }
    }
    assert!(
        mismatched.is_empty(),
        "output differs from golden file(s) (UPDATE_GOLDEN=1 to refresh, then review the diff):\n{}",
        mismatched.join("\n")
    );
}

/// The loss report's whole segments and whole fields (not the parts of mapped fields, listed as
/// `component(s) not mapped`), as one text.
fn lost_fields(outcome: &Value) -> String {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["diagnostics"].as_str())
        .filter(|d| d.starts_with("field(s) not mapped") || d.starts_with("segment "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn resource<'v>(bundle: &'v Value, rt: &str) -> Vec<&'v Value> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == rt)
        .collect()
}

#[test]
fn replays_and_updates_keep_ids() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let plan = plan();
    let (a01, _) = convert(&plan, &dir.join("adt_a01.hl7"));
    let (again, _) = convert(&plan, &dir.join("adt_a01.hl7"));
    assert_eq!(
        a01, again,
        "converting the same message twice must give the same bundle"
    );
    let (a08, _) = convert(&plan, &dir.join("adt_a08_update.hl7"));
    let (a03, _) = convert(&plan, &dir.join("adt_a03_discharge.hl7"));
    let (a11, _) = convert(&plan, &dir.join("adt_a11_cancel_admit.hl7"));
    let pid = |b: &Value| resource(&b["bundle"], "Patient")[0]["id"].clone();
    let eid = |b: &Value| resource(&b["bundle"], "Encounter")[0]["id"].clone();
    assert_eq!(pid(&a01), pid(&a08), "an A08 updates the same Patient");
    assert_eq!(eid(&a01), eid(&a08), "an A08 updates the same Encounter");
    assert_eq!(eid(&a01), eid(&a03));
    let status = |b: &Value| resource(&b["bundle"], "Encounter")[0]["status"].clone();
    assert_eq!(status(&a01), "in-progress");
    assert_eq!(status(&a03), "finished");
    assert_eq!(status(&a11), "cancelled");
    // The A08's new address replaces the old one in the resource the PUT sends.
    assert_eq!(
        resource(&a08["bundle"], "Patient")[0]["address"][0]["line"][0],
        "456 OAK AVE"
    );
}

#[test]
fn merge_links_both_ways() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let (b, _) = convert(&plan(), &dir.join("adt_a40_merge.hl7"));
    let patients = resource(&b["bundle"], "Patient");
    assert_eq!(patients.len(), 2);
    let (survivor, merged) = if patients[0]["active"] == false {
        (patients[1], patients[0])
    } else {
        (patients[0], patients[1])
    };
    assert_eq!(survivor["link"][0]["type"], "replaces");
    assert_eq!(
        survivor["link"][0]["other"]["reference"],
        format!("Patient/{}", merged["id"].as_str().expect("id"))
    );
    assert_eq!(merged["link"][0]["type"], "replaced-by");
    assert_eq!(
        merged["link"][0]["other"]["reference"],
        format!("Patient/{}", survivor["id"].as_str().expect("id"))
    );
    // The merged patient's id is the id its own messages produced (same key: MRG-1 ≙ PID-3).
    let other = "MSH|^~\\&|ADTAPP|GENHOSP^2.16.840.1.113883.3.999^ISO|EHR|GENHOSP|20240101||ADT^A08^ADT_A01|X1|P|2.5.1\rPID|1||MRN99999^^^GENHOSP^MR||DOE^JANE\rPV1|1|I\r";
    let parsed = v2fhir::v2::parse(other.as_bytes()).expect("parse");
    let c = eval::convert(&plan(), &parsed.messages[0], &ConvertOptions::default());
    let bundle = c.bundle.expect("bundle");
    assert_eq!(resource(&bundle, "Patient")[0]["id"], merged["id"]);
}

#[test]
fn every_value_type_and_attachment() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let (b, _) = convert(&plan(), &dir.join("oru_r01_lab.hl7"));
    let obs = resource(&b["bundle"], "Observation");
    let by_code = |c: &str| {
        obs.iter()
            .find(|o| o["code"]["coding"][0]["code"] == c)
            .copied()
            .unwrap_or_else(|| panic!("no {c}"))
    };
    assert_eq!(
        by_code("2345-7")["valueQuantity"]["value"].to_string(),
        "98.10",
        "decimals keep their precision"
    );
    assert_eq!(by_code("2160-0")["valueQuantity"]["comparator"], "<");
    assert_eq!(
        by_code("5048-4")["valueRatio"]["denominator"]["value"].to_string(),
        "128"
    );
    assert_eq!(
        by_code("2947-0")["valueRange"]["high"]["value"].to_string(),
        "145"
    );
    assert_eq!(
        by_code("600-7")["valueCodeableConcept"]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    assert_eq!(
        by_code("18725-2")["valueString"],
        "Specimen slightly hemolyzed\nRecollect if needed"
    );
    assert_eq!(by_code("33882-2")["valueDateTime"], "2024-03-15");
    assert_eq!(by_code("18749-2")["valueTime"], "10:15:00");
    let reports = resource(&b["bundle"], "DiagnosticReport");
    let pdf = reports
        .iter()
        .find(|r| r["presentedForm"].is_array())
        .expect("ED as attachment");
    assert_eq!(pdf["presentedForm"][0]["contentType"], "application/pdf");
    let panel = reports
        .iter()
        .find(|r| r["result"].is_array())
        .expect("panel report");
    assert_eq!(panel["result"].as_array().expect("results").len(), 8);
    // Notes go to their own observation only.
    assert_eq!(by_code("2345-7")["note"][0]["text"], "Within normal limits");
    assert!(by_code("2160-0").get("note").is_none());
}

#[test]
fn mapping_tests_blocks_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let report = v2fhir::mapping::tests::run_all(&plan(), root);
    assert!(
        report.passed >= 30,
        "expected the tests: blocks of the message maps to run: {:?}",
        report.lines
    );
    assert_eq!(report.failed, 0, "{}", report.lines.join("\n"));
}

#[test]
fn sender_overlays_apply_only_to_their_sender() {
    let plan = plan();
    let msg = |app: &str| {
        format!(
            "MSH|^~\\&|{app}|FAC|EHR|FAC|20240101||ORU^R01^ORU_R01|C1|P|2.5.1\rPID|1|EXT-42^^^LAB^MR|MRN-7^^^HOSP^MR||DOE^JO\rOBR|1|||GLU^Glucose^LN\rOBX|1|NM|GLU^Glucose^LN||5|mmol/L|3-6||||F||from overlay\rZLB|1|BENCH 4\rOBX|2|NM|K^Potassium^LN||4|mmol/L|3-6||||F\rZLB|1|BENCH 9\r"
        )
    };
    let run = |app: &str| {
        let text = msg(app);
        let parsed = v2fhir::v2::parse(text.as_bytes()).expect("parse");
        eval::convert(&plan, &parsed.messages[0], &ConvertOptions::default())
    };
    let base = run("OTHERLAB");
    let over = run("EXAMPLELAB");
    let ids = |c: &eval::Conversion| c.resources_of("patient")[0]["identifier"].clone();
    assert_eq!(
        ids(&base).as_array().expect("ids").len(),
        2,
        "PID-2 and PID-3 without the overlay"
    );
    assert_eq!(
        ids(&over).as_array().expect("ids").len(),
        1,
        "only PID-2 with the overlay"
    );
    assert_eq!(ids(&over)[0]["value"], "EXT-42");
    assert!(c_note(&base).is_none());
    assert_eq!(c_note(&over).as_deref(), Some("from overlay"));
    // The lab's Z-segment: each OBX reads the ZLB of its own group; without the overlay the
    // segment is reported, not dropped silently.
    let notes = |c: &eval::Conversion, i: usize| {
        c.resources_of("observation")[i]["note"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(|x| x["text"].as_str())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(notes(&over, 0), ["from overlay", "BENCH 4"]);
    assert_eq!(notes(&over, 1), ["BENCH 9"]);
    assert!(notes(&base, 1).is_empty());
    assert!(
        base.issues
            .iter()
            .any(|i| i.text.contains("segment ZLB was not mapped")),
        "{:?}",
        base.issues
    );
    assert!(
        over.issues
            .iter()
            .any(|i| i.text.contains("sender overlay 'example-lab' applied"))
    );
    // Different patient ids: the overlay changes the identifier, not the id scheme.
    fn c_note(c: &eval::Conversion) -> Option<String> {
        c.resources_of("observation")[0]["note"][0]["text"]
            .as_str()
            .map(str::to_string)
    }
}

#[test]
fn when_in_datatype_maps_addresses_the_datatype() {
    // CX[Identifier]: `from: .4.2` with `when: {.4.3: [ISO]}` — both relative to the CX.
    let plan = plan();
    let system_of = |pid3: &str| {
        let text = format!(
            "MSH|^~\\&|A|B|C|D|2024||ADT^A01^ADT_A01|1|P|2.5.1\rEVN|A01\rPID|1||{pid3}||DOE^JO\rPV1|1|I\r"
        );
        let parsed = v2fhir::v2::parse(text.as_bytes()).expect("parse");
        let c = eval::convert(&plan, &parsed.messages[0], &ConvertOptions::default());
        c.resources_of("patient")[0]["identifier"][0]
            .get("system")
            .cloned()
    };
    assert_eq!(
        system_of("123^^^HOSP&1.2.3&ISO^MR"),
        Some(json!("urn:oid:1.2.3"))
    );
    assert_eq!(
        system_of("123^^^HOSP&1.2.3^MR"),
        Some(json!("urn:oid:1.2.3"))
    );
    assert_eq!(
        system_of("123^^^HOSP&1.2.3&L^MR"),
        None,
        "a local (non-ISO) universal id is not an OID"
    );
}

/// OBX-15 (producer) and OBX-18 (equipment) become an Organization among the Observation's
/// performers and its device, and OBX-25 (medical director) a Practitioner among the performers,
/// instead of loss-report lines.
#[test]
fn observation_producer_and_device() {
    let plan = plan();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/fhir-converter/ADT-A01-01.hl7");
    let (got, _) = convert(&plan, &path);
    let b = &got["bundle"];
    let by_ref = |r: &Value| Some(referenced(b, r)).filter(|v| !v.is_null());
    let obs = resource(b, "Observation");
    let o = obs.first().copied().unwrap_or(&Value::Null);
    let device = by_ref(&o["device"]).unwrap_or(Value::Null);
    assert_eq!(device["resourceType"], "Device", "{o}");
    assert_eq!(device["identifier"][0]["value"], "EI12.3");
    let performer_where = |pred: &dyn Fn(&Value) -> bool| {
        o["performer"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(by_ref)
            .find(|p| pred(p))
    };
    let performer = |value: &str| performer_where(&|p| p["identifier"][0]["value"] == value);
    let producer = performer("Org15");
    assert!(
        producer
            .is_some_and(|p| p["resourceType"] == "Organization" && p["name"] == "ID of producer"),
        "{o}"
    );
    // OBX-25: the performing organization's medical director, a performer too.
    // OBX-23's Organization carries OBX-24, its address (a rule of the nested resource).
    let lab = performer_where(&|p| p["name"] == "FairOaks Hspital").unwrap_or(Value::Null);
    assert_eq!(lab["address"][0]["line"][0], "Research Park", "{lab}");
    let director = performer("MD-25");
    assert!(
        director.is_some_and(
            |p| p["resourceType"] == "Practitioner" && p["name"][0]["family"] == "Atchinson"
        ),
        "{o}"
    );
    let lost = lost_fields(&got["outcome"]);
    assert!(
        !["OBX-15", "OBX-24", "OBX-25"]
            .iter()
            .any(|f| lost.contains(f)),
        "{lost}"
    );
    // Observation.device is 0..1: OBX-18's first repetition is the device, the second is
    // reported as not mapped, by repetition.
    assert_eq!(lost.matches("OBX-18").count(), 1, "{lost}");
    assert!(lost.contains("OBX-18[2]"), "{lost}");
}

/// The ids of the `rt` resources converted from `text`.
fn resource_ids(plan: &v2fhir::mapping::plan::Plan, text: &str, rt: &str) -> Vec<String> {
    let got = convert_text(plan, text);
    resource(&got["bundle"], rt)
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

/// A test input under the crate root, as text.
fn input(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).expect("read")
}

fn convert_text(plan: &v2fhir::mapping::plan::Plan, text: &str) -> Value {
    let parsed = v2fhir::v2::parse(text.as_bytes()).expect("parse");
    let c = eval::convert(plan, &parsed.messages[0], &ConvertOptions::default());
    json!({"bundle": c.bundle, "outcome": c.outcome()})
}

/// The golden ADT^A01 with its DG1 line followed by `extra` (segments separated by `\r`).
fn adt_with_after_dg1(extra: &str) -> String {
    input("tests/golden/adt_a01.hl7")
        .split('\r')
        .flat_map(|s| {
            if s.starts_with("DG1|") {
                vec![s.to_string(), extra.to_string()]
            } else {
                vec![s.to_string()]
            }
        })
        .collect::<Vec<_>>()
        .join("\r")
}

/// Two different segments with the same id keys (here two DG1 with the same code and diagnosis
/// type in one visit, one of them dated) become two resources with distinct ids and a warning: one
/// id twice would make one overwrite the other, and a transaction may not hold an id twice. The
/// same segment sent twice becomes one resource and is not reported as unmapped.
#[test]
fn resources_with_the_same_id_keys_stay_apart() {
    let plan = plan();
    let urls = |b: &Value| -> Vec<String> {
        b["bundle"]["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["request"]["url"].as_str().map(str::to_string))
            .collect()
    };
    let got = convert_text(
        &plan,
        &adt_with_after_dg1(
            "DG1|2||I21.9^Acute myocardial infarction, unspecified^I10||20240316|A",
        ),
    );
    let all = urls(&got);
    let conditions: Vec<&String> = all.iter().filter(|u| u.starts_with("Condition/")).collect();
    assert_eq!(conditions.len(), 2, "{all:?}");
    assert_ne!(conditions[0], conditions[1]);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        all.len(),
        "an id twice in one transaction: {all:?}"
    );
    let outcome = got["outcome"].to_string();
    assert!(
        outcome.contains("has the same condition id keys as DG1 (segment #11)"),
        "{outcome}"
    );
    // Replays give the same ids.
    assert_eq!(
        urls(&convert_text(
            &plan,
            &adt_with_after_dg1(
                "DG1|2||I21.9^Acute myocardial infarction, unspecified^I10||20240316|A"
            )
        )),
        all
    );

    let same = convert_text(
        &plan,
        &adt_with_after_dg1("DG1|1||I21.9^Acute myocardial infarction, unspecified^I10|||A"),
    );
    let all = urls(&same);
    assert_eq!(
        all.iter().filter(|u| u.starts_with("Condition/")).count(),
        1,
        "{all:?}"
    );
    let outcome = same["outcome"].to_string();
    assert!(
        outcome.contains("repeats DG1 (segment #11) exactly"),
        "{outcome}"
    );
    assert!(!outcome.contains("segment DG1 was not mapped"), "{outcome}");
}

/// A later visit's or a later order's results do not replace the earlier ones: ADT observations
/// and diagnoses are keyed by the visit (PV1-19) and, for observations, their time (OBX-14);
/// an order's observations by the order. Before, every result with the same code and set id
/// was one resource per patient, and the newest message overwrote the older results. A repeat
/// of the same visit (another control id) still updates the same resources.
#[test]
fn later_visits_and_orders_keep_earlier_results() {
    let plan = plan();
    let ids = |text: &str, rt: &str| resource_ids(&plan, text, rt);
    let adt = input("tests/golden/adt_a01.hl7");
    assert!(adt.contains("|V000123^"));
    let next_visit = adt.replace("|V000123^", "|V000124^");
    let resent = adt.replacen("|MSG", "|RESENT", 1);
    assert_ne!(resent, adt, "the control id starts with MSG");
    for rt in ["Observation", "Condition"] {
        let first = ids(&adt, rt);
        assert!(!first.is_empty(), "{rt}");
        let later = ids(&next_visit, rt);
        assert_eq!(later.len(), first.len());
        assert!(
            later.iter().all(|i| !first.contains(i)),
            "{rt}: {first:?} {later:?}"
        );
        assert_eq!(ids(&resent, rt), first, "{rt}");
    }
    assert_eq!(ids(&next_visit, "Patient"), ids(&adt, "Patient"));
    // Allergies belong to the patient, whatever their set id: a list resent in another order, or
    // with an entry removed before them, keeps their ids.
    let renumbered = adt
        .replace("AL1|1|DA|70618^", "AL1|2|DA|70618^")
        .replace("NK1|1|", "NK1|2|")
        .replace("IN1|1|", "IN1|2|");
    assert_eq!(renumbered.len(), adt.len());
    assert_ne!(renumbered, adt);
    for rt in ["AllergyIntolerance", "RelatedPerson", "Coverage"] {
        let before = ids(&adt, rt);
        assert!(!before.is_empty(), "{rt}");
        assert_eq!(ids(&renumbered, rt), before, "{rt}");
    }
    // Admitting (A) and final (F) diagnosis of the same code are two Conditions.
    let final_too = adt.replace(
        "DG1|1||I21.9^Acute myocardial infarction, unspecified^I10|||A",
        "DG1|1||I21.9^Acute myocardial infarction, unspecified^I10|||A\rDG1|2||I21.9^Acute myocardial infarction, unspecified^I10|||F",
    );
    assert_ne!(final_too, adt);
    let conditions = ids(&final_too, "Condition");
    assert_eq!(conditions.len(), 2);
    assert!(conditions.contains(&ids(&adt, "Condition")[0]));

    let orm = input("tests/corpus/fhir-converter/ORM-O01-01.hl7");
    let next_order = orm.replace(
        "ORC|NW|1101^GHHPlacer|1201^GHHFiller",
        "ORC|NW|1102^GHHPlacer|1202^GHHFiller",
    );
    assert_ne!(next_order, orm);
    let first = ids(&orm, "Observation");
    assert!(!first.is_empty());
    let later = ids(&next_order, "Observation");
    assert!(
        later.iter().all(|i| !first.contains(i)),
        "{first:?} {later:?}"
    );
}

/// Keys under a base resource that a message lacks (here the vaccination's OBX without its RXA)
/// are scoped to the message: before, they fell back to an empty base and two patients' OBX with
/// the same code and set id got the same id.
#[test]
fn keys_without_their_base_stay_within_the_message() {
    let plan = plan();
    let vxu = input("tests/golden/vxu_v04.hl7");
    let no_rxa: String = vxu
        .split('\r')
        .filter(|s| !s.starts_with("RXA|") && !s.starts_with("RXR|"))
        .collect::<Vec<_>>()
        .join("\r");
    let other_patient = no_rxa
        .replace("MRN5555^", "MRN6666^")
        .replace("|VXU0001|", "|VXU0002|");
    assert_ne!(other_patient, no_rxa);
    let ids = |text: &str| resource_ids(&plan, text, "Observation");
    let a = ids(&no_rxa);
    assert_eq!(a.len(), 4, "{a:?}");
    let b = ids(&other_patient);
    assert!(b.iter().all(|i| !a.contains(i)), "{a:?} {b:?}");
    assert_eq!(ids(&no_rxa), a, "stable on replay");
}

/// The loss report leaves out Set IDs (field 1 of PID, PV1, OBX, NTE, …: a counter within the
/// message, which the IG maps nowhere) and still lists real data no rule took.
#[test]
fn set_ids_are_not_reported_as_lost() {
    let plan = plan();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/adt_a01.hl7");
    let (got, _) = convert(&plan, &path);
    let lost: Vec<String> = got["outcome"]["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["diagnostics"].as_str())
        .filter(|d| d.starts_with("field(s) not mapped: "))
        .map(str::to_string)
        .collect();
    assert!(lost.iter().any(|l| l.contains("IN1-9")), "{lost:?}");
    for set_id in [
        "PID-1", "PV1-1", "OBX-1", "NK1-1", "DG1-1", "AL1-1", "PR1-1", "IN1-1",
    ] {
        assert!(
            !lost.iter().any(|l| l
                .split(": ")
                .nth(1)
                .is_some_and(|f| f.split(", ").any(|x| x == set_id))),
            "{set_id} reported: {lost:?}"
        );
    }
}

/// A field whose rules read only its first repetition is reported by repetition for the others
/// (`DG1-6[2]`: the second diagnosis type), not passed as consumed; a field every repetition of
/// which is read (`PID-3[*]`) is not reported.
#[test]
fn repetitions_no_rule_read_are_reported() {
    let plan = plan();
    let text = golden_adt_with("DG1", &[(6, "A~F")]);
    let text = text.replace(
        "MRN12345^^^GENHOSP^MR~",
        "MRN12345^^^GENHOSP^MR~X1^^^OTHER^PI~",
    );
    let got = convert_text(&plan, &text);
    let lost = got["outcome"].to_string();
    assert!(lost.contains("field(s) not mapped: DG1-6[2]"), "{lost}");
    assert!(
        !lost.contains("DG1-6,") && !lost.contains("DG1-6\""),
        "{lost}"
    );
    assert!(!lost.contains("PID-3"), "{lost}");
    let unchanged = convert_text(&plan, &input("tests/golden/adt_a01.hl7"))["outcome"].to_string();
    assert!(!unchanged.contains("DG1-6"), "{unchanged}");
}

/// `ORC-12 | OBR-16`: when ORC-12 is taken, OBR-16 is consumed too if it names the same provider,
/// and still reported when it names another one.
#[test]
fn an_alternative_with_the_same_value_is_not_reported_lost() {
    let plan = plan();
    let oru = input("tests/golden/oru_r01_lab.hl7");
    let lost = |text: &str| convert_text(&plan, text)["outcome"].to_string();
    assert!(!lost(&oru).contains("OBR-16"));
    // ORC-12 comes first, OBR-16 second (and last).
    let at = oru.rfind("9999^ORDER^OLIVER").expect("OBR-16");
    let other = format!(
        "{}1111^OTHER^OSCAR{}",
        &oru[..at],
        &oru[at + "9999^ORDER^OLIVER".len()..]
    );
    assert_ne!(other, oru);
    assert!(lost(&other).contains("OBR-16"), "{}", lost(&other));
}

/// A value that every rule reading it passed over (their conditions rejected it) is in the loss
/// report: units on a coded result, which `valueCodeableConcept` cannot carry, used to be marked
/// consumed by the quantity rules that read them before their condition failed. A rule that
/// passes over a value by design says `rejected: consumed` (PID-30 beside PID-29's date).
#[test]
fn a_value_every_condition_rejected_is_reported_unless_the_rule_says_consumed() {
    let plan = plan();
    let lost = |text: &str| -> Vec<String> {
        convert_text(&plan, text)["outcome"]["issue"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["diagnostics"].as_str())
            .filter_map(|d| d.strip_prefix("field(s) not mapped: "))
            .flat_map(|l| l.split(", ").map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    // OBX-6 on a numeric result is the quantity's unit: consumed.
    let numeric = golden_adt_with("OBX", &[(2, "NM"), (5, "72"), (6, "/min^^UCUM")]);
    assert!(
        !lost(&numeric).contains(&"OBX-6".to_string()),
        "{:?}",
        lost(&numeric)
    );
    // The same units on a coded result: no rule can write them, so they are reported.
    let coded = golden_adt_with(
        "OBX",
        &[
            (2, "CWE"),
            (5, "27268008^Salmonella^SCT"),
            (6, "/min^^UCUM"),
        ],
    );
    let coded_lost = lost(&coded);
    assert!(coded_lost.contains(&"OBX-6".to_string()), "{coded_lost:?}");
    // PID-30 with PID-29: the date says it (deceasedDateTime), the indicator is a deliberate
    // pass-over; without PID-29 the indicator is mapped. Neither is reported.
    for fields in [
        &[(29, "20240101"), (30, "Y")][..],
        &[(29, ""), (30, "Y")][..],
    ] {
        let text = golden_adt_with("PID", fields);
        let l = lost(&text);
        assert!(!l.contains(&"PID-30".to_string()), "{fields:?}: {l:?}");
        let patient = convert_text(&plan, &text)["bundle"]["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"].clone())
            .find(|r| r["resourceType"] == "Patient")
            .unwrap_or(Value::Null);
        assert!(
            patient.get("deceasedDateTime").is_some() ^ patient.get("deceasedBoolean").is_some(),
            "{patient}"
        );
    }
}

/// A provider (or other nested resource) built twice in one message with the same id is one
/// resource: what the first build lacked is added from the later one, and a value that differs
/// keeps the first and is reported, never silently dropped.
#[test]
fn a_nested_resource_built_twice_is_merged_or_reported() {
    let plan = plan();
    let adt = input("tests/golden/adt_a01.hl7");
    let obx =
        "OBX|1|NM|8867-4^Heart rate^LN||72|/min^per minute^UCUM|60-100|N|||F|||20240315091500-0500";
    assert!(adt.contains(obx));
    let attending = "|1234^ATTEND^ALICE^^^DR^^^NPI|";
    assert!(adt.contains(attending));
    let practitioners = |text: &str| -> (Vec<Value>, String) {
        let got = convert_text(&plan, text);
        let p = resource(&got["bundle"], "Practitioner")
            .into_iter()
            .filter(|p| p["identifier"][0]["value"] == "1234")
            .cloned()
            .collect();
        (p, got["outcome"].to_string())
    };
    // PV1-7 sends the number alone; OBX-16 names the same provider: one Practitioner, named.
    let gap = adt
        .replace(attending, "|1234^^^^^^^^NPI|")
        .replace(obx, &format!("{obx}||1234^ATTEND^ALICE^^^DR^^^NPI"));
    let (p, outcome) = practitioners(&gap);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["name"][0]["family"], "ATTEND", "{p:?}");
    assert!(!outcome.contains("built again"), "{outcome}");
    // OBX-16 gives the same number another name: the first is kept and the conflict reported.
    let conflict = adt.replace(obx, &format!("{obx}||1234^OTHER^OLGA^^^DR^^^NPI"));
    let (p, outcome) = practitioners(&conflict);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0]["name"][0]["family"], "ATTEND", "{p:?}");
    assert!(
        outcome.contains("is built again with different name (rule performer)"),
        "{outcome}"
    );
    assert!(
        !outcome.contains("OTHER") && !outcome.contains("OLGA"),
        "no values: {outcome}"
    );
}

/// Results without order numbers or a specimen identifier do not overwrite the patient's earlier
/// ones: a report falls back to its observation time (OBR-7), a specimen without SPM-2 is unique
/// to its message. Before, such a patient's next panel of the same code, and every specimen #1,
/// replaced the previous one.
#[test]
fn results_without_numbers_keep_earlier_results() {
    let plan = plan();
    let ids = |text: &str, rt: &str| resource_ids(&plan, text, rt);
    let oru = input("tests/golden/oru_r01_lab.hl7")
        .replace("|ORD777^EHR|FIL888^LIS|", "|||")
        .replace("|SPC123&EHR&2.16.840.1.113883.3.999&ISO|", "||");
    assert!(!oru.contains("FIL888") && !oru.contains("SPC123"));
    let next = oru.replace("|LAB0001|", "|LAB0002|").replace(
        "|||20240315101500-0500|||||||||9999",
        "|||20240316101500-0500|||||||||9999",
    );
    assert_ne!(next, oru);
    for rt in ["DiagnosticReport", "Specimen", "Observation"] {
        let first = ids(&oru, rt);
        assert!(!first.is_empty(), "{rt}");
        let later = ids(&next, rt);
        assert!(
            later.iter().all(|i| !first.contains(i)),
            "{rt}: {first:?} {later:?}"
        );
        assert_eq!(ids(&oru, rt), first, "{rt}: stable on replay");
    }
}

/// The golden ADT^A01 with fields of its (first) `seg` segment replaced (field numbers as in HL7).
fn golden_adt_with(seg: &str, fields: &[(usize, &str)]) -> String {
    input("tests/golden/adt_a01.hl7")
        .split('\r')
        .map(|s| {
            if !s.starts_with(&format!("{seg}|")) {
                return s.to_string();
            }
            let mut f: Vec<String> = s.split('|').map(str::to_string).collect();
            for &(n, v) in fields {
                if f.len() <= n {
                    f.resize(n + 1, String::new());
                }
                f[n] = v.to_string();
            }
            f.join("|")
        })
        .collect::<Vec<_>>()
        .join("\r")
}

/// PID-28 (nationality), PID-35/36 (species, breed) and PID-39 (tribal citizenship) become the
/// IG's Patient extensions. R4's patient-animal requires a species, so a breed without one stays
/// in the loss report instead of making an invalid extension.
#[test]
fn nationality_animal_and_tribal_citizenship_extensions() {
    let plan = plan();
    let with_pid = |fields: &[(usize, &str)]| golden_adt_with("PID", fields);
    let patient_ext = |text: &str| -> (Vec<Value>, String) {
        let got = convert_text(&plan, text);
        let p = resource(&got["bundle"], "Patient");
        let ext = p
            .first()
            .and_then(|p| p["extension"].as_array().cloned())
            .unwrap_or_default();
        (ext, got["outcome"].to_string())
    };
    let by_url = |ext: &[Value], url: &str| -> Vec<Value> {
        ext.iter()
            .filter(|e| e["url"] == format!("http://hl7.org/fhir/StructureDefinition/{url}"))
            .cloned()
            .collect()
    };
    let (ext, _) = patient_ext(&with_pid(&[
        (28, "BT^Bhutan^ISO3166_1"),
        (35, "125097000^Goat^SCT"),
        (36, "4880003^Beagle^SCT"),
        (39, "CA^Canada^ISO3166_1~US^United States^ISO3166_1"),
    ]));
    let nationality = by_url(&ext, "patient-nationality");
    assert_eq!(nationality.len(), 1, "{ext:?}");
    assert_eq!(nationality[0]["extension"][0]["url"], "code");
    assert_eq!(
        nationality[0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"],
        "BT"
    );
    let animal = by_url(&ext, "patient-animal");
    assert_eq!(animal.len(), 1, "{ext:?}");
    assert_eq!(animal[0]["extension"][0]["url"], "species");
    assert_eq!(
        animal[0]["extension"][0]["valueCodeableConcept"]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    assert_eq!(animal[0]["extension"][1]["url"], "breed");
    assert_eq!(
        animal[0]["extension"][1]["valueCodeableConcept"]["coding"][0]["code"],
        "4880003"
    );
    let tribal: Vec<String> = by_url(&ext, "patient-citizenship")
        .iter()
        .filter_map(|e| {
            e["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(tribal, ["CA", "US"], "{ext:?}");
    // A breed alone: no animal extension, and PID-36 is reported as not mapped.
    let (ext, outcome) = patient_ext(&with_pid(&[(36, "4880003^Beagle^SCT")]));
    assert!(by_url(&ext, "patient-animal").is_empty(), "{ext:?}");
    assert!(outcome.contains("PID-36"), "{outcome}");
}

/// DG1-21 `D` (delete) withdraws the diagnosis: verificationStatus `entered-in-error` instead of
/// the DG1-6 type's status (IG DG1[Condition]). `A` (add) changes nothing: the diagnosis keeps
/// its DG1-6 status (the rule looked at the field, so it is not reported as unmapped).
#[test]
fn a_deleted_diagnosis_is_entered_in_error() {
    let plan = plan();
    let with_action = |code: &str| golden_adt_with("DG1", &[(21, code)]);
    let status = |text: &str| -> (Value, String) {
        let got = convert_text(&plan, text);
        let c = resource(&got["bundle"], "Condition");
        (
            c.first()
                .map(|c| c["verificationStatus"].clone())
                .unwrap_or(Value::Null),
            got["outcome"].to_string(),
        )
    };
    let (deleted, outcome) = status(&with_action("D"));
    assert_eq!(
        deleted["coding"],
        json!([{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]),
        "{deleted}"
    );
    assert!(!outcome.contains("DG1-21"), "{outcome}");
    let (added, _) = status(&with_action("A"));
    let (plain, _) = status(&with_action(""));
    assert_eq!(added, plain);
    assert_ne!(added["coding"][0]["code"], "entered-in-error", "{added}");
}

/// The resource of `bundle` a Reference `r` points at (`Type/id`); `Null` when none.
fn referenced(bundle: &Value, r: &Value) -> Value {
    let r = r["reference"].as_str().unwrap_or("");
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .find(|x| {
            format!(
                "{}/{}",
                x["resourceType"].as_str().unwrap_or(""),
                x["id"].as_str().unwrap_or("")
            ) == r
        })
        .cloned()
        .unwrap_or(Value::Null)
}

/// A segment `id` with `fields` (number, value) set and the rest empty.
fn segment(id: &str, fields: &[(usize, &str)]) -> String {
    let n = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut f = vec![""; n + 1];
    f[0] = id;
    for (i, v) in fields {
        f[*i] = v;
    }
    f.join("|")
}

/// v2.7+ participations (PRT) become PractitionerRoles pointing at a Practitioner, placed by
/// where the PRT stands and the role it names (HL7 table 0443, IG message maps): PP after PID is
/// the patient's general practitioner; PRI after OBR the report's results interpreter, TN its
/// performer and OP the order's requester; any PRT with a person after an OBX an Observation
/// performer; OP and AP in a VXU order the Immunization's performers with that function.
#[test]
fn participations_become_practitioner_roles() {
    let plan = plan();
    let prt = |role: &str, person: &str, more: &[(usize, &str)]| {
        let mut f = vec![(1, "1"), (2, "AD"), (4, role), (5, person)];
        f.extend_from_slice(more);
        segment("PRT", &f)
    };
    let oru = [
        "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240315143000-0500||ORU^R01^ORU_R01|PRT1|P|2.8".to_string(),
        "PID|1||MRN1^^^HOSP^MR||DOE^JANE||19800102|F".into(),
        prt("PP^Primary Care Provider^HL70443", "GP1^WELBY^MARCUS^^^DR^^^HOSP", &[]),
        "PV1|1|O|LAB^^^HOSP||||||||||||||||V1^^^HOSP^VN".into(),
        prt(
            "AT^Attending Provider^HL70443",
            "ATT1^CASEY^BEN^^^DR^^^HOSP",
            &[(11, "20240315080000-0500")],
        ),
        "ORC|RE|ORD1^EHR|FIL1^LIS||CM".into(),
        "OBR|1|ORD1^EHR|FIL1^LIS|24323-8^CMP^LN|||20240315101500-0500||||||||||||||20240315142500-0500|||F".into(),
        prt(
            "PRI^Principal Result Interpreter^HL70443",
            "PATH1^HOUSE^GREG^^^DR^^^HOSP",
            &[(15, "^WPN^PH^^1^555^1234567")],
        ),
        prt("OP^Order Provider^HL70443", "ORDP^ORDER^OLIVER^^^DR^^^HOSP", &[]),
        prt("TN^Technician^HL70443", "TECH1^TECH^TOM^^^^^^HOSP", &[]),
        "OBX|1|NM|2345-7^Glucose^LN||98|mg/dL^mg/dL^UCUM|70-99|N|||F|||20240315101500-0500".into(),
        prt(
            "RO^Responsible Observer^HL70443",
            "OBS1^WATSON^JOHN^^^DR^^^HOSP",
            &[(8, "Main Lab"), (11, "20240315100000-0500"), (12, "20240315110000-0500")],
        ),
    ]
    .join("\r");
    let got = convert_text(&plan, &oru);
    let b = &got["bundle"];
    let outcome = got["outcome"].to_string();
    assert!(!outcome.contains("\"error\""), "{outcome}");
    let by_ref = |r: &Value| referenced(b, r);
    // A PractitionerRole: its role code and its practitioner's family name.
    let role = |r: &Value| -> (String, String) {
        let pr = by_ref(r);
        assert_eq!(pr["resourceType"], "PractitionerRole", "{r}");
        let who = by_ref(&pr["practitioner"]);
        (
            pr["code"][0]["coding"][0]["code"]
                .as_str()
                .unwrap_or("")
                .into(),
            who["name"][0]["family"].as_str().unwrap_or("").into(),
        )
    };
    let patient = resource(b, "Patient")[0];
    assert_eq!(
        role(&patient["generalPractitioner"][0]),
        ("PP".into(), "WELBY".into())
    );
    let report = resource(b, "DiagnosticReport")[0];
    assert_eq!(
        role(&report["resultsInterpreter"][0]),
        ("PRI".into(), "HOUSE".into())
    );
    assert_eq!(
        by_ref(&report["resultsInterpreter"][0])["telecom"][0]["value"],
        "+1 (555) 1234567"
    );
    assert_eq!(role(&report["performer"][0]), ("TN".into(), "TECH".into()));
    let order = resource(b, "ServiceRequest")[0];
    assert_eq!(role(&order["requester"]), ("OP".into(), "ORDER".into()));
    // The PRT of the VISIT group: a participant of the visit, typed with its role.
    let encounter = resource(b, "Encounter")[0];
    let visit_roles: Vec<&Value> = encounter["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["individual"]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("PractitionerRole/"))
        })
        .collect();
    assert_eq!(visit_roles.len(), 1, "{encounter}");
    assert_eq!(visit_roles[0]["type"][0]["coding"][0]["code"], "AT");
    assert_eq!(
        role(&visit_roles[0]["individual"]),
        ("AT".into(), "CASEY".into())
    );
    assert_eq!(
        visit_roles[0]["period"]["start"],
        "2024-03-15T08:00:00-05:00"
    );
    // The OBX's own PRT only: the order's participants are not the observation's performers.
    let obs = resource(b, "Observation")[0];
    let roles: Vec<Value> = obs["performer"]
        .as_array()
        .into_iter()
        .flatten()
        .map(by_ref)
        .filter(|p| p["resourceType"] == "PractitionerRole")
        .collect();
    assert_eq!(roles.len(), 1, "{obs}");
    assert_eq!(roles[0]["code"][0]["coding"][0]["code"], "RO");
    assert_eq!(by_ref(&roles[0]["organization"])["name"], "Main Lab");
    assert_eq!(roles[0]["period"]["start"], "2024-03-15T10:00:00-05:00");
    for lost in ["PRT-4", "PRT-5", "PRT-8", "PRT-11", "PRT-15"] {
        assert!(!outcome.contains(lost), "{lost} reported lost: {outcome}");
    }

    // VXU: the administering provider as a PRT of the order.
    let vxu = input("tests/golden/vxu_v04.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let rxa = vxu
        .split('\r')
        .find(|s| s.starts_with("RXA|"))
        .unwrap_or_default()
        .to_string();
    let with_prt = vxu.replacen(
        &rxa,
        &format!(
            "{rxa}\r{}",
            prt(
                "AP^Administering Provider^HL70443",
                "NURSE1^NIGHTINGALE^FLORENCE^^^^^^HOSP",
                &[]
            )
        ),
        1,
    );
    let got = convert_text(&plan, &with_prt);
    let vb = &got["bundle"];
    let by_ref = |r: &Value| referenced(vb, r);
    let imm = resource(vb, "Immunization")[0];
    let ap = imm["performer"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["actor"]["reference"]
                .as_str()
                .unwrap_or("")
                .starts_with("PractitionerRole/")
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(ap["function"]["coding"][0]["code"], "AP", "{imm}");
    let pr = by_ref(&ap["actor"]);
    assert_eq!(
        by_ref(&pr["practitioner"])["name"][0]["family"],
        "NIGHTINGALE"
    );

    // ADT: PV1 stands at the top of the message, and a PRT below an OBX (even with a visit
    // role, AT) is the observation's participant, not the visit's.
    let adt = input("tests/golden/adt_a01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let obx = adt
        .split('\r')
        .find(|s| s.starts_with("OBX|"))
        .unwrap_or_default()
        .to_string();
    let adt = adt.replacen(
        &obx,
        &format!(
            "{obx}\r{}",
            prt(
                "AT^Attending Provider^HL70443",
                "ATT1^CASEY^BEN^^^DR^^^HOSP",
                &[]
            )
        ),
        1,
    );
    let got = convert_text(&plan, &adt);
    let ab = &got["bundle"];
    let encounter = resource(ab, "Encounter")[0];
    assert!(
        !encounter["participant"]
            .to_string()
            .contains("PractitionerRole/"),
        "{encounter}"
    );
    let observed = resource(ab, "Observation")
        .iter()
        .any(|o| o["performer"].to_string().contains("PractitionerRole/"));
    assert!(observed, "the OBX's PRT is an Observation performer");
}

/// ROL segments (IG ADT_A01): a PP (primary care provider, table 0443) is a PractitionerRole among
/// `Patient.generalPractitioner`; any other role one of the visit's participants, the role as
/// its type. The same PP sent again after PV1 is one entry, and not a visit participant. A ROL in
/// the PROCEDURE group (which the IG maps nowhere) stays in the loss report.
#[test]
fn roles_go_to_the_patient_or_the_visit_by_their_role() {
    let plan = plan();
    let pp = segment(
        "ROL",
        &[
            (1, "R1"),
            (2, "AD"),
            (3, "PP^Primary Care Provider^HL70443"),
            (4, "GP7^WELBY^MARCUS^^^DR^^^HOSP"),
            (5, "20240101"),
            (12, "^WPN^PH^^^555^7654321"),
            (14, "Family Practice Group"),
        ],
    );
    let at = segment(
        "ROL",
        &[
            (2, "AD"),
            (3, "AT^Attending^HL70443"),
            (4, "DOC9^HOUSE^GREG^^^DR^^^HOSP"),
            (5, "20240315093000-0500"),
        ],
    );
    let surgeon = segment(
        "ROL",
        &[(2, "AD"), (3, "SURG^Surgeon"), (4, "CUT1^SHEPHERD^DEREK")],
    );
    let text = input("tests/golden/adt_a01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r")
        .split('\r')
        .flat_map(|s| {
            let mut out = vec![s.to_string()];
            if s.starts_with("PD1|") {
                out.push(pp.clone());
            }
            if s.starts_with("PV2|") {
                out.push(at.clone());
                out.push(pp.clone());
            }
            if s.starts_with("PR1|") {
                out.push(surgeon.clone());
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\r");
    let got = convert_text(&plan, &text);
    let b = &got["bundle"];
    let outcome = got["outcome"].to_string();
    assert!(!outcome.contains("\"error\""), "{outcome}");
    let by_ref = |r: &Value| referenced(b, r);
    let patient = resource(b, "Patient")[0];
    let roles: Vec<Value> = patient["generalPractitioner"]
        .as_array()
        .into_iter()
        .flatten()
        .map(by_ref)
        .filter(|r| r["resourceType"] == "PractitionerRole")
        .collect();
    assert_eq!(roles.len(), 1, "{patient}");
    let gp = &roles[0];
    assert_eq!(gp["code"][0]["coding"][0]["code"], "PP");
    assert_eq!(gp["identifier"][0]["value"], "R1");
    assert_eq!(gp["period"]["start"], "2024-01-01");
    assert_eq!(gp["telecom"][0]["value"], "(555) 7654321");
    assert_eq!(by_ref(&gp["organization"])["name"], "Family Practice Group");
    assert_eq!(by_ref(&gp["practitioner"])["name"][0]["family"], "WELBY");
    let encounter = resource(b, "Encounter")[0];
    let visit_roles: Vec<&Value> = encounter["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["individual"]["reference"]
                .as_str()
                .unwrap_or("")
                .starts_with("PractitionerRole/")
        })
        .collect();
    assert_eq!(visit_roles.len(), 1, "{encounter}");
    assert_eq!(visit_roles[0]["type"][0]["coding"][0]["code"], "AT");
    assert_eq!(
        visit_roles[0]["period"]["start"],
        "2024-03-15T09:30:00-05:00"
    );
    let attending = by_ref(&visit_roles[0]["individual"]);
    assert_eq!(
        by_ref(&attending["practitioner"])["name"][0]["family"],
        "HOUSE"
    );
    assert!(
        !b.to_string().contains("SHEPHERD"),
        "the PROCEDURE ROL is mapped nowhere"
    );
    assert!(outcome.contains("segment ROL was not mapped"), "{outcome}");
    for f in ["ROL-3", "ROL-4", "ROL-5", "ROL-12", "ROL-14"] {
        assert!(
            !outcome.contains(&format!("{f},")) && !outcome.contains(&format!("{f}\"")),
            "{f}: {outcome}"
        );
    }
}

/// PID-21 (mother's identifier) is the patient's mother: a RelatedPerson with that identifier and
/// the relationship MTH, pointing at the patient; without PID-21, none.
#[test]
fn the_mothers_identifier_makes_the_mother_a_related_person() {
    let plan = plan();
    let mothers = |text: &str| -> Vec<Value> {
        let got = convert_text(&plan, text);
        resource(&got["bundle"], "RelatedPerson")
            .into_iter()
            .filter(|r| r["relationship"][0]["coding"][0]["code"] == "MTH")
            .cloned()
            .collect()
    };
    let with = golden_adt_with("PID", &[(21, "M-778^^^GENHOSP^MR")]);
    let found = mothers(&with);
    assert_eq!(found.len(), 1, "{found:?}");
    let m = &found[0];
    assert_eq!(m["identifier"][0]["value"], "M-778");
    assert_eq!(m["identifier"][0]["type"]["coding"][0]["code"], "MR");
    assert_eq!(
        m["relationship"][0]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
    );
    let got = convert_text(&plan, &with);
    let patient = resource(&got["bundle"], "Patient")[0];
    assert_eq!(
        m["patient"]["reference"],
        format!("Patient/{}", patient["id"].as_str().unwrap_or(""))
    );
    assert!(!got["outcome"].to_string().contains("PID-21"));
    assert!(mothers(&golden_adt_with("PID", &[(21, "")])).is_empty());
}

/// EVN-7 (event facility) is the EVN Provenance's location, a Location from the HD (IG EVN[Provenance],
/// HD[Location]): the namespace id as its name, an ISO universal id as an identifier, a site.
#[test]
fn the_event_facility_is_the_provenance_location() {
    let plan = plan();
    let location = |evn7: &str| -> (Value, String) {
        // EVN-5 too: an event Provenance needs an agent (R4).
        let text = golden_adt_with("EVN", &[(5, "OP1^ENTER^ERIC"), (7, evn7)]);
        let got = convert_text(&plan, &text);
        let b = &got["bundle"];
        let reference = resource(b, "Provenance")
            .into_iter()
            .find_map(|p| p["location"]["reference"].as_str().map(str::to_string))
            .unwrap_or_default();
        let loc = resource(b, "Location")
            .into_iter()
            .find(|l| format!("Location/{}", l["id"].as_str().unwrap_or("")) == reference)
            .cloned()
            .unwrap_or(Value::Null);
        (loc, got["outcome"].to_string())
    };
    let (loc, outcome) = location("NORTH CAMPUS^1.2.840.1234.5^ISO");
    assert_eq!(loc["name"], "NORTH CAMPUS", "{loc}");
    assert_eq!(loc["identifier"][0]["value"], "urn:oid:1.2.840.1234.5");
    assert_eq!(loc["physicalType"]["coding"][0]["code"], "si");
    assert!(!outcome.contains("EVN-7"), "{outcome}");
    let (loc, _) = location("NORTH CAMPUS");
    assert_eq!(loc["name"], "NORTH CAMPUS", "{loc}");
    assert!(
        loc.get("identifier").is_none() && loc.get("physicalType").is_none(),
        "{loc}"
    );
}

/// The first SFT names the sending software (IG SFT[MessageHeader]): SFT-3 is
/// `MessageHeader.source.software`, SFT-2 its version; the rest of it (vendor, binary id, install
/// date) and any further SFT are Devices (IG SFT[Device], see
/// `sending_software_is_a_provenance_entity`), no longer in the loss report.
#[test]
fn the_sending_software_is_the_message_headers_source() {
    let plan = plan();
    let adt = input("tests/golden/adt_a01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let msh_end = adt.find('\r').unwrap_or(adt.len());
    let text = format!(
        "{}\rSFT|Acme Health^L|4.2.1|AcmeADT|B-77||20240101\rSFT|Other Vendor|9.9|Router{}",
        &adt[..msh_end],
        &adt[msh_end..]
    );
    let got = convert_text(&plan, &text);
    let source = &resource(&got["bundle"], "MessageHeader")[0]["source"];
    assert_eq!(source["software"], "AcmeADT", "{source}");
    assert_eq!(source["version"], "4.2.1", "{source}");
    let outcome = lost_fields(&got["outcome"]);
    assert!(!outcome.contains("SFT"), "{outcome}");
    let devices = resource(&got["bundle"], "Device");
    assert_eq!(devices.len(), 2, "one Device per SFT");
    assert_eq!(devices[0]["manufacturer"], "Acme Health");
    assert_eq!(devices[0]["modelNumber"], "B-77");
}

/// An order that sends no ORC-5 takes its status from the order control code (ORC-1) through the
/// IG's concept map OrderControlCode[ServiceRequest.status]; a code that map gives no status (XR,
/// SC, RE…) still leaves the status R4 requires: `unknown`, silently (before, the ServiceRequest
/// failed validation and was not emitted); a code outside table 0119 gives `unknown` too, with a
/// warning naming it.
#[test]
fn an_order_control_code_without_a_status_gives_unknown() {
    let plan = plan();
    let order = |control: &str| {
        let text = [
            "MSH|^~\\&|OE|HOSP|RIS|HOSP|20240401080000||ORM^O01|ORM0001|P|2.3",
            "PID|1||MRN5^^^HOSP^MR||ROE^RITA||19700101|F",
            &format!("ORC|{control}|PL-9^OE|FL-9^RIS"),
            "OBR|1|PL-9^OE|FL-9^RIS|73560^KNEE RIGHT AP LAT^C4|||20240401073000",
        ]
        .join("\r");
        let got = convert_text(&plan, &text);
        let orders = resource(&got["bundle"], "ServiceRequest");
        assert_eq!(orders.len(), 1, "{control}: {}", got["outcome"]);
        let outcome = got["outcome"].to_string();
        assert!(!outcome.contains("\"error\""), "{outcome}");
        (orders[0]["status"].clone(), outcome)
    };
    for (control, status) in [
        ("NW", "active"),
        ("CA", "active"),
        ("HD", "active"),
        ("HR", "on-hold"),
        ("OC", "revoked"),
        ("FU", "completed"),
        ("XR", "unknown"),
        ("SC", "unknown"),
        ("RE", "unknown"),
    ] {
        let (got, outcome) = order(control);
        assert_eq!(got, status, "ORC-1 {control}");
        assert!(
            !outcome.contains("has no entry in vocabulary OrderControlStatus"),
            "{control}: {outcome}"
        );
    }
    let (got, outcome) = order("ZZ");
    assert_eq!(got, "unknown");
    assert!(
        outcome.contains("'ZZ' has no entry in vocabulary OrderControlStatus"),
        "{outcome}"
    );
}

/// An OMG^O19 knee X-ray order timed by `tq1` (a TQ1 segment): its ServiceRequest (null when
/// none was emitted) and the conversion's outcome.
fn timed_order(plan: &v2fhir::mapping::plan::Plan, tq1: &str) -> (Value, Value) {
    let text = [
        "MSH|^~\\&|OE|HOSP|RIS|HOSP|20240401080000||OMG^O19^OMG_O19|OMG0002|P|2.5.1",
        "PID|1||MRN5^^^HOSP^MR||ROE^RITA||19700101|F",
        "ORC|NW|PL-10^OE",
        tq1,
        "OBR|1|PL-10^OE||73560^KNEE RIGHT AP LAT^C4",
    ]
    .join("\r");
    let got = convert_text(plan, &text);
    let sr = resource(&got["bundle"], "ServiceRequest")
        .first()
        .map(|r| (*r).clone())
        .unwrap_or(Value::Null);
    (sr, got["outcome"].clone())
}

/// A TQ1 repeat pattern makes the order's time a Timing (IG TQ1[ServiceRequest]): the pattern's
/// code (RPT-1, a CWE in subcomponents) and, with no start or end sent, the service duration
/// (TQ1-6) as `boundsDuration` in UCUM. A unit of time that does not map writes no duration
/// (R4 drt-1 wants a code) and is reported.
#[test]
fn a_repeat_pattern_makes_the_order_time_a_timing() {
    let plan = plan();
    let order = |tq1_6: &str| {
        timed_order(
            &plan,
            &format!("TQ1|1||TID&three times a day&HL70335|||{tq1_6}"),
        )
    };
    let (sr, outcome) = order("3^D&day&ISO");
    let timing = &sr["occurrenceTiming"];
    assert!(sr.get("occurrenceDateTime").is_none(), "{sr}");
    assert_eq!(timing["code"]["coding"][0]["code"], "TID", "{sr}");
    assert_eq!(timing["code"]["coding"][0]["display"], "three times a day");
    assert_eq!(
        timing["code"]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0335"
    );
    assert_eq!(
        timing["repeat"]["boundsDuration"],
        json!({"value": 3, "code": "d", "unit": "d", "system": "http://unitsofmeasure.org"})
    );
    assert!(!lost_fields(&outcome).contains("TQ1-6"), "{outcome}");
    let (sr, outcome) = order("3^fortnights");
    let outcome = outcome.to_string();
    assert!(
        sr["occurrenceTiming"]["repeat"]
            .get("boundsDuration")
            .is_none(),
        "{sr}"
    );
    assert!(
        outcome.contains("'fortnights' has no entry in vocabulary UnitsOfTime"),
        "{outcome}"
    );
}

/// MDM: the document header (TXA) is a DocumentReference (IG TXA[DocumentReference]) and the
/// OBX segments its body (IG OBX[DocumentReference]): text lines, whether repetitions of one
/// OBX-5 or OBX segments of their own (an empty one is an empty line), are one text attachment.
#[test]
fn a_transcribed_document_is_a_document_reference() {
    use base64::Engine;
    let plan = plan();
    let got = convert_text(&plan, &input("tests/golden/mdm_t02_document.hl7"));
    let b = &got["bundle"];
    let docs = resource(b, "DocumentReference");
    assert_eq!(docs.len(), 1, "{b}");
    let d = docs[0];
    // TXA-19 OB (obsolete): replaced by another document.
    assert_eq!(d["status"], "superseded");
    // TXA-17 AU (authenticated).
    assert_eq!(d["docStatus"], "final");
    assert_eq!(d["type"]["coding"][0]["code"], "DS");
    assert_eq!(d["masterIdentifier"]["value"], "DOC-42");
    assert_eq!(d["masterIdentifier"]["system"], "urn:oid:1.2.3.4");
    assert_eq!(d["identifier"][0]["value"], "dischg_42.txt");
    assert_eq!(d["securityLabel"][0]["coding"][0]["code"], "R");
    assert_eq!(
        d["securityLabel"][0]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0272"
    );
    assert_eq!(d["description"], "Discharge summary");
    assert_eq!(d["date"], "2026-11-30T10:00:00+01:00");
    assert_eq!(referenced(b, &d["author"][0])["name"][0]["family"], "Smith");
    assert_eq!(
        referenced(b, &d["authenticator"])["name"][0]["family"],
        "Jones"
    );
    assert_eq!(referenced(b, &d["subject"])["resourceType"], "Patient");
    assert_eq!(
        referenced(b, &d["context"]["encounter"][0])["resourceType"],
        "Encounter"
    );
    let content = d["content"].as_array().cloned().unwrap_or_default();
    assert_eq!(content.len(), 1, "{content:?}");
    let a = &content[0]["attachment"];
    assert_eq!(a["contentType"], "text/plain; charset=utf-8");
    let data = base64::engine::general_purpose::STANDARD
        .decode(a["data"].as_str().unwrap_or(""))
        .unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&data),
        "Patient admitted with chest pain.\nTroponin negative.\n\nPlan:\nrest and follow-up"
    );
    // The notification without the body (T01) announces the content type (TXA-3).
    let t01 = input("tests/golden/mdm_t02_document.hl7")
        .replace("MDM^T02^MDM_T02", "MDM^T01^MDM_T01")
        .split('\r')
        .filter(|s| !s.starts_with("OBX"))
        .collect::<Vec<_>>()
        .join("\r");
    let got = convert_text(&plan, &t01);
    let docs = resource(&got["bundle"], "DocumentReference");
    assert_eq!(docs.len(), 1, "{got}");
    assert_eq!(
        docs[0]["content"][0]["attachment"]["contentType"],
        "text/plain"
    );
    assert!(docs[0]["content"][0]["attachment"].get("data").is_none());
}

/// SIU: the schedule activity (SCH) is an Appointment (IG SCH[Appointment]) with the resources
/// booked for it (IG AIS/AIG/AIL/AIP[Appointment]); its status is SCH-25's (table 0278), else
/// the trigger event's.
#[test]
fn a_scheduled_activity_is_an_appointment_with_its_resources() {
    let plan = plan();
    let text = input("tests/golden/siu_s12_appointment.hl7");
    let got = convert_text(&plan, &text);
    let b = &got["bundle"];
    let appts = resource(b, "Appointment");
    assert_eq!(appts.len(), 1, "{b}");
    let a = appts[0];
    assert_eq!(a["status"], "booked");
    assert_eq!(a["identifier"][0]["value"], "P-77");
    assert_eq!(a["identifier"][1]["value"], "F-88");
    assert_eq!(a["reasonCode"][0]["coding"][0]["code"], "ROUTINE");
    assert_eq!(
        a["reasonCode"][0]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0276"
    );
    assert_eq!(a["appointmentType"]["coding"][0]["code"], "Normal");
    assert_eq!(a["minutesDuration"], 30);
    assert_eq!(a["start"], "2026-12-01T10:30:00+01:00");
    assert_eq!(a["end"], "2026-12-01T11:00:00+01:00");
    assert_eq!(a["serviceType"][0]["coding"][0]["code"], "71046");
    // The NTE after SCH: R5's Appointment.note as its R4 extension, NTE-3's repetitions as lines.
    assert_eq!(
        a["extension"][0]["url"],
        "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.note"
    );
    assert_eq!(
        a["extension"][0]["valueAnnotation"]["text"],
        "Bring prior imaging\nArrive 15 minutes early"
    );
    assert!(
        !got["outcome"].to_string().contains("NTE"),
        "{}",
        got["outcome"]
    );
    let parts = a["participant"].as_array().cloned().unwrap_or_default();
    assert!(parts.iter().all(|p| p["status"] == "accepted"), "{parts:?}");
    let actors: Vec<Value> = parts.iter().map(|p| referenced(b, &p["actor"])).collect();
    let kinds: Vec<&str> = actors
        .iter()
        .map(|r| r["resourceType"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        [
            "Patient",
            "Practitioner",
            "Practitioner",
            "Location",
            "Device"
        ],
        "{parts:?}"
    );
    // The placer contact (SCH-12), then the booked technologist with its role (AIP-4).
    assert_eq!(actors[1]["name"][0]["family"], "Careful");
    assert_eq!(actors[2]["name"][0]["family"], "Tech");
    assert_eq!(parts[2]["type"][0]["coding"][0]["code"], "RT");
    // AIP-4 is a local code (table 0396 `L`): kept without a system, and not reported.
    assert!(parts[2]["type"][0]["coding"][0].get("system").is_none());
    assert!(
        !got["outcome"].to_string().contains("code 'L'"),
        "{}",
        got["outcome"]
    );
    assert_eq!(actors[3]["name"], "RAD");
    assert_eq!(actors[4]["identifier"][0]["value"], "XR-2");
    assert_eq!(actors[4]["deviceName"][0]["name"], "X-ray unit 2");

    // Without SCH-25, the service's filler status (AIS-10) decides.
    let from_service = text.replace("|Booked\r", "|\r").replace(
        "AIS|1||71046^XR chest 2 views^C4",
        "AIS|1||71046^XR chest 2 views^C4|||||||Waitlist",
    );
    let got = convert_text(&plan, &from_service);
    assert_eq!(
        resource(&got["bundle"], "Appointment")[0]["status"],
        "waitlist"
    );
    // Without a filler status the trigger event decides: S15 is a cancellation.
    let cancelled = text
        .replace("SIU^S12^SIU_S12", "SIU^S15^SIU_S12")
        .replace("|Booked\r", "|\r");
    let got = convert_text(&plan, &cancelled);
    assert_eq!(
        resource(&got["bundle"], "Appointment")[0]["status"],
        "cancelled"
    );
    // A start without an end: neither is written (R4 app-2: both or none), no end is guessed.
    let open_ended = text.replace("|202612011100+0100", "|");
    let got = convert_text(&plan, &open_ended);
    let a = resource(&got["bundle"], "Appointment")[0];
    assert!(a.get("start").is_none() && a.get("end").is_none(), "{a}");
}

/// The MSH fields the IG maps to the MessageHeader (IG MSH[MessageHeader], applied through
/// `mappings/segments/MSH-MessageHeader.yaml`): the sending facility and its country, the
/// receiving facility or responsible organization, the sending responsible organization, the
/// network addresses as endpoints and the message's language.
#[test]
fn the_message_header_names_sender_receiver_and_language() {
    let plan = plan();
    // `golden_adt_with` counts fields after the segment id; MSH-1 is the separator itself.
    let msh = |fields: &[(usize, &str)]| -> Value {
        let shifted: Vec<(usize, &str)> = fields.iter().map(|&(n, v)| (n - 1, v)).collect();
        convert_text(&plan, &golden_adt_with("MSH", &shifted))
    };
    let got = msh(&[
        (17, "USA"),
        (19, "en-US"),
        (22, "Sending Org^^^^^^^^^SO-1"),
        (24, "SENDER^2.16.840.1.1.24^ISO"),
        (25, "RECEIVER^2.16.840.1.1.25^ISO"),
    ]);
    let b = &got["bundle"];
    let mh = resource(b, "MessageHeader")[0].clone();
    let sender = referenced(b, &mh["sender"]);
    assert_eq!(sender["name"], "GENHOSP", "{mh}");
    assert_eq!(
        sender["identifier"][0]["value"],
        "urn:oid:2.16.840.1.113883.3.999"
    );
    assert_eq!(sender["address"][0]["country"], "USA");
    // No MSH-23: the receiving facility (MSH-6) is the receiver.
    assert_eq!(
        referenced(b, &mh["destination"][0]["receiver"])["name"],
        "GENHOSP"
    );
    assert_eq!(referenced(b, &mh["responsible"])["name"], "Sending Org");
    assert_eq!(mh["source"]["endpoint"], "urn:oid:2.16.840.1.1.24");
    assert_eq!(mh["source"]["name"], "ADTAPP", "MSH-3 stays the name");
    assert_eq!(mh["destination"][0]["endpoint"], "urn:oid:2.16.840.1.1.25");
    assert_eq!(mh["language"], "en-US");
    let outcome = lost_fields(&got["outcome"]);
    for f in ["MSH-17", "MSH-19", "MSH-22", "MSH-24", "MSH-25"] {
        assert!(!outcome.contains(f), "{f} reported lost: {outcome}");
    }
    // Of the network addresses only the universal id is the endpoint, read as its type (ISO)
    // says: the namespace is listed as a part not mapped.
    assert!(
        got["outcome"]
            .to_string()
            .contains("component(s) not mapped: MSH-24.1, MSH-25.1"),
        "{}",
        got["outcome"]
    );
    // MSH-23 says more than MSH-6: it is the receiver. Without MSH-5 the destination still has
    // the endpoint R4 requires.
    let got = msh(&[(5, ""), (23, "Receiving Org")]);
    let b = &got["bundle"];
    let mh = resource(b, "MessageHeader")[0].clone();
    assert_eq!(
        referenced(b, &mh["destination"][0]["receiver"])["name"],
        "Receiving Org"
    );
    assert_eq!(
        mh["destination"][0]["endpoint"], "urn:hl7v2:unknown",
        "{mh}"
    );
    assert!(
        !got["outcome"].to_string().contains("not valid R4"),
        "{}",
        got["outcome"]
    );
}

/// RDE: the prescriber's order (RXO, IG RXO[MedicationRequest], intent original-order) and the
/// pharmacy's encoded order based on it (RXE, intent filler-order), with status from the order
/// control, dose, route, timing, instructions and dispense request.
#[test]
fn pharmacy_orders_are_medication_requests() {
    let plan = plan();
    let text = input("tests/golden/rde_o11_pharmacy.hl7");
    let got = convert_text(&plan, &text);
    let b = &got["bundle"];
    let reqs = resource(b, "MedicationRequest");
    assert_eq!(reqs.len(), 2, "{b}");
    let (ordered, encoded) = (reqs[0], reqs[1]);
    assert_eq!(ordered["intent"], "original-order");
    assert_eq!(encoded["intent"], "filler-order");
    assert_eq!(
        encoded["basedOn"][0]["reference"],
        format!("MedicationRequest/{}", ordered["id"].as_str().unwrap_or(""))
    );
    for r in [ordered, encoded] {
        // ORC-1 NW without ORC-5: a new order is active.
        assert_eq!(r["status"], "active");
        assert_eq!(
            r["medicationCodeableConcept"]["coding"][0]["system"],
            "http://hl7.org/fhir/sid/ndc"
        );
        assert_eq!(
            r["medicationCodeableConcept"]["coding"][0]["code"],
            "00047040230"
        );
        assert_eq!(referenced(b, &r["subject"])["resourceType"], "Patient");
        assert_eq!(referenced(b, &r["encounter"])["resourceType"], "Encounter");
        assert_eq!(
            referenced(b, &r["requester"])["name"][0]["family"],
            "Prescriber"
        );
        assert_eq!(r["identifier"][0]["value"], "ORD-1");
        assert_eq!(r["groupIdentifier"]["value"], "GRP-1");
        assert_eq!(r["authoredOn"], "2026-11-30T11:30:00+01:00");
        assert_eq!(r["dispenseRequest"]["numberOfRepeatsAllowed"], 3);
        assert_eq!(
            r["dosageInstruction"][0]["route"]["coding"][0]["code"],
            "PO"
        );
    }
    assert_eq!(
        ordered["dosageInstruction"][0]["doseAndRate"][0]["doseRange"]["low"],
        json!({"value": 2, "unit": "capsule", "code": "cap", "system": "http://unitsofmeasure.org"}),
        "RXO-4: the text as unit, the code and its system (UCUM) as sent"
    );
    assert_eq!(
        ordered["substitution"]["allowedCodeableConcept"]["coding"][0]["code"],
        "G"
    );
    assert_eq!(
        ordered["dispenseRequest"]["quantity"],
        json!({"value": 10, "unit": "capsule", "code": "cap", "system": "http://unitsofmeasure.org"})
    );
    let dose = &encoded["dosageInstruction"][0];
    assert_eq!(
        dose["doseAndRate"][0]["doseRange"],
        json!({
            "low": {"value": 1, "unit": "capsule", "code": "cap", "system": "http://unitsofmeasure.org"},
            "high": {"value": 2, "unit": "capsule", "code": "cap", "system": "http://unitsofmeasure.org"}
        })
    );
    assert_eq!(dose["text"], "Take with water\nFinish the course");
    // The encoded timing (TQ1 of TIMING_ENCODED, after RXE) is the encoded order's; the order's
    // own (TIMING, after ORC: BID) is the prescriber's order's.
    assert_eq!(dose["timing"]["code"]["coding"][0]["code"], "QID");
    assert_eq!(
        ordered["dosageInstruction"][0]["timing"]["code"]["coding"][0]["code"],
        "BID"
    );
    assert!(
        !lost_fields(&got["outcome"]).contains("TQ1"),
        "{}",
        got["outcome"]
    );
    assert_eq!(
        dose["timing"]["repeat"]["boundsPeriod"]["start"],
        "2026-11-30T12:00:00+01:00"
    );
    assert_eq!(encoded["identifier"][1]["value"], "RX-55");
    assert_eq!(
        encoded["dispenseRequest"]["quantity"],
        json!({"value": 20, "unit": "capsule", "code": "cap", "system": "http://unitsofmeasure.org"})
    );
    // A discontinued order (ORC-1 DC) is stopped; ORC-5 CA (cancelled) wins over ORC-1.
    let got = convert_text(&plan, &text.replace("ORC|NW|", "ORC|DC|"));
    assert!(
        resource(&got["bundle"], "MedicationRequest")
            .iter()
            .all(|r| r["status"] == "stopped")
    );
    let got = convert_text(
        &plan,
        &text.replace(
            "ORC|NW|ORD-1^EHR||GRP-1^EHR|",
            "ORC|NW|ORD-1^EHR||GRP-1^EHR|CA|",
        ),
    );
    assert!(
        resource(&got["bundle"], "MedicationRequest")
            .iter()
            .all(|r| r["status"] == "cancelled")
    );
}

/// OML^O21 puts the OBR in a group of its own (OBSERVATION_REQUEST) beside the order's TIMING:
/// the order's TQ1 is read through `TIMING/TQ1-n` and becomes its timing, as in ORU and OMG.
#[test]
fn a_lab_orders_timing_is_read_beside_its_request_group() {
    let plan = plan();
    let got = convert_text(&plan, &input("tests/corpus/fhir-converter/OML-O21-03.hl7"));
    let orders = resource(&got["bundle"], "ServiceRequest");
    let timing = &orders[0]["occurrenceTiming"];
    assert_eq!(timing["code"]["coding"][0]["code"], "Once", "{}", orders[0]);
    assert_eq!(timing["repeat"]["countMax"], 1);
    assert_eq!(orders[0]["priority"], "routine");
    assert!(
        !got["outcome"]
            .to_string()
            .contains("segment TQ1 was not mapped"),
        "{}",
        got["outcome"]
    );
}

/// RDS: what the pharmacy dispensed (RXD) is a MedicationDispense authorized by the encoded
/// order (RXE), with when, how much, by whom, the notes and the route.
#[test]
fn a_dispense_is_a_medication_dispense_of_its_prescription() {
    let plan = plan();
    let got = convert_text(&plan, &input("tests/golden/rds_o13_dispense.hl7"));
    let b = &got["bundle"];
    let dispenses = resource(b, "MedicationDispense");
    assert_eq!(dispenses.len(), 1, "{b}");
    let d = dispenses[0];
    assert_eq!(d["status"], "completed");
    assert_eq!(
        d["medicationCodeableConcept"]["coding"][0]["code"],
        "00047040230"
    );
    let prescription = referenced(b, &d["authorizingPrescription"][0]);
    assert_eq!(prescription["resourceType"], "MedicationRequest");
    assert_eq!(prescription["intent"], "filler-order");
    // ORC-1 RE (observations to follow) without ORC-5: the order stays completed.
    assert_eq!(prescription["status"], "completed");
    assert_eq!(
        prescription["dosageInstruction"][0]["text"],
        "Take with water"
    );
    assert_eq!(d["whenHandedOver"], "2026-11-30T12:45:00+01:00");
    assert_eq!(
        d["quantity"],
        json!({"value": 20, "unit": "capsule", "code": "cap", "system": "http://unitsofmeasure.org"})
    );
    assert_eq!(d["identifier"][0]["value"], "RX-55");
    assert_eq!(d["note"][0]["text"], "Take after meals\nKeep refrigerated");
    assert_eq!(
        referenced(b, &d["performer"][0]["actor"])["name"][0]["family"],
        "Dispenser"
    );
    assert_eq!(referenced(b, &d["subject"])["resourceType"], "Patient");
    assert_eq!(referenced(b, &d["context"])["resourceType"], "Encounter");
    assert_eq!(
        d["dosageInstruction"][0]["route"]["coding"][0]["code"],
        "PO"
    );
    // Only the dispense counter (RXD-1, which numbers the dispenses of an order and has no
    // MedicationDispense element) is reported.
    let outcome = got["outcome"].to_string();
    assert!(
        outcome.contains("field(s) not mapped: RXD-1\""),
        "{outcome}"
    );
    assert!(!outcome.contains("segment RXD"), "{outcome}");
}

/// OBX-29 (observation type, table 0936) is an Observation category (IG OBX[Observation]).
#[test]
fn the_observation_type_is_a_category() {
    let plan = plan();
    let text = input("tests/golden/oru_r01_lab.hl7")
        .split('\r')
        .map(|s| {
            if s.starts_with("OBX|1|") {
                let mut f: Vec<&str> = s.split('|').collect();
                f.resize(30, "");
                f[29] = "RSLT";
                f.join("|")
            } else {
                s.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r");
    let got = convert_text(&plan, &text);
    let obs = resource(&got["bundle"], "Observation");
    let typed: Vec<&&Value> = obs
        .iter()
        .filter(|o| {
            o["category"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["coding"][0]
                        == json!({"system": "http://terminology.hl7.org/CodeSystem/v2-0936", "code": "RSLT"})
                })
            })
        })
        .collect();
    assert_eq!(typed.len(), 1, "{obs:?}");
    assert_eq!(typed[0]["code"]["coding"][0]["code"], "2345-7");
    assert!(
        !got["outcome"].to_string().contains("OBX-29"),
        "{}",
        got["outcome"]
    );
}

/// A PRT naming a device (PRT-10) after an OBX without OBX-18 is the Observation's device (IG
/// PRT[Device]), with its UDI, dates, lot and serial numbers.
#[test]
fn a_participating_device_is_the_observations_device() {
    let plan = plan();
    let text = input("tests/golden/oru_r01_lab.hl7")
        .split('\r')
        .flat_map(|s| {
            let mut out = vec![s.to_string()];
            if s.starts_with("OBX|1|") {
                out.push(segment(
                    "PRT",
                    &[
                        (2, "UC"),
                        (4, "EQUIP^Equipment^HL70912"),
                        (10, "GLU-METER-7^LAB^1.2.3^ISO"),
                        (16, "(01)00643169007222"),
                        (18, "20281231"),
                        (19, "LOT-5"),
                        (20, "SN-99"),
                    ],
                ));
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\r");
    let got = convert_text(&plan, &text);
    let b = &got["bundle"];
    let glucose = resource(b, "Observation")
        .into_iter()
        .find(|o| o["code"]["coding"][0]["code"] == "2345-7")
        .cloned()
        .unwrap_or(Value::Null);
    let device = referenced(b, &glucose["device"]);
    assert_eq!(device["identifier"][0]["value"], "GLU-METER-7", "{glucose}");
    assert_eq!(
        device["udiCarrier"][0]["deviceIdentifier"],
        "(01)00643169007222"
    );
    assert_eq!(device["expirationDate"], "2028-12-31");
    assert_eq!(device["lotNumber"], "LOT-5");
    assert_eq!(device["serialNumber"], "SN-99");
    let outcome = got["outcome"].to_string();
    assert!(!outcome.contains("segment PRT"), "{outcome}");
}

/// The visit lists its diagnoses (IG DG1[Encounter]): each DG1's own Condition, its role (DG1-6:
/// A is an admission diagnosis; the v2 code as sent besides) and its rank (DG1-15).
#[test]
fn the_visit_lists_each_diagnosis_with_its_own_condition() {
    let plan = plan();
    let text = input("tests/golden/adt_a01.hl7")
        .split('\r')
        .flat_map(|s| {
            if s.starts_with("DG1|") {
                vec![
                    "DG1|1||I21.9^Acute myocardial infarction, unspecified^I10|||A|||||||||2"
                        .to_string(),
                    "DG1|2||E11.9^Type 2 diabetes mellitus^I10|||F|||||||||1".to_string(),
                ]
            } else {
                vec![s.to_string()]
            }
        })
        .collect::<Vec<_>>()
        .join("\r");
    let got = convert_text(&plan, &text);
    let b = &got["bundle"];
    let enc = resource(b, "Encounter")[0].clone();
    let diagnoses = enc["diagnosis"].as_array().cloned().unwrap_or_default();
    assert_eq!(diagnoses.len(), 2, "{enc}");
    let code_of = |d: &Value| referenced(b, &d["condition"])["code"]["coding"][0]["code"].clone();
    assert_eq!(code_of(&diagnoses[0]), "I21.9");
    assert_eq!(code_of(&diagnoses[1]), "E11.9");
    assert_eq!(diagnoses[0]["rank"], 2);
    assert_eq!(diagnoses[1]["rank"], 1);
    assert_eq!(diagnoses[0]["use"]["coding"][0]["code"], "AD");
    assert_eq!(
        diagnoses[1]["use"]["coding"],
        json!([{"system": "http://terminology.hl7.org/CodeSystem/v2-0052", "code": "F"}])
    );
    assert!(
        !got["outcome"].to_string().contains("DG1-15"),
        "{}",
        got["outcome"]
    );
}

/// ORC-8 (the parent order) is the order's `basedOn`, by placer and filler identifier, and
/// ORC-29 (order type) its `locationCode` through the IG's OrderType concept map.
#[test]
fn an_orders_parent_and_type() {
    let plan = plan();
    let got = convert_text(&plan, &input("tests/corpus/fhir-converter/OML-O21-01.hl7"));
    let orders = resource(&got["bundle"], "ServiceRequest");
    let based_on = &orders[0]["basedOn"];
    assert_eq!(based_on[0]["type"], "ServiceRequest", "{}", orders[0]);
    assert_eq!(based_on[0]["identifier"]["value"], "PAI-8.1");
    assert_eq!(
        based_on[0]["identifier"]["type"]["coding"][0]["code"],
        "PLAC"
    );
    assert_eq!(based_on[1]["identifier"]["value"], "FAI-8.2");
    assert_eq!(
        based_on[1]["identifier"]["type"]["coding"][0]["code"],
        "FILL"
    );
    let got = convert_text(&plan, &input("tests/corpus/fhir-converter/ORM-O01-01.hl7"));
    let orders = resource(&got["bundle"], "ServiceRequest");
    assert_eq!(
        orders[0]["locationCode"][0]["coding"][0],
        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "OF", "display": "Outpatient facility"})
    );
    assert!(
        !got["outcome"].to_string().contains("ORC-29"),
        "{}",
        got["outcome"]
    );
}

/// PD1-6 (handicap) is the Patient's `patient-disability` extension (IG PD1[Patient]).
#[test]
fn a_handicap_is_the_patient_disability_extension() {
    let plan = plan();
    let got = convert_text(&plan, &golden_adt_with("PD1", &[(6, "WHL^Wheelchair^L")]));
    let patient = resource(&got["bundle"], "Patient")[0].clone();
    let disability: Vec<&Value> = patient["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == "http://hl7.org/fhir/StructureDefinition/patient-disability")
        .collect();
    assert_eq!(disability.len(), 1, "{patient}");
    assert_eq!(
        disability[0]["valueCodeableConcept"]["coding"][0]["code"],
        "WHL"
    );
    assert!(
        !got["outcome"].to_string().contains("PD1-6"),
        "{}",
        got["outcome"]
    );
}

/// PDA (patient death and autopsy) and ACC (accident) become the Observations and Procedures the
/// HL7 Vital Records Death Reporting IG records them as. The three PDA Observations share their
/// type, base and segment: their ids come from literal keys (`'autopsy-indicator'`), so they stay
/// apart, and an A08 that changes an indicator updates the same resource instead of adding one.
#[test]
fn death_and_accident_segments_are_observations_and_procedures() {
    let plan = plan();
    let with = |pda: &str, trigger: &str| -> String {
        let base = input("tests/golden/adt_a01.hl7").replace("ADT^A01^ADT_A01", trigger);
        format!(
            "{}\rACC|20240310|MV^Motor vehicle^HL70050|Highway 9\rPDA|{pda}",
            base.trim_end_matches(['\r', '\n'])
        )
    };
    let by_code = |b: &Value, rt: &str, code: &str| -> Vec<Value> {
        resource(&b["bundle"], rt)
            .into_iter()
            .filter(|r| r["code"]["coding"][0]["code"] == code)
            .cloned()
            .collect()
    };
    let a01 = convert_text(
        &plan,
        &with(
            "I21^Acute MI^I10||Y|20240312101500|D55^Certifier^Carl|Y|20240313^20240314|D66^Pathologist^Paula|N",
            "ADT^A01^ADT_A01",
        ),
    );
    let autopsy_obs = by_code(&a01, "Observation", "85699-7");
    let coroner = by_code(&a01, "Observation", "74497-9");
    let cause = by_code(&a01, "Observation", "69453-9");
    assert_eq!((autopsy_obs.len(), coroner.len(), cause.len()), (1, 1, 1));
    assert_ne!(autopsy_obs[0]["id"], coroner[0]["id"]);
    assert_ne!(autopsy_obs[0]["id"], cause[0]["id"]);
    assert_eq!(
        autopsy_obs[0]["valueCodeableConcept"]["coding"][0]["code"],
        "Y"
    );
    assert_eq!(
        coroner[0]["valueCodeableConcept"]["coding"][0]["display"],
        "No"
    );
    assert_eq!(cause[0]["valueCodeableConcept"]["coding"][0]["code"], "I21");
    let cert = by_code(&a01, "Procedure", "308646001");
    assert_eq!(cert[0]["status"], "completed");
    assert_eq!(cert[0]["performedDateTime"], "2024-03-12T10:15:00Z");
    let autopsy = by_code(&a01, "Procedure", "29240004");
    assert_eq!(autopsy[0]["performedPeriod"]["start"], "2024-03-13");
    assert_eq!(autopsy[0]["status"], "completed");
    // The accident: a coded accident (table 0050) is the value, the place a component.
    let acc = by_code(&a01, "Observation", "11374-6");
    assert_eq!(acc[0]["valueCodeableConcept"]["coding"][0]["code"], "MV");
    assert_eq!(acc[0]["component"][0]["valueString"], "Highway 9");
    assert_eq!(acc[0]["effectiveDateTime"], "2024-03-10");
    let outcome = a01["outcome"].to_string();
    assert!(!outcome.contains("PDA-"), "{outcome}");
    assert!(!outcome.contains("\"duplicate\""), "{outcome}");

    // An update that says neither the certification nor the autopsy happened: the same resources,
    // now 'N' and not-done.
    let a08 = convert_text(
        &plan,
        &with(
            "I21^Acute MI^I10||N|||N||D66^Pathologist^Paula|N",
            "ADT^A08^ADT_A01",
        ),
    );
    let autopsy_obs2 = by_code(&a08, "Observation", "85699-7");
    assert_eq!(autopsy_obs2[0]["id"], autopsy_obs[0]["id"]);
    assert_eq!(
        autopsy_obs2[0]["valueCodeableConcept"]["coding"][0]["code"],
        "N"
    );
    let autopsy2 = by_code(&a08, "Procedure", "29240004");
    assert_eq!(autopsy2[0]["id"], autopsy[0]["id"]);
    assert_eq!(
        by_code(&a08, "Procedure", "308646001")[0]["status"],
        "not-done"
    );

    // Not an indicator (table 0136 is Y/N): no Observation, and the field is reported, not guessed.
    let odd = convert_text(&plan, &with("I21||||||||X", "ADT^A01^ADT_A01"));
    assert!(by_code(&odd, "Observation", "74497-9").is_empty());
    assert_eq!(by_code(&odd, "Observation", "69453-9").len(), 1);
    assert!(
        odd["outcome"]
            .to_string()
            .contains("field(s) not mapped: PDA-9"),
        "{}",
        odd["outcome"]
    );
}

/// An OBR without SPM segments describes its specimen itself (v2.3-style results): the IG's
/// OBR[Specimen] makes a Specimen of OBR-7/8, 9, 10, 14, 15 and 39, which the report, the order
/// and every observation of that OBR reference. With SPM, SPM is the specimen and OBR makes none;
/// an OBR with only an observation time (OBR-7) makes none either.
#[test]
fn an_obr_without_spm_describes_its_specimen() {
    let plan = plan();
    let lab = input("tests/golden/oru_r01_lab.hl7");
    let without_spm: String = lab
        .split('\r')
        .filter(|s| !s.starts_with("SPM|"))
        .map(|s| {
            if !s.starts_with("OBR|") {
                return s.to_string();
            }
            let mut f: Vec<String> = s.split('|').map(str::to_string).collect();
            f.resize(40, String::new());
            f[8] = "20240315103000-0500".into();
            f[9] = "5^mL&milliliter&UCUM".into();
            f[10] = "7777^DRAW^DANA".into();
            f[14] = "20240315110000-0500".into();
            f[15] = "BLD&Blood&HL70487^^^LA&Left arm&HL70163".into();
            f[39] = "^Drawn after breakfast".into();
            f.join("|")
        })
        .collect::<Vec<_>>()
        .join("\r");
    let got = convert_text(&plan, &without_spm);
    let specimens = resource(&got["bundle"], "Specimen");
    assert_eq!(specimens.len(), 1, "{specimens:?}");
    let s = specimens[0];
    assert_eq!(s["type"]["coding"][0]["code"], "BLD");
    assert_eq!(s["collection"]["bodySite"]["coding"][0]["code"], "LA");
    assert_eq!(
        s["collection"]["collectedPeriod"]["start"],
        "2024-03-15T10:15:00-05:00"
    );
    assert_eq!(
        s["collection"]["collectedPeriod"]["end"],
        "2024-03-15T10:30:00-05:00"
    );
    assert_eq!(s["collection"]["quantity"]["value"], 5);
    assert_eq!(s["collection"]["quantity"]["unit"], "milliliter");
    assert_eq!(
        s["collection"]["quantity"]["system"],
        "http://unitsofmeasure.org"
    );
    assert!(s["collection"]["collector"]["reference"].is_string());
    assert_eq!(s["receivedTime"], "2024-03-15T11:00:00-05:00");
    assert_eq!(s["note"][0]["text"], "Drawn after breakfast");
    let sref = format!("Specimen/{}", s["id"].as_str().unwrap_or(""));
    let report = resource(&got["bundle"], "DiagnosticReport")
        .into_iter()
        .find(|r| r["code"]["coding"][0]["code"] == "24323-8")
        .expect("the panel's report");
    assert_eq!(report["specimen"][0]["reference"], sref.as_str());
    let order = resource(&got["bundle"], "ServiceRequest")[0];
    assert_eq!(order["specimen"][0]["reference"], sref.as_str());
    let observations = resource(&got["bundle"], "Observation");
    assert!(!observations.is_empty());
    for o in &observations {
        assert_eq!(o["specimen"]["reference"], sref.as_str(), "{o}");
    }
    let outcome = got["outcome"].to_string();
    for f in ["OBR-8", "OBR-9", "OBR-10", "OBR-14", "OBR-15", "OBR-39"] {
        assert!(
            !outcome.contains(&format!("{f},")) && !outcome.contains(&format!("{f}\"")),
            "{f} reported lost: {outcome}"
        );
    }

    // With SPM: the SPM's Specimen only.
    let with_spm = convert_text(&plan, &lab);
    let specimens = resource(&with_spm["bundle"], "Specimen");
    assert_eq!(specimens.len(), 1);
    assert_eq!(specimens[0]["identifier"][0]["value"], "SPC123");
    // Only an observation time: no Specimen.
    let bare: String = lab
        .split('\r')
        .filter(|s| !s.starts_with("SPM|"))
        .collect::<Vec<_>>()
        .join("\r");
    assert!(resource(&convert_text(&plan, &bare)["bundle"], "Specimen").is_empty());
}

/// `refs` reaches the enclosing group when the resource's own group holds none (DFT's
/// `[ORDER: OBR] [{OBSERVATION: OBX}]`, OUL^R22's `SPECIMEN: SPM … {ORDER: OBR}`), and never takes
/// another order's: each DFT report lists the OBX of its own order, each OUL order its own SPM.
#[test]
fn reports_reach_the_results_and_specimens_beside_them() {
    let plan = plan();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/fhir-converter");
    let (dft, _) = convert(&plan, &dir.join("DFT-P03-02.hl7"));
    let reports = resource(&dft["bundle"], "DiagnosticReport");
    assert_eq!(reports.len(), 2);
    let codes: Vec<Value> = reports
        .iter()
        .map(|r| {
            assert_eq!(r["result"].as_array().map(Vec::len), Some(1), "{r}");
            referenced(&dft["bundle"], &r["result"][0])["code"]["coding"][0]["code"].clone()
        })
        .collect();
    assert_eq!(codes, vec![Value::from("ER-Dr"), Value::from("ERDr")]);
    let placers: Vec<Value> = reports
        .iter()
        .map(|r| referenced(&dft["bundle"], &r["basedOn"][0])["identifier"].clone())
        .collect();
    assert_ne!(
        placers[0], placers[1],
        "each report is based on its own order"
    );
    assert!(
        !dft["outcome"]
            .to_string()
            .contains("segment OBX was not mapped")
    );

    let (oul, _) = convert(&plan, &dir.join("OUL-R22-02.hl7"));
    let specimens = resource(&oul["bundle"], "Specimen");
    assert_eq!(specimens.len(), 2);
    let orders = resource(&oul["bundle"], "ServiceRequest");
    let linked: Vec<Value> = orders
        .iter()
        .map(|o| {
            assert_eq!(o["specimen"].as_array().map(Vec::len), Some(1), "{o}");
            o["specimen"][0]["reference"].clone()
        })
        .collect();
    assert_eq!(linked.len(), 2);
    assert_ne!(
        linked[0], linked[1],
        "each order takes the specimen it sits under"
    );
}

/// An ED or RP OBX that comes with an order (OMG^O19, OML^O21: pathology slide images) is a
/// DocumentReference the order lists among its supportingInfo (IG OBX[DocumentReference]), not an
/// Observation holding base64 text, and not lost.
#[test]
fn documents_sent_with_an_order_are_document_references() {
    let plan = plan();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/fhir-converter");
    for file in ["OMG-O19-02.hl7", "OML-O21-03.hl7"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("corpus file");
        let sent = text
            .split(['\r', '\n'])
            .filter(|s| s.starts_with("OBX|"))
            .filter(|s| {
                let f: Vec<&str> = s.split('|').collect();
                match f.get(2) {
                    Some(&"ED") => f
                        .get(5)
                        .is_some_and(|v| v.split('^').nth(4).is_some_and(|d| !d.is_empty())),
                    Some(&"RP") => f
                        .get(5)
                        .is_some_and(|v| !v.split('^').next().unwrap_or("").is_empty()),
                    _ => false,
                }
            })
            .count();
        let (got, _) = convert(&plan, &dir.join(file));
        let docs = resource(&got["bundle"], "DocumentReference");
        // Every document OBX but those of a PRIOR_RESULT (which the IG maps nowhere).
        assert!(
            !docs.is_empty() && docs.len() <= sent,
            "{file}: {} of {sent}",
            docs.len()
        );
        for d in &docs {
            assert_eq!(d["status"], "current");
            let a = &d["content"][0]["attachment"];
            assert!(a["data"].is_string() || a["url"].is_string(), "{file}: {d}");
            assert!(
                d["context"]["related"][0]["reference"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("ServiceRequest/"))
            );
        }
        let ids: Vec<String> = docs
            .iter()
            .map(|d| format!("DocumentReference/{}", d["id"].as_str().unwrap_or("")))
            .collect();
        let supporting: Vec<String> = resource(&got["bundle"], "ServiceRequest")
            .iter()
            .flat_map(|o| o["supportingInfo"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["reference"].as_str().map(str::to_string))
            .filter(|r| r.starts_with("DocumentReference/"))
            .collect();
        for id in &ids {
            assert!(
                supporting.contains(id),
                "{file}: {id} is no order's supportingInfo"
            );
        }
        // No Observation holds a document's base64 or pointer as text.
        for o in resource(&got["bundle"], "Observation") {
            let v = o["valueString"].as_str().unwrap_or("");
            assert!(
                !v.contains("Base64") && !v.starts_with("http"),
                "{file}: {o}"
            );
        }
    }
}

/// v2.8's PATIENT_OBSERVATION: an OBX right after PID in an ORU^R01 is about the patient, outside
/// any order (IG ORU_R01 → OBX[Observation]; an ED/RP one a document). It takes no order's
/// specimen and is based on no order, though the message's order has both.
#[test]
fn patient_observations_in_a_result_message_belong_to_no_order() {
    let plan = plan();
    let lab = input("tests/golden/oru_r01_lab.hl7");
    let text = lab.replacen(
        "\rPV1|",
        "\rOBX|1|NM|29463-7^Body weight^LN||72.5|kg^kg^UCUM|||||F|||20240315090000-0500\rOBX|2|RP|11502-2^Laboratory report^LN||https://example.org/prior.pdf^^application^pdf||||||F\rPV1|",
        1,
    );
    let got = convert_text(&plan, &text);
    let outcome = got["outcome"].to_string();
    assert!(!outcome.contains("not expected here"), "{outcome}");
    let weight: Vec<&Value> = resource(&got["bundle"], "Observation")
        .into_iter()
        .filter(|o| o["code"]["coding"][0]["code"] == "29463-7")
        .collect();
    assert_eq!(weight.len(), 1);
    assert_eq!(weight[0]["valueQuantity"]["value"], 72.5);
    assert!(
        weight[0]["subject"]["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("Patient/"))
    );
    assert!(weight[0]["specimen"].is_null(), "{}", weight[0]);
    let doc: Vec<&Value> = resource(&got["bundle"], "DiagnosticReport")
        .into_iter()
        .filter(|d| {
            d["code"]["coding"][0]["code"] == "11502-2" && d["presentedForm"][0]["url"].is_string()
        })
        .collect();
    assert_eq!(doc.len(), 1, "{}", got["bundle"]);
    assert!(doc[0]["basedOn"].is_null(), "{}", doc[0]);
    // The order's own results keep their specimen.
    let glucose = resource(&got["bundle"], "Observation")
        .into_iter()
        .find(|o| o["code"]["coding"][0]["code"] == "2345-7")
        .expect("glucose");
    assert!(glucose["specimen"]["reference"].is_string());
    // Neither is one of the report's results.
    let report = resource(&got["bundle"], "DiagnosticReport")
        .into_iter()
        .find(|r| r["code"]["coding"][0]["code"] == "24323-8")
        .expect("report");
    let weight_ref = format!("Observation/{}", weight[0]["id"].as_str().unwrap_or(""));
    assert!(!report["result"].to_string().contains(&weight_ref));
}

/// An order's notes are the NTE of its own OBR, never those of its OBX or of a prior result that
/// follows it (OMG-O19-02: an order without notes of its own, then a PRIOR_RESULT whose OBR and
/// OBX have notes, which the IG maps nowhere and the loss report lists).
#[test]
fn an_orders_notes_are_its_own() {
    let plan = plan();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/fhir-converter");
    let (got, _) = convert(&plan, &dir.join("OMG-O19-02.hl7"));
    for o in resource(&got["bundle"], "ServiceRequest") {
        let notes = o["note"].to_string();
        assert!(
            !notes.contains("Test Note OBX1"),
            "an OBX's note on an order: {o}"
        );
    }
    assert!(
        got["outcome"]
            .to_string()
            .contains("segment NTE was not mapped")
    );
    // ORU: the OBR's note is the order's, the OBX's note the observation's.
    let (oru, _) = convert(
        &plan,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/oru_r01_lab.hl7"),
    );
    let order = resource(&oru["bundle"], "ServiceRequest")[0];
    assert_eq!(order["note"].as_array().map(Vec::len), Some(1), "{order}");
    assert_eq!(order["note"][0]["text"], "Fasting specimen");
}

/// ARV (access restrictions) → meta.security (IG ARV): a restriction of the patient's location is
/// the visit's, every other one the patient's; ARV-2 `D` withdraws one (nothing written).
#[test]
fn access_restrictions_are_security_labels() {
    let plan = plan();
    let base = input("tests/golden/adt_a01.hl7");
    let with = |arvs: &str| -> Value {
        let text = base.replacen("\rPV1|", &format!("\r{arvs}\rPV1|"), 1);
        convert_text(&plan, &text)
    };
    let got = with(
        "ARV|1|A|DEM^Demographics^HL70717|PAT|Restricted at the patient's request||||\rARV|2|A|LOC|PHY|Do not disclose the room",
    );
    let patient = resource(&got["bundle"], "Patient")[0];
    let security = &patient["meta"]["security"];
    assert_eq!(security[0]["code"], "DEM");
    assert_eq!(
        security[0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0717"
    );
    assert_eq!(
        security[0]["display"],
        "Restricted at the patient's request"
    );
    assert_eq!(security[1]["code"], "PAT");
    assert_eq!(
        security[1]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0719"
    );
    assert!(security[2].is_null(), "{security}");
    let encounter = resource(&got["bundle"], "Encounter")[0];
    assert_eq!(encounter["meta"]["security"][0]["code"], "LOC");
    assert_eq!(encounter["meta"]["security"][1]["code"], "PHY");
    // A withdrawn restriction (ARV-2 D): no label.
    let got = with("ARV|1|D|DEM|PAT");
    assert!(resource(&got["bundle"], "Patient")[0]["meta"]["security"].is_null());
}

/// PRD (the providers of a referral): the referring provider (PRD-1 RP) is the referral's
/// requester, the referred-to provider (RT) a performer, each a Practitioner with the license
/// (PRD-7, type SL in table 0203, its expiration), name, address and phone of the segment.
#[test]
fn a_referrals_providers_request_and_perform_it() {
    let plan = plan();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/fhir-converter");
    let (got, _) = convert(&plan, &dir.join("REF-I12-01.hl7"));
    let referral = resource(&got["bundle"], "ServiceRequest")
        .into_iter()
        .find(|s| s["category"][0]["coding"][0]["code"] == "Med")
        .expect("the referral (RF1)");
    let requester = referenced(&got["bundle"], &referral["requester"]);
    assert_eq!(requester["name"][0]["family"], "POWELL");
    assert_eq!(requester["identifier"][0]["value"], "PLN1001");
    assert_eq!(
        requester["identifier"][0]["type"]["coding"][0]["code"],
        "SL"
    );
    assert_eq!(requester["identifier"][0]["period"]["end"], "2024-01-12");
    assert_eq!(requester["telecom"][0]["value"], "(626)555-1234");
    let performer = referenced(&got["bundle"], &referral["performer"][0]);
    assert_eq!(performer["name"][0]["family"], "McWILLIAMS");
    assert_eq!(performer["address"][0]["line"][0], "2000 PARK AVENUE");
}

/// ORU^R01 v2.8's COMMON_ORDER: an ORC with its own PRT and ORDER_DOCUMENT (OBX + TXA) before the
/// OBR. The ORC stays the order's (status, times, numbers), and the document is a
/// DocumentReference as in MDM (TXA[DocumentReference]).
#[test]
fn an_order_document_in_a_result_message_is_a_document_reference() {
    let plan = plan();
    let lab = input("tests/golden/oru_r01_lab.hl7");
    let text = lab.replacen(
        "\rOBR|",
        "\rOBX|1|TX|11506-3^Progress note^LN||Patient doing well||||||F\rTXA|1|PN^Progress note^HL70270|TX|||20240315100000-0500||||||DOC-77^LIS|||||AU||AV\rOBR|",
        1,
    );
    let got = convert_text(&plan, &text);
    let outcome = got["outcome"].to_string();
    assert!(!outcome.contains("not expected here"), "{outcome}");
    assert!(!outcome.contains("segment TXA was not mapped"), "{outcome}");
    let docs = resource(&got["bundle"], "DocumentReference");
    assert_eq!(docs.len(), 1, "{}", got["bundle"]);
    assert_eq!(docs[0]["masterIdentifier"]["value"], "DOC-77");
    assert_eq!(docs[0]["docStatus"], "final");
    assert!(docs[0]["content"][0]["attachment"]["data"].is_string());
    // The ORC is still the order's.
    let order = resource(&got["bundle"], "ServiceRequest")[0];
    assert!(
        order["identifier"].to_string().contains("FIL888"),
        "{order}"
    );
    // The document's OBX is its body, not an Observation.
    assert!(
        resource(&got["bundle"], "Observation")
            .iter()
            .all(|o| o["code"]["coding"][0]["code"] != "11506-3")
    );
}

/// IAM (ADT^A60) statuses: IAM-17 (table 0438) is the verification status, `I` an inactive
/// allergy; a deleted record (IAM-6 D) or an erroneous one (E) is entered-in-error without a
/// clinical status (R4 ait-2). The allergy keeps the id AL1 gives the same allergen, so the
/// A60 updates what an A01 recorded.
#[test]
fn adverse_reaction_updates_set_the_allergys_status() {
    let plan = plan();
    let a60 = input("tests/corpus/fhir-converter/ADT-A60-01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let with = |action: &str, status: &str| -> Value {
        let text: String = a60
            .split('\r')
            .map(|s| {
                if !s.starts_with("IAM|") {
                    return s.to_string();
                }
                let mut f: Vec<String> = s.split('|').map(str::to_string).collect();
                f[6] = action.to_string();
                f[17] = status.to_string();
                f.join("|")
            })
            .collect::<Vec<_>>()
            .join("\r");
        resource(&convert_text(&plan, &text)["bundle"], "AllergyIntolerance")[0].clone()
    };
    let inactive = with("U", "I");
    assert_eq!(inactive["clinicalStatus"]["coding"][0]["code"], "inactive");
    assert!(inactive["verificationStatus"].is_null(), "{inactive}");
    for (action, status) in [("D", "C"), ("A", "E")] {
        let gone = with(action, status);
        assert_eq!(
            gone["verificationStatus"]["coding"][0]["code"], "entered-in-error",
            "{action}/{status}: {gone}"
        );
        assert!(gone["clinicalStatus"].is_null(), "{gone}");
    }
    let suspected = with("A", "S");
    assert_eq!(
        suspected["verificationStatus"]["coding"][0]["code"],
        "unconfirmed"
    );
    // The same allergen from an A01's AL1 is the same resource.
    let a01 = format!(
        "{}\rAL1|1|FA^Food allergy^HL70127|12345^Peanut Allergy^L",
        a60.replace("ADT^A60^ADT_A60", "ADT^A01^ADT_A01")
            .split('\r')
            .filter(|s| ["MSH", "EVN", "PID", "PV1"]
                .iter()
                .any(|p| s.starts_with(p)))
            .collect::<Vec<_>>()
            .join("\r")
    );
    let from_al1 = resource(&convert_text(&plan, &a01)["bundle"], "AllergyIntolerance")[0].clone();
    assert_eq!(from_al1["id"], with("A", "C")["id"]);
}

/// A segment iterated in a subgroup brings its group along: the insured's numbers (IN2) are the
/// patient's for the insurance whose IN1-17 says SEL, whichever insurance that is (before, only
/// the first insurance was looked at, with its own IN1-17).
#[test]
fn the_insured_numbers_of_any_insurance_the_patient_holds_are_the_patients() {
    let plan = plan();
    let text = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|X1|P|2.5.1\r\
                EVN|A01|20240101\r\
                PID|1||MRN9^^^H^MR||DOE^JANE||19800101|F\r\
                PV1|1|I\r\
                IN1|1|PLAN1|||||||||||||||SPO\r\
                IN2||||||MEDICARE-SPOUSE\r\
                IN1|2|PLAN2|||||||||||||||SEL\r\
                IN2||||||MEDICARE-SELF\r";
    let got = convert_text(&plan, text);
    let ids: Vec<Value> = resource(&got["bundle"], "Patient")[0]["identifier"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i["value"].clone())
        .collect();
    assert!(ids.contains(&Value::from("MEDICARE-SELF")), "{ids:?}");
    assert!(!ids.contains(&Value::from("MEDICARE-SPOUSE")), "{ids:?}");
}

/// PID-33/34 (last update date/time and facility), both sent: a Provenance of the Patient (IG
/// PID[Provenance-Patient]); one of them alone makes none (the IG's condition) and is reported.
#[test]
fn the_patients_last_update_is_a_provenance() {
    let plan = plan();
    let with = golden_adt_with(
        "PID",
        &[
            (33, "20240315091500-0500"),
            (34, "GENHOSP^2.16.840.1.113883.3.999^ISO"),
        ],
    );
    let got = convert_text(&plan, &with);
    let patient = resource(&got["bundle"], "Patient")[0];
    let p: Vec<&Value> = resource(&got["bundle"], "Provenance")
        .into_iter()
        .filter(|p| p["agent"][0]["type"]["coding"][0]["code"] == "custodian")
        .collect();
    assert_eq!(p.len(), 1, "{}", got["bundle"]);
    assert_eq!(
        p[0]["target"][0]["reference"],
        format!("Patient/{}", patient["id"].as_str().unwrap_or(""))
    );
    assert_eq!(p[0]["recorded"], "2024-03-15T09:15:00-05:00");
    assert_eq!(p[0]["agent"][0]["type"]["coding"][0]["code"], "custodian");
    assert!(
        p[0]["agent"][0]["who"]["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("Organization/"))
    );
    let outcome = got["outcome"].to_string();
    assert!(
        !outcome.contains("PID-33") && !outcome.contains("PID-34"),
        "{outcome}"
    );
    let alone = convert_text(
        &plan,
        &golden_adt_with("PID", &[(33, "20240315091500-0500")]),
    );
    assert!(
        resource(&alone["bundle"], "Provenance")
            .iter()
            .all(|p| p["agent"][0]["type"]["coding"][0]["code"] != "custodian")
    );
    assert!(alone["outcome"].to_string().contains("PID-33"));
}

/// A compound order (RXC components) makes the medication a Medication: the give code, its dose
/// form, and one ingredient per RXC — the component as a Medication with its amount (RXC-3/4),
/// active for A, strength RXC-5/6 per RXC-8/9. An order without RXC keeps the CodeableConcept.
#[test]
fn compound_orders_reference_a_medication_with_its_components() {
    let plan = plan();
    let b =
        convert_text(&plan, &input("tests/corpus/fhir-converter/RDE-O11-01.hl7"))["bundle"].clone();
    let requests = resource(&b, "MedicationRequest");
    let encoded = requests
        .iter()
        .find(|r| r["intent"] == "filler-order")
        .copied()
        .unwrap_or(&Value::Null);
    assert!(
        encoded.get("medicationCodeableConcept").is_none(),
        "{encoded}"
    );
    let med = referenced(&b, &encoded["medicationReference"]);
    assert_eq!(med["resourceType"], "Medication", "{encoded}");
    assert_eq!(med["code"]["coding"][0]["code"], "0143963401", "{med}");
    assert_eq!(med["form"]["coding"][0]["code"], "128", "{med}");
    let ingredient = &med["ingredient"][0];
    assert_eq!(ingredient["isActive"], true, "{med}");
    assert_eq!(
        ingredient["strength"]["numerator"]["value"],
        json!(5),
        "{med}"
    );
    assert_eq!(
        ingredient["strength"]["numerator"]["unit"], "mg/hr",
        "{med}"
    );
    assert_eq!(
        ingredient["strength"]["denominator"]["value"],
        json!(1),
        "{med}"
    );
    let component = referenced(&b, &ingredient["itemReference"]);
    assert_eq!(
        component["code"]["coding"][0]["code"], "0143963401",
        "{component}"
    );
    assert_eq!(
        component["amount"]["numerator"]["value"],
        json!(4),
        "{component}"
    );
    assert_eq!(
        component["amount"]["numerator"]["unit"], "Bag",
        "{component}"
    );
    // The prescriber's order (RXO and its COMPONENT RXC): strength per RXC-8/9.
    let ordered = requests
        .iter()
        .find(|r| r["intent"] == "original-order" || r["intent"] == "order")
        .copied()
        .unwrap_or(&Value::Null);
    let med = referenced(&b, &ordered["medicationReference"]);
    assert_eq!(
        med["ingredient"][0]["strength"]["denominator"]["value"],
        json!(4),
        "{med}"
    );
    // Without RXC: a CodeableConcept, as before.
    let plain = convert_text(&plan, &input("tests/golden/rde_o11_pharmacy.hl7"))["bundle"].clone();
    for r in resource(&plain, "MedicationRequest") {
        assert!(r.get("medicationCodeableConcept").is_some(), "{r}");
        assert!(r.get("medicationReference").is_none(), "{r}");
    }
    assert!(resource(&plain, "Medication").is_empty());
}

/// A field of separators only (`^^^^^`) is as empty as an absent one: no participant with a
/// type and nobody, no identifier with a type and no value (the HAPI samples send such fields).
#[test]
fn a_field_of_separators_only_makes_nothing() {
    let plan = plan();
    let participants = |pv1_8: &str| -> Vec<Value> {
        let b = convert_text(&plan, &golden_adt_with("PV1", &[(8, pv1_8)]))["bundle"].clone();
        resource(&b, "Encounter")
            .first()
            .and_then(|e| e["participant"].as_array().cloned())
            .unwrap_or_default()
    };
    let empty = participants("^^^^^");
    assert!(
        empty.iter().all(|p| p.get("individual").is_some()),
        "{empty:?}"
    );
    let named = participants("777^REFERRER^RITA");
    assert_eq!(named.len(), empty.len() + 1, "{named:?}");
}

/// The payor (IN1-4) is one Organization with the company's id (IN1-3), its contact person and
/// phone (IN1-6/7), as the IG's IN1[Coverage] has it; the coverage's subscriber id is the
/// insured's id with the payer (IN1-49), the policy number (IN1-36) an identifier.
#[test]
fn the_payor_carries_its_id_and_contact_and_the_subscriber_id_is_in1_49() {
    let plan = plan();
    let b =
        convert_text(&plan, &input("tests/corpus/fhir-converter/ADT-A01-01.hl7"))["bundle"].clone();
    let coverage = resource(&b, "Coverage")
        .first()
        .copied()
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(coverage["subscriberId"], "HMO-12345", "{coverage}");
    assert!(
        coverage["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["value"] == "PN-145"),
        "{coverage}"
    );
    let payor = referenced(&b, &coverage["payor"][0]);
    assert_eq!(payor["name"], "Blue Cross Blue Shield of Texas", "{payor}");
    assert_eq!(payor["identifier"][0]["value"], "IC-1.31", "{payor}");
    assert_eq!(
        payor["contact"][0]["telecom"][0]["value"], "(555)555-5555",
        "{payor}"
    );
    assert!(
        payor["contact"][0]["name"].get("family").is_some(),
        "{payor}"
    );
}

/// PD1-12 / PV2-22 (protection indicators) `Y` label the patient / visit restricted (v3
/// confidentiality R); `N` adds nothing and is not reported as a loss.
#[test]
fn protection_indicators_label_the_patient_and_the_visit() {
    let plan = plan();
    let run = |pd1_12: &str, pv2_22: &str| -> (Value, Value, String) {
        let text = golden_adt_with("PD1", &[(12, pd1_12)]);
        let text = text
            .split('\r')
            .map(|s| {
                if !s.starts_with("PV2|") {
                    return s.to_string();
                }
                let mut f: Vec<String> = s.split('|').map(str::to_string).collect();
                if f.len() <= 22 {
                    f.resize(23, String::new());
                }
                f[22] = pv2_22.to_string();
                f.join("|")
            })
            .collect::<Vec<_>>()
            .join("\r");
        let got = convert_text(&plan, &text);
        let b = &got["bundle"];
        let first = |t: &str| {
            resource(b, t)
                .first()
                .copied()
                .cloned()
                .unwrap_or(Value::Null)
        };
        (
            first("Patient"),
            first("Encounter"),
            got["outcome"].to_string(),
        )
    };
    let restricted = |r: &Value| {
        r["meta"]["security"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["code"] == "R")
    };
    let (patient, encounter, _) = run("Y", "Y");
    assert!(restricted(&patient), "{patient}");
    assert!(restricted(&encounter), "{encounter}");
    let (patient, encounter, outcome) = run("N", "N");
    assert!(!restricted(&patient) && !restricted(&encounter));
    assert!(
        !outcome.contains("PD1-12") && !outcome.contains("PV2-22"),
        "{outcome}"
    );
}

/// With `trace`, every element a rule wrote is listed with the resource, its path, what the
/// rules read (outermost first, with the segment occurrence) and the rule (`name (file:line:col)`);
/// each row points at an element the emitted Bundle has. Tracing changes nothing in the output,
/// and is off by default.
#[test]
fn trace_names_the_rule_and_source_of_each_element() {
    let plan = plan();
    let text = input("tests/golden/adt_a01.hl7");
    let parsed = v2fhir::v2::parse(text.as_bytes()).expect("parse");
    let traced = eval::convert(
        &plan,
        &parsed.messages[0],
        &ConvertOptions {
            trace: true,
            ..ConvertOptions::default()
        },
    );
    let plain = eval::convert(&plan, &parsed.messages[0], &ConvertOptions::default());
    assert!(plain.trace.is_empty());
    assert_eq!(traced.bundle, plain.bundle);
    let bundle = traced.bundle.as_ref().expect("bundle");
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .collect();
    let by_name = |name: &str| {
        resources.iter().copied().find(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            ) == name
        })
    };
    assert!(traced.trace.len() > 100, "{}", traced.trace.len());
    for row in &traced.trace {
        let r = by_name(&row.resource).unwrap_or_else(|| panic!("{row:?}: no such resource"));
        assert!(
            v2fhir::mapping::tests::lookup(r, &row.path).is_some(),
            "{row:?}: no such element"
        );
        assert!(
            row.rule.contains("mappings/") && row.rule.contains(".yaml:"),
            "{row:?}"
        );
    }
    let row = |rt: &str, path: &str| {
        traced
            .trace
            .iter()
            .find(|r| r.resource.starts_with(&format!("{rt}/")) && r.path == path)
            .unwrap_or_else(|| panic!("no trace row for {rt} {path}"))
    };
    // PID-5's first repetition, its family name component, by XPN[HumanName]'s `family` rule.
    let family = row("Patient", "name[0].family");
    assert_eq!(family.source, "PID-5[*] (segment #3) → .1.1");
    assert!(
        family
            .rule
            .starts_with("family (mappings/datatypes/XPN-HumanName.yaml:"),
        "{family:?}"
    );
    assert_eq!(row("Patient", "birthDate").source, "PID-7 (segment #3)");
    assert_eq!(
        row("Patient", "name[1].family").source,
        "PID-5[*] (segment #3) → .1.1"
    );
    // A nested resource's rows start from the rule that built it (PV1-7, the attending).
    assert!(
        traced
            .trace
            .iter()
            .any(|r| r.resource.starts_with("Practitioner/")
                && r.source.starts_with("PV1-7[*] (segment #6)")),
        "{:?}",
        traced.trace
    );
    // A constant and a reference say so.
    assert_eq!(row("Coverage", "status").source, "constant");
    assert_eq!(row("Observation", "subject").source, "reference to patient");
    // The header's mapped elements carry the MessageHeader's id.
    assert!(row("MessageHeader", "sender").source.starts_with("MSH-4"));
}

/// Coding-system names (CWE.3, HL7 table 0396, and the PHIN VADS names public-health feeds send)
/// become the FHIR system URI; a name no vocabulary entry knows leaves the coding without a system
/// and is reported.
#[test]
fn coding_system_names_become_system_uris() {
    let plan = plan();
    let cases = [
        ("LN", Some("http://loinc.org")),
        ("PH_SNOMED-CT", Some("http://snomed.info/sct")),
        ("FIPS5_2", Some("urn:oid:2.16.840.1.113883.6.92")),
        ("FIPS6_4", Some("urn:oid:2.16.840.1.113883.6.93")),
        (
            "PH_YesNo_HL7_2x",
            Some("http://terminology.hl7.org/CodeSystem/v2-0136"),
        ),
        (
            "NULLFL",
            Some("http://terminology.hl7.org/CodeSystem/v3-NullFlavor"),
        ),
        ("DCM", Some("http://dicom.nema.org/resources/ontology/DCM")),
        ("NOT-A-SYSTEM", None),
    ];
    for (name, want) in cases {
        let msg = format!(
            "MSH|^~\\&|LAB|FAC|EHR|FAC|20240315143000-0500||ORU^R01^ORU_R01|CS-{name}|P|2.5.1\r\
             PID|1||MRN1^^^FAC^MR||DOE^JANE\r\
             OBR|1|P1|F1|68991-9^Epidemiologic Information^LN\r\
             OBX|1|CWE|77966-0^Reporting State^LN||25^Massachusetts^{name}||||||F\r"
        );
        let got = convert_text(&plan, &msg);
        let obs = resource(&got["bundle"], "Observation");
        let coding = &obs[0]["valueCodeableConcept"]["coding"][0];
        assert_eq!(coding["code"], "25", "{name}");
        assert_eq!(coding["system"].as_str(), want, "{name}");
        let reported = got["outcome"]["issue"]
            .as_array()
            .expect("issues")
            .iter()
            .any(|i| {
                i["diagnostics"].as_str().is_some_and(|d| {
                    d.contains(&format!("'{name}' has no entry in vocabulary CodingSystem"))
                })
            });
        assert_eq!(reported, want.is_none(), "{name}: reported as unknown");
    }
}

/// The software of an SFT segment is a Device (IG SFT[Device]) that the Bundle's Provenance names
/// as an entity: the first SFT the source, a later one (a system the message passed through) a
/// derivation.
#[test]
fn sending_software_is_a_provenance_entity() {
    let plan = plan();
    let text = input("tests/golden/oru_r01_lab.hl7").replace(
        "\rPID|",
        "\rSFT|Relay Inc|2.0|RelayEngine|R2||20240201\rPID|",
    );
    let got = convert_text(&plan, &text);
    let devices = resource(&got["bundle"], "Device");
    let id_of = |name: &str| {
        devices
            .iter()
            .find(|d| d["deviceName"][0]["name"] == name)
            .and_then(|d| d["id"].as_str())
            .map(|id| format!("Device/{id}"))
            .unwrap_or_else(|| panic!("no Device {name}"))
    };
    let provenance = resource(&got["bundle"], "Provenance")
        .into_iter()
        .find(|p| p["agent"][0]["who"]["display"] == "v2fhir")
        .expect("the conversion's Provenance");
    let entities = provenance["entity"].as_array().expect("entities");
    assert_eq!(entities.len(), 3, "the message and two software entities");
    assert_eq!(entities[1]["role"], "source");
    assert_eq!(entities[1]["what"]["reference"], id_of("AcmeLIS").as_str());
    assert_eq!(entities[2]["role"], "derivation");
    assert_eq!(
        entities[2]["what"]["reference"],
        id_of("RelayEngine").as_str()
    );
    // No SFT field is left in the loss report (of SFT-1, an XON, the parts other than the name are).
    assert!(
        !lost_fields(&got["outcome"]).contains("SFT"),
        "{}",
        got["outcome"]
    );
}

/// Codes translated as the IG's ConceptMaps have them, including the codes they map to nothing.
#[test]
fn codes_follow_the_igs_concept_maps() {
    let plan = plan();
    let adt = input("tests/golden/adt_a01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    // Marital status (table 0002 → v3 MaritalStatus / NullFlavor).
    for (v2, system, code) in [
        (
            "M",
            "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
            "M",
        ),
        (
            "P",
            "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
            "T",
        ),
        (
            "T",
            "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
            "NAVU",
        ),
        (
            "O",
            "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
            "OTH",
        ),
        (
            "U",
            "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
            "UNK",
        ),
    ] {
        let text = adt.replace("|M^Married^HL70002|", &format!("|{v2}^^HL70002|"));
        let got = convert_text(&plan, &text);
        let coding = &resource(&got["bundle"], "Patient")[0]["maritalStatus"]["coding"][0];
        assert_eq!(
            (coding["system"].as_str(), coding["code"].as_str()),
            (Some(system), Some(code)),
            "{v2}"
        );
    }
    // Name type (table 0200 → name-use): MSK is anonymous; tribal (T) and unknown (U) names get no
    // use (not `temp` or `usual`), and are not reported.
    for (v2, want) in [
        ("L", Some("official")),
        ("MSK", Some("anonymous")),
        ("T", None),
        ("U", None),
    ] {
        let text = adt.replace(
            "DOE^JANE^QUINN^^DR^^L~",
            &format!("DOE^JANE^QUINN^^DR^^{v2}~"),
        );
        let got = convert_text(&plan, &text);
        let name = &resource(&got["bundle"], "Patient")[0]["name"][0];
        assert_eq!(name["family"], "DOE");
        assert_eq!(name["use"].as_str(), want, "{v2}");
        assert!(
            !got["outcome"].to_string().contains("NameUse"),
            "{v2}: {}",
            got["outcome"]
        );
    }
    // Patient class (table 0004): E, I, O, P are v3 ActCodes; the others stay table 0004 codes.
    for (v2, system, code) in [
        (
            "I",
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "IMP",
        ),
        (
            "E",
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "EMER",
        ),
        ("R", "http://terminology.hl7.org/CodeSystem/v2-0004", "R"),
        ("B", "http://terminology.hl7.org/CodeSystem/v2-0004", "B"),
    ] {
        let text = adt.replace("PV1|1|I|", &format!("PV1|1|{v2}|"));
        let got = convert_text(&plan, &text);
        let class = &resource(&got["bundle"], "Encounter")[0]["class"];
        assert_eq!(
            (class["system"].as_str(), class["code"].as_str()),
            (Some(system), Some(code)),
            "{v2}"
        );
    }
    // Relationship (table 0063): family roles are v3 RoleCodes; roles neither v3 nor table 0131
    // has stay table 0063 codes (they were all table 0131 "other").
    for (v2, system, code) in [
        (
            "SPO",
            "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
            "SPS",
        ),
        (
            "DOM",
            "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
            "SIGOTHR",
        ),
        (
            "CGV",
            "http://terminology.hl7.org/CodeSystem/v2-0063",
            "CGV",
        ),
        (
            "GRD",
            "http://terminology.hl7.org/CodeSystem/v2-0063",
            "GRD",
        ),
    ] {
        let text = adt.replace("|SPO^Spouse^HL70063|", &format!("|{v2}^^HL70063|"));
        let got = convert_text(&plan, &text);
        let person = resource(&got["bundle"], "RelatedPerson")
            .into_iter()
            .find(|p| p["name"][0]["family"] == "DOE" && p["name"][0]["given"][0] == "JOHN")
            .expect("the next of kin");
        let coding = &person["relationship"][0]["coding"][0];
        assert_eq!(
            (coding["system"].as_str(), coding["code"].as_str()),
            (Some(system), Some(code)),
            "{v2}"
        );
    }
    // Allergen type (table 0127): an animal allergy is `biologic`; a miscellaneous one has no
    // category (it was `medication`).
    for (v2, want) in [
        ("DA", Some("medication")),
        ("AA", Some("biologic")),
        ("MA", None),
    ] {
        let text = adt.replace("AL1|1|DA|", &format!("AL1|1|{v2}|"));
        let got = convert_text(&plan, &text);
        let allergy = &resource(&got["bundle"], "AllergyIntolerance")[0];
        assert_eq!(allergy["category"][0].as_str(), want, "{v2}");
        assert!(
            !got["outcome"].to_string().contains("AllergyCategory"),
            "{v2}"
        );
    }
    // Result status (table 0123): Y and Z are errors (no order, no patient), not final reports.
    let oru = input("tests/golden/oru_r01_lab.hl7");
    let obr25 = |status: &str| {
        let text = oru.replacen(
            "20240315142500-0500|||F\r",
            &format!("20240315142500-0500|||{status}\r"),
            1,
        );
        let got = convert_text(&plan, &text);
        let reports = resource(&got["bundle"], "DiagnosticReport");
        let panel = reports
            .iter()
            .find(|r| r["result"].is_array())
            .expect("the panel's report");
        (
            panel["status"].as_str().map(str::to_string),
            got["outcome"].to_string(),
        )
    };
    assert_eq!(obr25("F").0.as_deref(), Some("final"));
    let (status, outcome) = obr25("Y");
    assert_eq!(status.as_deref(), Some("unknown"));
    assert!(
        outcome.contains("'Y' has no entry in vocabulary DiagnosticReportStatus"),
        "{outcome}"
    );
    // A document's status is its OBX-11, table 0085: A (amended) is `amended`, not table 0123's
    // `partial` ("some results available").
    let text = oru.replace("^Base64^JVBERi0xLjQK||||||F", "^Base64^JVBERi0xLjQK||||||A");
    let got = convert_text(&plan, &text);
    let document = resource(&got["bundle"], "DiagnosticReport")
        .into_iter()
        .find(|r| r["presentedForm"].is_array())
        .expect("the document's report");
    assert_eq!(document["status"], "amended");
}

/// A family name's parts (FN.2–FN.5) are FHIR's extensions on `family`, the assembly order
/// (XPN.11) an extension of the name, and the name a person is called by (XPN.15) a second name
/// of use nickname rather than an extra given name (IG XPN[HumanName], FN[HumanName]).
#[test]
fn family_name_parts_assembly_order_and_called_by() {
    let plan = plan();
    let adt = input("tests/golden/adt_a01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let text = adt.replace(
        "|DOE^JANE^QUINN^^DR^^L~SMITH^JANE^^^^^M|",
        "|Berg&van der&Berg&de&Vries^Anna^^^^^L^^^^G^^^^Annie|",
    );
    let got = convert_text(&plan, &text);
    let names = resource(&got["bundle"], "Patient")[0]["name"]
        .as_array()
        .expect("names")
        .clone();
    assert_eq!(names.len(), 2, "{names:?}");
    let official = &names[0];
    assert_eq!(official["family"], "Berg");
    assert_eq!(official["given"], json!(["Anna"]));
    let ext = |url: &str| {
        official["_family"]["extension"]
            .as_array()
            .expect("family extensions")
            .iter()
            .find(|e| {
                e["url"] == format!("http://hl7.org/fhir/StructureDefinition/humanname-{url}")
            })
            .map(|e| e["valueString"].clone())
    };
    assert_eq!(ext("own-prefix"), Some(json!("van der")));
    assert_eq!(ext("own-name"), Some(json!("Berg")));
    assert_eq!(ext("partner-prefix"), Some(json!("de")));
    assert_eq!(ext("partner-name"), Some(json!("Vries")));
    assert_eq!(
        official["extension"][0],
        json!({"url": "http://hl7.org/fhir/StructureDefinition/humanname-assembly-order", "valueCode": "G"})
    );
    assert_eq!(names[1], json!({"given": ["Annie"], "use": "nickname"}));
    assert!(
        !got["outcome"].to_string().contains("PID-5"),
        "{}",
        got["outcome"]
    );
}

/// Of a mapped field, the loss report names the valued components nothing was made from, but not
/// a qualifier its rule read (CX.4.3) nor the table name beside a translated code (PID-16.3).
#[test]
fn components_nothing_was_made_from_are_reported() {
    let plan = plan();
    let adt = input("tests/golden/adt_a01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    // CX.6 (assigning facility) sent with the MRN; the golden PID-3 sends CX.4 with its type ISO.
    let text = adt.replace(
        "|MRN12345^^^GENHOSP^MR~",
        "|MRN12345^^^GENHOSP&1.2.3&ISO^MR^EASTWING~",
    );
    let got = convert_text(&plan, &text);
    let parts: Vec<String> = got["outcome"]["issue"]
        .as_array()
        .expect("issues")
        .iter()
        .filter_map(|i| i["diagnostics"].as_str())
        .filter_map(|d| d.strip_prefix("component(s) not mapped: "))
        .flat_map(|d| d.split(", ").map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert!(parts.contains(&"PID-3.6".to_string()), "{parts:?}");
    assert!(!parts.iter().any(|p| p.starts_with("PID-3.4")), "{parts:?}");
    assert!(!parts.iter().any(|p| p.starts_with("PID-16")), "{parts:?}");
    // Nor the text and table beside a code a vocabulary translated (F^Female^HL70001 → female).
    let got = convert_text(
        &plan,
        &text.replace("|19800102|F|", "|19800102|F^Female^HL70001|"),
    );
    assert_eq!(resource(&got["bundle"], "Patient")[0]["gender"], "female");
    assert!(
        !got["outcome"].to_string().contains("PID-8"),
        "{}",
        got["outcome"]
    );
    // The identifier itself is there, with the system CX.4.2 gives as an ISO OID.
    let patient = &resource(&got["bundle"], "Patient")[0];
    assert_eq!(
        patient["identifier"][0]["system"], "urn:oid:1.2.3",
        "{patient}"
    );
    // A universal id typed GUID is the system as a UUID URN (as one typed ISO is an OID URN).
    let text = adt.replace(
        "|MRN12345^^^GENHOSP^MR~",
        "|MRN12345^^^GENHOSP&426d2726-51fc-89fe-a946-8596e80a80eb&GUID^MR~",
    );
    let got = convert_text(&plan, &text);
    assert_eq!(
        resource(&got["bundle"], "Patient")[0]["identifier"][0]["system"],
        "urn:uuid:426d2726-51fc-89fe-a946-8596e80a80eb"
    );
    assert!(
        !got["outcome"].to_string().contains("PID-3."),
        "{}",
        got["outcome"]
    );
    // The same message without CX.6 reports no part of PID-3.
    let got = convert_text(&plan, &adt);
    assert!(
        !got["outcome"].to_string().contains("PID-3."),
        "{}",
        got["outcome"]
    );
}

/// CX.2/.3 (check digit and scheme) are the IG's identifier extensions; of an XCN, the degree is
/// also a qualification (table 0360), the professional suffix (XCN.21) a suffix and XCN.19/20 the
/// name's period (IG CX[Identifier], XCN[Practitioner]).
#[test]
fn check_digits_degrees_and_professional_suffixes() {
    let plan = plan();
    let adt = input("tests/golden/adt_a01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let text = adt
        .replace("|MRN12345^^^GENHOSP^MR~", "|MRN12345^7^M10^GENHOSP^MR~")
        .replace(
            "|1234^ATTEND^ALICE^^^DR^^^NPI|",
            "|1234^ATTEND^ALICE^^^DR^MD^^NPI^^^^^^^^^^20200101^20301231^FACP|",
        );
    let got = convert_text(&plan, &text);
    let patient = &resource(&got["bundle"], "Patient")[0];
    assert_eq!(
        patient["identifier"][0]["extension"],
        json!([
            {"url": "http://hl7.org/fhir/StructureDefinition/identifier-checkDigit", "valueString": "7"},
            {"url": "http://hl7.org/fhir/StructureDefinition/namingsystem-checkDigit", "valueString": "M10"}
        ])
    );
    let attending = resource(&got["bundle"], "Practitioner")
        .into_iter()
        .find(|p| p["name"][0]["family"] == "ATTEND")
        .expect("the attending doctor");
    assert_eq!(attending["name"][0]["suffix"], json!(["MD", "FACP"]));
    assert_eq!(attending["name"][0]["period"]["start"], "2020-01-01");
    assert_eq!(
        attending["qualification"][0]["code"]["coding"][0],
        json!({"system": "http://terminology.hl7.org/CodeSystem/v2-0360", "code": "MD"})
    );
    assert!(
        !got["outcome"].to_string().contains("PV1-7."),
        "{}",
        got["outcome"]
    );
    // PID-20 (driver's licence, DLN): DLN.2, the issuing state, is who issued it.
    let text = adt.replace(
        "|M^Married^HL70002||||||N^",
        "|M^Married^HL70002||||D1234567^NC&North Carolina&FIPS5_2^20301231||N^",
    );
    let got = convert_text(&plan, &text);
    let licence = resource(&got["bundle"], "Patient")[0]["identifier"]
        .as_array()
        .expect("identifiers")
        .iter()
        .find(|i| i["type"]["coding"][0]["code"] == "DL")
        .cloned()
        .expect("the driver's licence");
    assert_eq!(licence["value"], "D1234567");
    assert_eq!(licence["assigner"]["display"], "North Carolina");
    assert_eq!(
        licence["assigner"]["identifier"],
        json!({"system": "urn:oid:2.16.840.1.113883.6.92", "value": "NC"})
    );
    assert_eq!(licence["period"]["end"], "2030-12-31");
    assert!(
        !got["outcome"].to_string().contains("PID-20"),
        "{}",
        got["outcome"]
    );
    // PL.7/PL.8: the building and floor are identifiers of the visit's Location, like room and bed.
    let text = adt.replace("|4EAST^401^B^GENHOSP|", "|4EAST^401^B^GENHOSP^^^MAIN^3|");
    let got = convert_text(&plan, &text);
    let location = resource(&got["bundle"], "Location")
        .into_iter()
        .find(|l| l["name"] == "4EAST")
        .expect("the ward's Location");
    let ids: Vec<(String, String)> = location["identifier"]
        .as_array()
        .expect("identifiers")
        .iter()
        .map(|i| {
            (
                i["type"]["text"].as_str().unwrap_or("").to_string(),
                i["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for want in [("building", "MAIN"), ("floor", "3")] {
        assert!(ids.contains(&(want.0.into(), want.1.into())), "{ids:?}");
    }
    assert!(
        !got["outcome"].to_string().contains("PV1-3."),
        "{}",
        got["outcome"]
    );
}

/// A coded field bound to one HL7 table keeps, like any CWE, the code system version (CWE.7) and
/// the sender's alternate code (CWE.4–.6).
#[test]
fn table_bound_codes_keep_their_alternate_code_and_version() {
    let plan = plan();
    let adt = input("tests/golden/adt_a01.hl7")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let text = adt.replace(
        "||MED|||",
        "||MED^Medicine^HL70069^IM^Internal medicine^L^2.5|||",
    );
    let got = convert_text(&plan, &text);
    let service = &resource(&got["bundle"], "Encounter")[0]["serviceType"];
    assert_eq!(
        service["coding"],
        json!([
            {"code": "MED", "display": "Medicine", "system": "http://terminology.hl7.org/CodeSystem/v2-0069", "version": "2.5"},
            {"code": "IM", "display": "Internal medicine"}
        ]),
        "{service}"
    );
    assert!(
        !got["outcome"].to_string().contains("PV1-10"),
        "{}",
        got["outcome"]
    );
    // CWE[Coding] (here the language as sent, beside its BCP-47 tag) keeps CWE.7 as the version.
    let text = adt.replace("|eng^English^ISO6392|", "|ara^Arabic^HL70296^^^^v2|");
    let got = convert_text(&plan, &text);
    let language = &resource(&got["bundle"], "Patient")[0]["communication"][0]["language"];
    let as_sent = language["coding"]
        .as_array()
        .expect("codings")
        .iter()
        .find(|c| c["system"] == "http://terminology.hl7.org/CodeSystem/v2-0296")
        .cloned()
        .expect("the code as sent");
    assert_eq!(as_sent["version"], "v2", "{language}");
    assert!(
        !got["outcome"].to_string().contains("PID-15"),
        "{}",
        got["outcome"]
    );
}

/// A coding system sent by its OID or URI in place of a table 0396 name is that system
/// (`CodingSystem.csv`'s `#! unmatched: uri`); a name that is neither stays reported; the
/// second alternate code (CWE.10–.13) is the third coding, as the IG maps it.
#[test]
fn coding_systems_sent_as_oids_or_uris_and_second_alternates() {
    let plan = plan();
    let got = convert_text(&plan, &input("tests/golden/oru_r01_coding_systems.hl7"));
    let observations: Vec<&Value> = got["bundle"]["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Observation")
        .collect();
    assert_eq!(observations.len(), 3);
    let codings = |v: &Value| -> Vec<(String, String)> {
        v["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["code"].as_str().unwrap_or("").to_string(),
                    c["system"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let pairs = |xs: &[(&str, &str)]| -> Vec<(String, String)> {
        xs.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        codings(&observations[0]["code"]),
        pairs(&[("2345-7", "http://loinc.org"), ("GLU", ""), ("G-1", "")])
    );
    assert_eq!(observations[0]["code"]["coding"][2]["version"], "3");
    assert_eq!(
        codings(&observations[1]["code"]),
        pairs(&[("94500-6", "urn:oid:2.16.840.1.113883.6.1")])
    );
    assert_eq!(
        codings(&observations[1]["valueCodeableConcept"]),
        pairs(&[
            ("260373001", "http://snomed.info/sct"),
            ("DET", "urn:oid:2.16.840.1.113883.12.78")
        ])
    );
    assert_eq!(codings(&observations[2]["code"]), pairs(&[("XYZ-1", "")]));
    let outcome = got["outcome"].to_string();
    assert!(
        outcome.contains("code 'NOTASYSTEM' has no entry in vocabulary CodingSystem"),
        "{outcome}"
    );
    assert!(!outcome.contains("2.16.840.1.113883.6.1"), "{outcome}");
}

/// A reaction's severity (IAR-2) through the IG's AllergySeverity map: MI is mild; U (unknown),
/// which the map gives no severity, leaves the reaction without one and reports nothing.
#[test]
fn an_unknown_reaction_severity_is_left_out_silently() {
    let plan = plan();
    let reaction = |severity: &str| {
        let text = [
            "MSH|^~\\&|ADTApp|HOSP|EHR|HOSP|20240401080000||ADT^A60^ADT_A60|A60-1|P|2.8",
            "PID|1||MRN7^^^HOSP^MR||ROE^RITA||19700101|F",
            "IAM|1|FA^Food allergy^HL70127|12345^Peanut^L|||A^Add^HL70206|56789^Cona^L",
            &format!("IAR|34567^Skin rash^L|{severity}|AL^Allergy"),
        ]
        .join("\r");
        let got = convert_text(&plan, &text);
        let allergies = resource(&got["bundle"], "AllergyIntolerance");
        assert_eq!(allergies.len(), 1, "{}", got["outcome"]);
        (
            allergies[0]["reaction"][0].clone(),
            got["outcome"].to_string(),
        )
    };
    let (r, _) = reaction("MI^Mild");
    assert_eq!(r["severity"], "mild", "{r}");
    let (r, outcome) = reaction("U^Unknown");
    assert!(r.get("severity").is_none(), "{r}");
    assert_eq!(r["manifestation"][0]["coding"][0]["code"], "34567", "{r}");
    assert!(!outcome.contains("ReactionSeverity"), "{outcome}");
}

/// A start or an end without the other and a service duration (TQ1-6): the duration gives the
/// other bound (IG TQ1[ServiceRequest]: TQ1-7 + TQ1-6, TQ1-8 - TQ1-6), and TQ1-6 is consumed.
#[test]
fn a_service_duration_gives_the_missing_bound() {
    let plan = plan();
    let order = |tq1: &str| {
        let (sr, outcome) = timed_order(&plan, tq1);
        (sr["occurrenceTiming"]["repeat"].clone(), outcome)
    };
    let (repeat, outcome) =
        order("TQ1|1||TID&three times a day&HL70335|||2^h&hour&UCUM|202404011000+0200");
    assert_eq!(
        repeat["boundsPeriod"],
        json!({"start": "2024-04-01T10:00:00+02:00", "end": "2024-04-01T12:00:00+02:00"}),
        "{repeat}"
    );
    assert!(repeat.get("boundsDuration").is_none(), "{repeat}");
    assert!(!lost_fields(&outcome).contains("TQ1-6"), "{outcome}");
    let (repeat, _) = order("TQ1|1||TID&three times a day&HL70335|||3^d&day&UCUM||20240410");
    assert_eq!(
        repeat["boundsPeriod"],
        json!({"end": "2024-04-10", "start": "2024-04-07"}),
        "{repeat}"
    );
    // Both bounds sent: the duration adds nothing, and stays in the loss report (the IG maps it
    // only where a bound is missing).
    let (repeat, outcome) = order(
        "TQ1|1||TID&three times a day&HL70335|||2^h&hour&UCUM|202404011000+0200|202404011100+0200",
    );
    assert_eq!(
        repeat["boundsPeriod"]["end"], "2024-04-01T11:00:00+02:00",
        "{repeat}"
    );
    assert!(lost_fields(&outcome).contains("TQ1-6"), "{outcome}");
}

/// A booked resource's period ends after its duration (IG AIP/AIL/AIG[Appointment]: the start
/// plus AIx-9 in the units of AIx-10; AIG-11/12): the FHIR-Converter SIU sample books each for
/// 50 minutes.
#[test]
fn a_booked_resource_period_ends_after_its_duration() {
    let plan = plan();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/fhir-converter/SIU-S12-01.hl7"),
    )
    .expect("SIU sample");
    let got = convert_text(&plan, &text.replace("\r\n", "\r").replace('\n', "\r"));
    let appointments = resource(&got["bundle"], "Appointment");
    assert_eq!(appointments.len(), 1, "{}", got["outcome"]);
    let periods: Vec<&Value> = appointments[0]["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("period"))
        .collect();
    assert_eq!(periods.len(), 3, "AIG, AIL and AIP: {}", appointments[0]);
    for p in periods {
        assert_eq!(
            *p,
            json!({"start": "2021-09-24T09:30:00+02:15", "end": "2021-09-24T10:20:00+02:15"})
        );
    }
    let lost = lost_fields(&got["outcome"]);
    for f in ["AIP-9", "AIP-10", "AIL-9", "AIL-10", "AIG-11", "AIG-12"] {
        assert!(!lost.contains(f), "{f} consumed: {lost}");
    }
}
