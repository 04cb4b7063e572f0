//! FHIR → HL7 v2: Observations written by device and app backends become one ORU^R01 for the
//! EHR, with a PATIENT_RESULT group per patient (PID from the Patient the gateway holds) and an
//! OBX per Observation (one per component for panels such as blood pressure). Pure: the caller
//! finds the Patients and supplies the code tables (the mapping set's vocabularies read
//! backwards, see [`Reverse`]).

use crate::v2::delims::Delimiters;
use crate::v2::er7::{self, Leaf, OwnedField, OwnedSegment, field_components, field_text};
use serde_json::Value;
use std::collections::HashMap;

/// FHIR codes → HL7 v2 codes, by vocabulary name (`AdministrativeSex`, `ObservationStatus`,
/// `CodingSystem` for system URIs → table 0396 names).
pub trait Reverse {
    /// The v2 code for `fhir_code` in `vocab`, if the vocabulary has one.
    fn v2_code(&self, vocab: &str, fhir_code: &str) -> Option<String>;
}

/// MSH of the message built.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// MSH-7 (DTM).
    pub timestamp: String,
    /// MSH-10.
    pub control_id: String,
}

/// The Observations of a stored request's Bundle (entries not deleted), in entry order.
pub fn observations(bundle: &Value) -> Vec<&Value> {
    written(bundle, "Observation")
}

/// The resources of type `ty` a stored request's Bundle wrote (entries not deleted), in entry
/// order.
pub(crate) fn written<'b>(bundle: &'b Value, ty: &str) -> Vec<&'b Value> {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["request"]["method"] != "DELETE")
                .map(|e| &e["resource"])
                .filter(|r| r["resourceType"] == ty)
                .collect()
        })
        .unwrap_or_default()
}

/// The Patient ids (`Patient/<id>` → `<id>`) the Observations are about, in first-seen order.
pub fn subjects(observations: &[&Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in observations {
        if let Some(id) = patient_id(o)
            && !out.iter().any(|x| x == id)
        {
            out.push(id.to_string());
        }
    }
    out
}

fn patient_id(o: &Value) -> Option<&str> {
    o["subject"]["reference"].as_str()?.strip_prefix("Patient/")
}

/// Patients written in the same Bundle as the Observations, by id.
pub fn bundled_patients(bundle: &Value) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for e in bundle["entry"].as_array().into_iter().flatten() {
        let r = &e["resource"];
        if r["resourceType"] == "Patient"
            && let Some(id) = r["id"].as_str()
        {
            out.insert(id.to_string(), r.clone());
        }
    }
    out
}

/// One ORU^R01 for `observations`, their Patients in `patients` (by id). `Err` says which
/// Observation cannot be sent and why (no Patient subject, a Patient the gateway does not hold,
/// or nothing an OBX can carry).
pub fn build(
    observations: &[&Value],
    patients: &HashMap<String, Value>,
    header: &Header,
    codes: &dyn Reverse,
) -> Result<String, String> {
    if observations.is_empty() {
        return Err("the request holds no Observation".into());
    }
    let mut segs = vec![msh_segment(header, &["ORU", "R01", "ORU_R01"])];
    // Group by patient, in first-seen order.
    let mut groups: Vec<(&str, Vec<&Value>)> = Vec::new();
    for (n, o) in observations.iter().enumerate() {
        let what = format!("Observation/{}", o["id"].as_str().unwrap_or("?"));
        let Some(pid) = patient_id(o) else {
            return Err(format!(
                "{what} (entry {n}) has no Patient subject: an ORU^R01 needs a PID"
            ));
        };
        if !patients.contains_key(pid) {
            return Err(format!(
                "{what}: its subject Patient/{pid} is not in the gateway's store (send the patient's ADT first, then reprocess)"
            ));
        }
        match groups.iter_mut().find(|(p, _)| *p == pid) {
            Some((_, g)) => g.push(o),
            None => groups.push((pid, vec![o])),
        }
    }
    for (i, (pid, obs)) in groups.iter().enumerate() {
        let patient = patients.get(*pid).unwrap_or(&Value::Null);
        segs.push(pid_segment(i + 1, patient, codes));
        segs.push(obr_segment(&header.control_id, i + 1, obs, codes));
        let mut set_id = 0;
        for (k, o) in obs.iter().enumerate() {
            let what = format!("Observation/{}", o["id"].as_str().unwrap_or("?"));
            let rows = obx_rows(o, codes);
            if rows.is_empty() {
                return Err(format!(
                    "{what} has no value an OBX can carry (value[x] of a kind not supported, and no components)"
                ));
            }
            let many = rows.len() > 1;
            for mut obx in rows {
                set_id += 1;
                obx.fields[0] = field_text(set_id.to_string());
                if many {
                    obx.fields[3] = field_text((k + 1).to_string());
                }
                segs.push(obx);
            }
            for note in o["note"].as_array().into_iter().flatten() {
                if let Some(t) = note["text"].as_str() {
                    segs.push(OwnedSegment {
                        id: "NTE".into(),
                        fields: vec![field_text(set_id.to_string()), vec![], field_text(t)],
                    });
                }
            }
        }
    }
    Ok(er7::write_message(&segs, &Delimiters::default()))
}

