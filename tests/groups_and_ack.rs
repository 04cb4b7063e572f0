//! Segment grouping by message structure, and the ACK builder.

use v2fhir::v2::ack::{self, AckCode, AckOptions};
use v2fhir::v2::structure::GroupInstance;
use v2fhir::v2::{self, Code, Message, Structures};

fn ids(m: &Message<'_>, g: &GroupInstance) -> Vec<String> {
    g.segments()
        .map(|i| m.segment(i).map(|s| s.id().to_string()).unwrap_or_default())
        .collect()
}

const ORU: &str = "MSH|^~\\&|LAB|FAC|EHR|FAC|20240101||ORU^R01^ORU_R01|C1|P|2.5.1\r\
PID|1||123^^^H^MR\r\
PV1|1|O\r\
ORC|RE|1\r\
OBR|1|1||GLU\r\
NTE|1||order note\r\
OBX|1|NM|GLU||5.5|mmol/L\r\
NTE|1||obs note\r\
OBX|2|NM|NA||140|mmol/L\r\
SPM|1|S1||BLD\r\
OBX|3|NM|TEMP||4|Cel\r\
ZXY|1|site data\r\
OBR|2|2||CBC\r\
OBX|1|NM|WBC||7\r";

#[test]
fn oru_groups_follow_the_structure() {
    let p = v2::parse(ORU.as_bytes()).expect("parse");
    let m = &p.messages[0];
    let g = Structures::builtin().group(m);
    assert_eq!(g.structure.as_deref(), Some("ORU_R01"));
    let results = g.root.find_all("PATIENT_RESULT");
    assert_eq!(results.len(), 1);
    let orders = g.root.find_all("PATIENT_RESULT/ORDER_OBSERVATION");
    assert_eq!(orders.len(), 2);
    assert_eq!(ids(m, orders[0]), ["OBR", "NTE"]);
    // v2.8.2: the ORC opens the order's COMMON_ORDER group.
    let common = orders[0].find_all("COMMON_ORDER");
    assert_eq!(common.len(), 1);
    assert_eq!(ids(m, common[0]), ["ORC"]);
    let obs = orders[0].find_all("OBSERVATION");
    assert_eq!(obs.len(), 2);
    assert_eq!(ids(m, obs[0]), ["OBX", "NTE"]);
    // OBX after SPM belongs to the specimen, not lost and not misfiled as an observation.
    let spm = orders[0].find_all("SPECIMEN");
    assert_eq!(spm.len(), 1);
    assert_eq!(ids(m, spm[0]), ["SPM", "OBX", "ZXY"]);
    assert_eq!(ids(m, orders[1]), ["OBR"]);
    assert_eq!(orders[1].find_all("OBSERVATION").len(), 1);
    let visit = g.root.find_all("PATIENT_RESULT/PATIENT/VISIT");
    assert_eq!(ids(m, visit[0]), ["PV1"]);
    // The Z-segment is reported as such.
    assert!(
        g.diagnostics
            .iter()
            .any(|d| d.code == Code::ZSegment && d.location.segment.as_deref() == Some("ZXY"))
    );
}

fn all_indexes(g: &GroupInstance, out: &mut Vec<usize>) {
    for item in &g.items {
        match item {
            v2::GroupItem::Segment(i) => out.push(*i),
            v2::GroupItem::Group(sub) => all_indexes(sub, out),
        }
    }
}

#[test]
fn grouping_keeps_every_segment_in_order() {
    // Every corpus message: the grouped tree holds each segment exactly once, in message order.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut checked = 0;
    for entry in walk(&dir) {
        let bytes = std::fs::read(&entry).expect("read");
        let Ok(p) = v2::parse(&bytes) else { continue };
        for m in &p.messages {
            let g = Structures::builtin().group(m);
            let mut idx = Vec::new();
            all_indexes(&g.root, &mut idx);
            assert_eq!(idx, (0..m.len()).collect::<Vec<_>>(), "{}", entry.display());
            checked += 1;
        }
    }
    assert!(checked > 250, "checked {checked} messages");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "hl7" || x == "bad") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn structure_from_trigger_table_when_msh_9_3_is_missing() {
    let cases = [
        ("ADT^A04", Some("ADT_A01")),
        ("ADT^A08", Some("ADT_A01")),
        ("ADT^A28", Some("ADT_A05")),
        ("ADT^A07", Some("ADT_A06")),
        ("ADT^A40", Some("ADT_A39")),
        ("SIU^S14", Some("SIU_S12")),
        ("MDM^T06", Some("MDM_T02")),
        ("QBP^Q22", Some("QBP_Q21")),
        ("ACK^A01", Some("ACK")),
        ("ACK", Some("ACK")),
        ("ZZZ^Z99", None),
    ];
    for (t, want) in cases {
        let input = format!("MSH|^~\\&|A|B|C|D|2024||{t}|1|P|2.3\rPID|1\r");
        let p = v2::parse(input.as_bytes()).expect("parse");
        let g = Structures::builtin().group(&p.messages[0]);
        assert_eq!(g.structure.as_deref(), want, "{t}");
        if want.is_none() {
            assert!(
                g.diagnostics
                    .iter()
                    .any(|d| d.code == Code::UnknownStructure),
                "{t}"
            );
        }
    }
}

/// A group tree as text: `NAME(SEG SEG CHILD(...))`.
fn tree(m: &Message<'_>, g: &GroupInstance) -> String {
    use v2fhir::v2::structure::GroupItem;
    let parts: Vec<String> = g
        .items
        .iter()
        .map(|i| match i {
            GroupItem::Segment(s) => m
                .segment(*s)
                .map(|s| s.id().to_string())
                .unwrap_or_default(),
            GroupItem::Group(c) => tree(m, c),
        })
        .collect();
    format!("{}({})", g.name, parts.join(" "))
}

/// Where a segment could open more than one group, the grouping looks at the segments that
/// follow. Each case: the message type, the segments after MSH, the expected tree below the root
/// (its top-level items), and whether grouping reported anything.
#[test]
fn ambiguous_segments_go_where_the_following_segments_fit() {
    let cases: &[(&str, &str, &str, bool)] = &[
        // A second order after the first one's specimen: TQ1 and OBR fit only a new ORDER
        // (ORDER_PRIOR takes TQ1 only after its OBR).
        (
            "OMG^O19^OMG_O19",
            "PID ORC OBR SPM SAC ORC TQ1 OBR OBX",
            "PATIENT(PID) ORDER(ORC OBR SPECIMEN(SPM CONTAINER(SAC))) ORDER(ORC TIMING(TQ1) OBR OBSERVATION(OBX))",
            false,
        ),
        // ORC OBR OBX fits a new ORDER and the first order's PRIOR_RESULT equally: a new
        // ORDER, which an ORC must start, rather than an ORDER_PRIOR, which it may.
        (
            "OMG^O19^OMG_O19",
            "PID ORC OBR OBX ORC OBR OBX",
            "PATIENT(PID) ORDER(ORC OBR OBSERVATION(OBX)) ORDER(ORC OBR OBSERVATION(OBX))",
            false,
        ),
        // A prior result introduced by its visit stays a prior result: a new ORDER there would
        // leave PRIOR_RESULT without its required ORDER_PRIOR.
        (
            "OMG^O19^OMG_O19",
            "PID ORC OBR PV1 ORC OBR OBX",
            "PATIENT(PID) ORDER(ORC OBR PRIOR_RESULT(PATIENT_VISIT_PRIOR(PV1) ORDER_PRIOR(ORC OBR OBSERVATION_PRIOR(OBX))))",
            false,
        ),
        // The same in OML^O21, where the order's OBR has a group of its own.
        (
            "OML^O21^OML_O21",
            "PID ORC OBR SPM ORC TQ1 OBR",
            "PATIENT(PID) ORDER(ORC OBSERVATION_REQUEST(OBR SPECIMEN(SPM))) ORDER(ORC TIMING(TQ1) OBSERVATION_REQUEST(OBR))",
            false,
        ),
        // Both places optional: the innermost (the PV2 belongs to the visit just opened).
        (
            "BAR^P01^BAR_P01",
            "EVN PID PV1 PV2 DG1 PV1",
            "EVN PID VISIT(PV1 PV2 DG1) VISIT(PV1)",
            false,
        ),
    ];
    for (ty, segs, want, reported) in cases {
        let mut text = format!("MSH|^~\\&|A|B|C|D|20240101||{ty}|1|P|2.5.1\r");
        for s in segs.split(' ') {
            text.push_str(s);
            text.push_str("|1\r");
        }
        let p = v2::parse(text.as_bytes()).expect("parse");
        let m = &p.messages[0];
        let g = Structures::builtin().group(m);
        let got = tree(m, &g.root);
        let inner = got
            .strip_prefix(&format!("{}(MSH ", g.root.name))
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(&got);
        assert_eq!(inner, *want, "{ty}: {segs}");
        assert_eq!(
            !g.diagnostics.is_empty(),
            *reported,
            "{ty}: {segs}: {:?}",
            g.diagnostics
        );
    }
}