/// MSH of a message the gateway builds (HL7 2.5.1, processing id P), of `message_type`
/// (MSH-9 components).
pub(crate) fn msh_segment(header: &Header, message_type: &[&str]) -> OwnedSegment {
    let mut msh = OwnedSegment {
        id: "MSH".into(),
        fields: vec![vec![]; 12],
    };
    msh.fields[2] = field_text(header.sending_application.clone());
    msh.fields[3] = field_text(header.sending_facility.clone());
    msh.fields[4] = field_text(header.receiving_application.clone());
    msh.fields[5] = field_text(header.receiving_facility.clone());
    msh.fields[6] = field_text(header.timestamp.clone());
    msh.fields[8] = field_components(message_type);
    msh.fields[9] = field_text(header.control_id.clone());
    msh.fields[10] = field_text("P");
    msh.fields[11] = field_text("2.5.1");
    msh
}

pub(crate) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// CWE from a CodeableConcept's first coding (else its text).
pub(crate) fn cwe(cc: &Value, codes: &dyn Reverse) -> OwnedField {
    let c = &cc["coding"][0];
    if c.is_object() {
        let system = system_name(text(&c["system"]), codes);
        let display = c["display"].as_str().or(cc["text"].as_str()).unwrap_or("");
        vec![vec![
            vec![Leaf::text(text(&c["code"]))],
            vec![Leaf::text(display)],
            vec![Leaf::text(system)],
        ]]
    } else {
        // CWE.9: original text.
        let mut rep = vec![vec![]; 9];
        rep[8] = vec![Leaf::text(text(&cc["text"]))];
        vec![rep]
    }
}

/// Table 0396 name for a system URI (the `CodingSystem` vocabulary read backwards); a URI with
/// no name is sent as is.
pub(crate) fn system_name(uri: &str, codes: &dyn Reverse) -> String {
    if uri.is_empty() {
        return String::new();
    }
    codes
        .v2_code("CodingSystem", uri)
        .unwrap_or_else(|| uri.to_string())
}