#[test]
fn adt_groups_and_unexpected_segments() {
    let input = "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rEVN|A01\rPID|1\rPV1|1\rPR1|1\rROL|1\rPR1|2\rIN1|1\rIN2|1\rIN1|2\rNK1|1\r";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let m = &p.messages[0];
    let g = Structures::builtin().group(m);
    assert_eq!(g.root.find_all("PROCEDURE").len(), 2);
    assert_eq!(ids(m, g.root.find_all("PROCEDURE")[0]), ["PR1", "ROL"]);
    let ins = g.root.find_all("INSURANCE");
    assert_eq!(ins.len(), 2);
    // NK1 after INSURANCE is out of order: kept in place, reported.
    assert_eq!(ids(m, ins[1]), ["IN1", "NK1"]);
    let d: Vec<_> = g
        .diagnostics
        .iter()
        .filter(|d| d.code == Code::UnexpectedSegment)
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].location.segment.as_deref(), Some("NK1"));
    assert_eq!(d[0].location.segment_seq, Some(11));
}

fn opts() -> AckOptions {
    AckOptions {
        control_id: "ACK1".into(),
        timestamp: "20240101000000+0000".into(),
        max_errors: 10,
    }
}

fn segs(ack: &str) -> Vec<Vec<String>> {
    ack.split('\r')
        .filter(|s| !s.is_empty())
        .map(|s| s.split('|').map(String::from).collect())
        .collect()
}

#[test]
fn ack_original_mode_accept() {
    let input = "MSH|^~\\&|SAPP|SFAC|RAPP|RFAC|2024||ADT^A01^ADT_A01|CTRL9|P|2.5.1||||||UNICODE UTF-8\rEVN|A01\rPID|1\rPV1|1\r";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let m = &p.messages[0];
    let plan = ack::plan(m, &[]);
    assert_eq!(plan.code, AckCode::AA);
    assert!(plan.send);
    let a = ack::build(m, &plan, &opts());
    let s = segs(&a);
    assert_eq!(s.len(), 2, "{a}");
    let msh = &s[0];
    assert_eq!(&msh[1], "^~\\&");
    assert_eq!(
        (
            msh[2].as_str(),
            msh[3].as_str(),
            msh[4].as_str(),
            msh[5].as_str()
        ),
        ("RAPP", "RFAC", "SAPP", "SFAC")
    );
    assert_eq!(msh[8], "ACK^A01^ACK");
    assert_eq!(msh[9], "ACK1");
    assert_eq!(msh[10], "P");
    assert_eq!(msh[11], "2.5.1");
    assert_eq!(msh[17], "UNICODE UTF-8");
    assert_eq!(s[1], ["MSA", "AA", "CTRL9"]);
    // The ACK is itself a parsable message.
    let back = v2::parse(a.as_bytes()).expect("ack parses");
    assert_eq!(
        back.messages[0].header().message_code.as_deref(),
        Some("ACK")
    );
}

#[test]
fn ack_rejects_unsupported_processing_id_with_err() {
    let input = "MSH|^~\\&|S|F|R|G|2024||ADT^A01|C1|X|2.5.1\rPID|1\r";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let plan = ack::plan(&p.messages[0], &[]);
    assert_eq!(plan.code, AckCode::AR);
    let s = segs(&ack::build(&p.messages[0], &plan, &opts()));
    assert_eq!(s[1][1], "AR");
    let err = &s[2];
    assert_eq!(err[0], "ERR");
    assert_eq!(err[2], "MSH^1^11^1", "ERR-2 location");
    assert_eq!(err[3], "202^Unsupported processing id^HL70357");
    assert_eq!(err[4], "E");
}

#[test]
fn ack_error_for_error_diagnostics_and_old_version_err_format() {
    // Invalid encoding characters are an error-level finding → AE; v2.3 uses ERR-1 (ELD).
    let input = "MSH|&&&&|S|F|R|G|2024||ADT^A01|C2|P|2.3\rPID|1\r";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let plan = ack::plan(&p.messages[0], &[]);
    assert_eq!(plan.code, AckCode::AE);
    let s = segs(&ack::build(&p.messages[0], &plan, &opts()));
    assert_eq!(s[0][8], "ACK^A01", "no structure component before v2.4");
    assert_eq!(s[1][1], "AE");
    assert_eq!(s[1][2], "C2");
    assert_eq!(s[2][1], "MSH^1^2^102&Data type error&HL70357");
}