pub(crate) fn pid_segment(set_id: usize, p: &Value, codes: &dyn Reverse) -> OwnedSegment {
    let mut f: Vec<OwnedField> = vec![vec![]; 8];
    f[0] = field_text(set_id.to_string());
    // PID-3: CX value ^^^ assigning authority (HD: namespace & universal id & URI) ^ type.
    f[2] = p["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["value"].is_string())
        .map(|i| {
            let mut rep: Vec<Vec<Leaf>> = vec![vec![]; 5];
            rep[0] = vec![Leaf::text(text(&i["value"]))];
            let system = text(&i["system"]);
            rep[3] = vec![
                Leaf::text(text(&i["assigner"]["display"])),
                Leaf::text(system),
                Leaf::text(if system.is_empty() { "" } else { "URI" }),
            ];
            rep[4] = vec![Leaf::text(text(&i["type"]["coding"][0]["code"]))];
            rep
        })
        .collect();
    // PID-5: XPN family ^ given ^ further given names.
    f[4] = p["name"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let given: Vec<&str> = n["given"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![
                vec![Leaf::text(text(&n["family"]))],
                vec![Leaf::text(given.first().copied().unwrap_or(""))],
                vec![Leaf::text(given.get(1..).unwrap_or(&[]).join(" "))],
            ]
        })
        .collect();
    f[6] = field_text(dtm(text(&p["birthDate"])));
    f[7] = field_text(
        p["gender"]
            .as_str()
            .and_then(|g| codes.v2_code("AdministrativeSex", g))
            .unwrap_or_default(),
    );
    OwnedSegment {
        id: "PID".into(),
        fields: f,
    }
}

fn obr_segment(control: &str, n: usize, obs: &[&Value], codes: &dyn Reverse) -> OwnedSegment {
    let mut f: Vec<OwnedField> = vec![vec![]; 25];
    f[0] = field_text(n.to_string());
    // OBR-3 filler order number: the message and group (the results have no order).
    f[2] = field_text(format!("{control}-{n}"));
    // OBR-4: what was observed — the first Observation's code.
    f[3] = obs
        .first()
        .map(|o| cwe(&o["code"], codes))
        .unwrap_or_default();
    // OBR-7: the time of the first reading that has one.
    f[6] = field_text(
        obs.iter()
            .find_map(|o| effective(o))
            .map(dtm)
            .unwrap_or_default(),
    );
    // OBR-25: final when every result is, corrected when one was, else preliminary.
    let statuses: Vec<&str> = obs.iter().map(|o| text(&o["status"])).collect();
    f[24] = field_text(if statuses.iter().all(|s| *s == "final") {
        "F"
    } else if statuses
        .iter()
        .any(|s| *s == "amended" || *s == "corrected")
    {
        "C"
    } else {
        "P"
    });
    OwnedSegment {
        id: "OBR".into(),
        fields: f,
    }
}

fn effective(o: &Value) -> Option<&str> {
    o["effectiveDateTime"]
        .as_str()
        .or(o["effectiveInstant"].as_str())
        .or(o["effectivePeriod"]["start"].as_str())
}

/// The OBX rows of one Observation (fields 1 and 4 are set by the caller): its own value, else
/// one per component; a value absent for a reason is sent as such (OBX-11 `X`).
fn obx_rows(o: &Value, codes: &dyn Reverse) -> Vec<OwnedSegment> {
    let status = o["status"]
        .as_str()
        .and_then(|s| codes.v2_code("ObservationStatus", s))
        .unwrap_or_default();
    let time = effective(o).map(dtm).unwrap_or_default();
    let row = |code: &Value, holder: &Value| -> Option<OwnedSegment> {
        let (kind, value, units) = value_of(holder, codes)?;
        let mut f: Vec<OwnedField> = vec![vec![]; 14];
        f[1] = field_text(kind);
        f[2] = cwe(code, codes);
        f[4] = value;
        f[5] = units;
        f[6] = field_text(range(holder));
        f[7] = holder["interpretation"][0]["coding"][0]["code"]
            .as_str()
            .map(field_text)
            .unwrap_or_default();
        f[10] = field_text(if kind.is_empty() { "X" } else { &status });
        f[13] = field_text(time.clone());
        Some(OwnedSegment {
            id: "OBX".into(),
            fields: f,
        })
    };
    if let Some(r) = row(&o["code"], o) {
        return vec![r];
    }
    o["component"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| row(&c["code"], c))
        .collect()
}

/// OBX-2, OBX-5 and OBX-6 for what `holder` (an Observation or a component) carries.
fn value_of(holder: &Value, codes: &dyn Reverse) -> Option<(&'static str, OwnedField, OwnedField)> {
    if let Some(q) = holder
        .get("valueQuantity")
        .filter(|q| q["value"].is_number())
    {
        let number = q["value"].to_string();
        let unit = if q["code"].is_string() || q["unit"].is_string() {
            vec![vec![
                vec![Leaf::text(
                    q["code"].as_str().or(q["unit"].as_str()).unwrap_or(""),
                )],
                vec![Leaf::text(text(&q["unit"]))],
                vec![Leaf::text(system_name(text(&q["system"]), codes))],
            ]]
        } else {
            vec![]
        };
        return Some(match q["comparator"].as_str() {
            // SN: comparator ^ number.
            Some(c) => ("SN", field_components(&[c, &number]), unit),
            None => ("NM", field_text(number), unit),
        });
    }
    if let Some(s) = holder["valueString"].as_str() {
        // ST holds 199 characters at most; longer text is TX.
        let kind = if s.chars().count() > 199 { "TX" } else { "ST" };
        return Some((kind, field_text(s), vec![]));
    }
    if let Some(cc) = holder.get("valueCodeableConcept") {
        return Some(("CWE", cwe(cc, codes), vec![]));
    }
    if let Some(b) = holder["valueBoolean"].as_bool() {
        let (code, display) = if b { ("Y", "Yes") } else { ("N", "No") };
        return Some(("CWE", field_components(&[code, display, "HL70136"]), vec![]));
    }
    if let Some(n) = holder.get("valueInteger").filter(|v| v.is_number()) {
        return Some(("NM", field_text(n.to_string()), vec![]));
    }
    if let Some(t) = holder["valueDateTime"].as_str() {
        return Some(("DTM", field_text(dtm(t)), vec![]));
    }
    if let Some(t) = holder["valueTime"].as_str() {
        return Some(("TM", field_text(t.replace(':', "")), vec![]));
    }
    if holder.get("dataAbsentReason").is_some() {
        // No value, for a reason: OBX-2 and OBX-5 empty, OBX-11 X.
        return Some(("", vec![], vec![]));
    }
    None
}

/// OBX-7 from the first reference range: `low-high`, `>low` or `<high`.
fn range(holder: &Value) -> String {
    let r = &holder["referenceRange"][0];
    let n = |v: &Value| v["value"].is_number().then(|| v["value"].to_string());
    match (n(&r["low"]), n(&r["high"])) {
        (Some(l), Some(h)) => format!("{l}-{h}"),
        (Some(l), None) => format!(">{l}"),
        (None, Some(h)) => format!("<{h}"),
        (None, None) => r["text"].as_str().unwrap_or("").to_string(),
    }
}

/// A FHIR date, dateTime or instant as an HL7 DTM: `2026-11-30T08:15:00+01:00` →
/// `20261130081500+0100`, `Z` → `+0000`, partial dates stay partial. Text that is not a FHIR
/// date is sent as is (digits only).
pub fn dtm(fhir: &str) -> String {
    let (date, rest) = fhir.split_once('T').unwrap_or((fhir, ""));
    let mut out: String = date.chars().filter(char::is_ascii_digit).collect();
    if rest.is_empty() {
        return out;
    }
    let (time, zone) = match rest.find(['Z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (whole, fraction) = time.split_once('.').unwrap_or((time, ""));
    out.extend(whole.chars().filter(char::is_ascii_digit));
    if !fraction.is_empty() {
        out.push('.');
        out.extend(fraction.chars().filter(char::is_ascii_digit).take(4));
    }
    if let Some(offset) = zone.strip_prefix('+') {
        out.push('+');
        out.extend(offset.chars().filter(char::is_ascii_digit));
    } else if let Some(offset) = zone.strip_prefix('-') {
        out.push('-');
        out.extend(offset.chars().filter(char::is_ascii_digit));
    } else if zone.starts_with('Z') {
        out.push_str("+0000");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Codes;
    impl Reverse for Codes {
        fn v2_code(&self, vocab: &str, code: &str) -> Option<String> {
            let v = match (vocab, code) {
                ("CodingSystem", "http://loinc.org") => "LN",
                ("CodingSystem", "http://unitsofmeasure.org") => "UCUM",
                ("AdministrativeSex", "female") => "F",
                ("ObservationStatus", "final") => "F",
                ("ObservationStatus", "preliminary") => "P",
                _ => return None,
            };
            Some(v.into())
        }
    }

    #[test]
    fn fhir_dates_become_dtm() {
        assert_eq!(dtm("2026-11-30T08:15:00+01:00"), "20261130081500+0100");
        assert_eq!(
            dtm("2026-11-30T08:15:00.123456Z"),
            "20261130081500.1234+0000"
        );
        assert_eq!(dtm("2026-11-30T08:15:00-05:00"), "20261130081500-0500");
        assert_eq!(dtm("2026-11"), "202611");
        assert_eq!(dtm("1980-01-01"), "19800101");
        assert_eq!(dtm(""), "");
        // Found by the property test below: a zone of `Z` with more after it.
        assert_eq!(dtm("TZ0"), "+0000");
    }

    #[test]
    fn readings_of_two_patients_make_one_oru_with_two_patient_groups() {
        let patients: HashMap<String, Value> = [
            (
                "p1".to_string(),
                json!({"resourceType": "Patient", "id": "p1",
                    "identifier": [{"value": "MRN1", "system": "urn:oid:1.2.3", "assigner": {"display": "HOSP"},
                                    "type": {"coding": [{"code": "MR"}]}}],
                    "name": [{"family": "Doe", "given": ["Jane", "Q"]}],
                    "birthDate": "1980-01-01", "gender": "female"}),
            ),
            ("p2".to_string(), json!({"resourceType": "Patient", "id": "p2"})),
        ]
        .into_iter()
        .collect();
        let hr = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "effectiveDateTime": "2026-11-30T08:15:00+01:00",
            "valueQuantity": {"value": 72.0, "unit": "beats/min", "system": "http://unitsofmeasure.org", "code": "/min"},
            "referenceRange": [{"low": {"value": 60}, "high": {"value": 100}}],
            "note": [{"text": "at rest | sitting"}]});
        let bp = json!({"resourceType": "Observation", "id": "o2", "status": "preliminary",
            "subject": {"reference": "Patient/p2"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 80, "comparator": "<", "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]});
        let header = Header {
            sending_application: "V2FHIR".into(),
            receiving_application: "EHR".into(),
            timestamp: "20261130120000+0000".into(),
            control_id: "V2F7".into(),
            ..Header::default()
        };
        let text = build(&[&hr, &bp], &patients, &header, &Codes).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = text.split('\r').filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            vec![
                "MSH|^~\\&|V2FHIR||EHR||20261130120000+0000||ORU^R01^ORU_R01|V2F7|P|2.5.1",
                "PID|1||MRN1^^^HOSP&urn:oid:1.2.3&URI^MR||Doe^Jane^Q||19800101|F",
                "OBR|1||V2F7-1|8867-4^Heart rate^LN|||20261130081500+0100||||||||||||||||||F",
                "OBX|1|NM|8867-4^Heart rate^LN||72.0|/min^beats/min^UCUM|60-100||||F|||20261130081500+0100",
                "NTE|1||at rest \\F\\ sitting",
                "PID|2",
                "OBR|2||V2F7-2|85354-9^^LN|||||||||||||||||||||P",
                "OBX|1|NM|8480-6^^LN|1|120|mm[Hg]^mmHg^UCUM|||||P",
                "OBX|2|SN|8462-4^^LN|1|<^80|mm[Hg]^mmHg^UCUM|||||P",
            ]
        );
        // What we write, we read.
        let parsed = crate::v2::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.messages.len(), 1);
    }

    /// A JSON value of any shape, with the keys an Observation or Patient reads.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
            "[0-9T:+Z.-]{0,30}".prop_map(Value::String),
        ];
        let keys = proptest::sample::select(vec![
            "value",
            "unit",
            "code",
            "system",
            "comparator",
            "coding",
            "display",
            "text",
            "valueQuantity",
            "valueString",
            "valueCodeableConcept",
            "valueBoolean",
            "valueInteger",
            "valueDateTime",
            "valueTime",
            "dataAbsentReason",
            "component",
            "referenceRange",
            "low",
            "high",
            "interpretation",
            "note",
            "status",
            "effectiveDateTime",
            "effectivePeriod",
            "start",
            "identifier",
            "name",
            "family",
            "given",
            "birthDate",
            "gender",
            "assigner",
            "type",
        ]);
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever a stored Observation or Patient holds, building answers (a message that
        /// parses, or a reason) and never panics.
        #[test]
        fn any_observation_and_patient_build_or_say_why(obs in any_json(), patient in any_json()) {
            let mut obs = obs;
            if let Value::Object(o) = &mut obs {
                o.insert("subject".into(), json!({"reference": "Patient/p"}));
            }
            let patients: HashMap<String, Value> = [("p".to_string(), patient)].into_iter().collect();
            if let Ok(text) = build(&[&obs], &patients, &Header::default(), &Codes) {
                proptest::prop_assert!(crate::v2::parse(text.as_bytes()).is_ok());
            }
        }

        #[test]
        fn any_text_makes_a_dtm(s in "\\PC{0,40}") {
            let d = dtm(&s);
            proptest::prop_assert!(d.chars().all(|c| c.is_ascii_digit() || "+-.".contains(c)));
        }
    }

    #[test]
    fn what_cannot_be_sent_is_named() {
        let patients = HashMap::new();
        let o = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "valueString": "y"});
        let e = build(&[&o], &patients, &Header::default(), &Codes).unwrap_err();
        assert!(
            e.contains("Observation/o1") && e.contains("no Patient subject"),
            "{e}"
        );
        let o = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "subject": {"reference": "Patient/nobody"}, "code": {"text": "x"}, "valueString": "y"});
        let e = build(&[&o], &patients, &Header::default(), &Codes).unwrap_err();
        assert!(
            e.contains("Patient/nobody") && e.contains("not in the gateway's store"),
            "{e}"
        );
        let patients: HashMap<String, Value> = [("p".to_string(), json!({"id": "p"}))]
            .into_iter()
            .collect();
        let o = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "subject": {"reference": "Patient/p"}, "code": {"text": "x"},
            "valueSampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 1, "data": "1 2"}});
        let e = build(&[&o], &patients, &Header::default(), &Codes).unwrap_err();
        assert!(e.contains("no value an OBX can carry"), "{e}");
    }
}