#[test]
fn ack_enhanced_mode() {
    // (MSH-15, processing id, expected code, sent?)
    let cases = [
        ("AL", "P", AckCode::CA, true),
        ("NE", "P", AckCode::CA, false),
        ("ER", "P", AckCode::CA, false),
        ("ER", "X", AckCode::CR, true),
        ("SU", "P", AckCode::CA, true),
        ("SU", "X", AckCode::CR, false),
    ];
    for (msh15, pid, code, send) in cases {
        let input = format!("MSH|^~\\&|S|F|R|G|2024||ADT^A01|C3|{pid}|2.5.1|||{msh15}|AL\rPID|1\r");
        let p = v2::parse(input.as_bytes()).expect("parse");
        let plan = ack::plan(&p.messages[0], &[]);
        assert_eq!(
            (plan.code, plan.send),
            (code, send),
            "MSH-15 {msh15}, MSH-11 {pid}"
        );
    }
}

#[test]
fn ack_keeps_inbound_delimiters_and_escapes_values() {
    let input = "MSH^~|\\&^S\\F\\X^F^R^G^2024^^ADT~A24^C4^P^2.4\rPID^1\r";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let m = &p.messages[0];
    let a = ack::build(m, &ack::plan(m, &[]), &opts());
    assert!(a.starts_with("MSH^~|\\&^R^G^S\\F\\X^F^"), "{a}");
    let back = v2::parse(a.as_bytes()).expect("parse ack");
    assert_eq!(
        back.messages[0]
            .header()
            .receiving_application
            .namespace_id
            .as_deref(),
        Some("S^X")
    );
}

#[test]
fn reject_without_msh() {
    let a = ack::reject_unparsable("no usable MSH segment", &opts());
    let s = segs(&a);
    assert_eq!(s[1], ["MSA", "AR"]);
    assert_eq!(s[2][3], "100^Segment sequence error^HL70357");
    assert!(v2::parse(a.as_bytes()).is_ok());
}

/// A message that declares OUL_R22 (specimens first) but lays out its orders and results first,
/// as OUL_R24 does, is read as OUL_R24 (`fallback` in the structure files) and the outcome
/// says so; one that follows OUL_R22 keeps it, and a fallback is taken only when it places more.
#[test]
fn a_declared_structure_the_segments_do_not_follow_falls_back_to_a_listed_one() {
    let r24_layout = "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240101||OUL^R22^OUL_R22|1|P|2.5.1\r\
PID|1||123^^^H^MR\rPV1|1|O\rOBR|1|O1|F1|GLU^Glucose^L\rOBX|1|NM|GLU||5.5|mmol/L|||||F\r\
OBX|2|NM|NA||140|mmol/L|||||F\r";
    let p = v2::parse(r24_layout.as_bytes()).expect("parse");
    let m = &p.messages[0];
    let g = Structures::builtin().group(m);
    assert_eq!(g.structure.as_deref(), Some("OUL_R24"));
    let results = g.root.find_all("ORDER/RESULT");
    assert_eq!(results.len(), 2, "{g:#?}");
    let fallback: Vec<_> = g
        .diagnostics
        .iter()
        .filter(|d| d.code == Code::StructureFallback)
        .collect();
    assert_eq!(fallback.len(), 1);
    assert!(
        fallback[0]
            .message
            .contains("do not follow OUL_R22 (4 out of place or missing); read as OUL_R24, which places every one"),
        "{}",
        fallback[0].message
    );
    assert_eq!(fallback[0].location.line, 1);
    // Following the declared structure: no fallback.
    let r22 = "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240101||OUL^R22^OUL_R22|2|P|2.5.1\r\
PID|1||123^^^H^MR\rSPM|1|S1||SER\rOBR|1|O1|F1|GLU^Glucose^L\rOBX|1|NM|GLU||5.5|mmol/L|||||F\r";
    let p = v2::parse(r22.as_bytes()).expect("parse");
    let g = Structures::builtin().group(&p.messages[0]);
    assert_eq!(g.structure.as_deref(), Some("OUL_R22"));
    assert!(
        !g.diagnostics
            .iter()
            .any(|d| d.code == Code::StructureFallback)
    );
    // Out of place in every OUL structure alike (an ORU segment order): the declared one stays.
    let neither = "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240101||OUL^R22^OUL_R22|3|P|2.5.1\r\
PID|1||123^^^H^MR\rNK1|1\rPID|2\r";
    let p = v2::parse(neither.as_bytes()).expect("parse");
    let g = Structures::builtin().group(&p.messages[0]);
    assert_eq!(g.structure.as_deref(), Some("OUL_R22"));
}
