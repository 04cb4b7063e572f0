//! FHIR → HL7 v2: Immunizations written by app backends (a pharmacy or a vaccination app) become
//! one VXU^V04 for the EHR or the immunization registry: the patient's PID (from the Patient the
//! gateway holds) and an ORDER group per Immunization (ORC, RXA, RXR), following the CDC's HL7
//! 2.5.1 immunization guide where R4 leaves a choice (an unknown amount is `999`, RXA-9 says
//! whether the record is the administering provider's own). Pure, like [`super::oru`].

use super::oru::{Header, Reverse, cwe, dtm, msh_segment, pid_segment, system_name, text, written};
use crate::v2::delims::Delimiters;
use crate::v2::er7::{self, Leaf, OwnedField, OwnedSegment, field_components, field_text};
use serde_json::Value;
use std::collections::HashMap;

/// The Immunizations of a stored request's Bundle (entries not deleted), in entry order.
pub fn immunizations(bundle: &Value) -> Vec<&Value> {
    written(bundle, "Immunization")
}

/// The Patient id (`Patient/<id>` → `<id>`) an Immunization is about.
pub fn patient_id(i: &Value) -> Option<&str> {
    i["patient"]["reference"].as_str()?.strip_prefix("Patient/")
}

/// One VXU^V04 for `immunizations` of one patient, held in `patients` (by id). `Err` says which
/// Immunization cannot be sent and why (no Patient, one the gateway does not hold, several
/// patients in one request, no vaccine code or no occurrence date).
pub fn build(
    immunizations: &[&Value],
    patients: &HashMap<String, Value>,
    header: &Header,
    codes: &dyn Reverse,
) -> Result<String, String> {
    let Some(first) = immunizations.first() else {
        return Err("the request holds no Immunization".into());
    };
    let what = |i: &Value| format!("Immunization/{}", i["id"].as_str().unwrap_or("?"));
    let Some(pid) = patient_id(first) else {
        return Err(format!(
            "{} has no Patient reference: a VXU^V04 needs a PID",
            what(first)
        ));
    };
    let Some(patient) = patients.get(pid) else {
        return Err(format!(
            "{}: its Patient/{pid} is not in the gateway's store (send the patient's ADT first, then reprocess)",
            what(first)
        ));
    };
    let mut segs = vec![
        msh_segment(header, &["VXU", "V04", "VXU_V04"]),
        pid_segment(1, patient, codes),
    ];
    for i in immunizations {
        if patient_id(i) != Some(pid) {
            return Err(format!(
                "{} is about another patient than {}: a VXU^V04 carries one patient (send each patient's immunizations in a request of their own)",
                what(i),
                what(first)
            ));
        }
        segs.push(orc_segment(i));
        segs.push(rxa_segment(i, codes).map_err(|why| format!("{}: {why}", what(i)))?);
        if i["route"].is_object() || i["site"].is_object() {
            let mut rxr = vec![vec![]; 2];
            if i["route"].is_object() {
                rxr[0] = cwe(&i["route"], codes);
            }
            if i["site"].is_object() {
                rxr[1] = cwe(&i["site"], codes);
            }
            segs.push(OwnedSegment {
                id: "RXR".into(),
                fields: rxr,
            });
        }
    }
    Ok(er7::write_message(&segs, &Delimiters::default()))
}

/// ORC: RE (observations to follow), the filler order number (ORC-3) the Immunization's first
/// identifier, else its id.
fn orc_segment(i: &Value) -> OwnedSegment {
    let mut f: Vec<OwnedField> = vec![vec![]; 3];
    f[0] = field_text("RE");
    let ident = &i["identifier"][0];
    f[2] = match ident["value"].as_str() {
        Some(v) => vec![vec![
            vec![Leaf::text(v)],
            vec![Leaf::text(text(&ident["system"]))],
        ]],
        None => field_text(text(&i["id"])),
    };
    OwnedSegment {
        id: "ORC".into(),
        fields: f,
    }
}

fn rxa_segment(i: &Value, codes: &dyn Reverse) -> Result<OwnedSegment, String> {
    let mut f: Vec<OwnedField> = vec![vec![]; 21];
    f[0] = field_text("0");
    f[1] = field_text("1");
    let Some(when) = i["occurrenceDateTime"].as_str() else {
        return Err("has no occurrenceDateTime (RXA-3 is required)".into());
    };
    // RXA-3 and RXA-4 (required in 2.5.1; the CDC guide: the same time).
    f[2] = field_text(dtm(when));
    f[3] = field_text(dtm(when));
    if !i["vaccineCode"].is_object() {
        return Err("has no vaccineCode (RXA-5 is required)".into());
    }
    f[4] = cwe(&i["vaccineCode"], codes);
    // RXA-6/7: the dose; an unknown amount is 999 (CDC implementation guide).
    let dose = &i["doseQuantity"];
    f[5] = field_text(match &dose["value"] {
        Value::Number(n) => n.to_string(),
        _ => "999".into(),
    });
    if dose["unit"].is_string() || dose["code"].is_string() {
        let code = dose["code"]
            .as_str()
            .or(dose["unit"].as_str())
            .unwrap_or("");
        let system = system_name(text(&dose["system"]), codes);
        f[6] = vec![vec![
            vec![Leaf::text(code)],
            vec![Leaf::text(text(&dose["unit"]))],
            vec![Leaf::text(system)],
        ]];
    }
    // RXA-9: the source of the record (NIP001): 00 the administering provider's own record,
    // else the reported origin, else 01 (historical, source unspecified).
    f[8] = if i["reportOrigin"].is_object() {
        cwe(&i["reportOrigin"], codes)
    } else if i["primarySource"] == Value::Bool(false) {
        field_components(&[
            "01",
            "Historical information - source unspecified",
            "NIP001",
        ])
    } else {
        field_components(&["00", "New immunization record", "NIP001"])
    };
    f[14] = field_text(text(&i["lotNumber"]));
    f[15] = field_text(dtm(text(&i["expirationDate"])));
    let m = &i["manufacturer"];
    if m.is_object() {
        let id = &m["identifier"];
        let system = system_name(text(&id["system"]), codes);
        f[16] = vec![vec![
            vec![Leaf::text(text(&id["value"]))],
            vec![Leaf::text(text(&m["display"]))],
            vec![Leaf::text(system)],
        ]];
    }
    let status = text(&i["status"]);
    if status == "not-done" && i["statusReason"].is_object() {
        f[17] = cwe(&i["statusReason"], codes);
    }
    // RXA-20 completion status (RE for a refusal: v3 PATOBJ or a NIP002 refusal reason);
    // RXA-21 action: D deletes a record entered in error.
    let reason = &i["statusReason"]["coding"][0];
    let refused = status == "not-done"
        && (reason["code"] == "PATOBJ" || text(&reason["system"]).contains("NIP002"));
    f[19] = field_text(if refused {
        "RE".to_string()
    } else {
        codes
            .v2_code("ImmunizationStatus", status)
            .unwrap_or_default()
    });
    f[20] = field_text(if status == "entered-in-error" {
        "D"
    } else {
        "A"
    });
    Ok(OwnedSegment {
        id: "RXA".into(),
        fields: f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Codes;
    impl Reverse for Codes {
        fn v2_code(&self, vocab: &str, code: &str) -> Option<String> {
            let v = match (vocab, code) {
                ("CodingSystem", "http://hl7.org/fhir/sid/cvx") => "CVX",
                ("CodingSystem", "http://hl7.org/fhir/sid/mvx") => "MVX",
                ("CodingSystem", "http://unitsofmeasure.org") => "UCUM",
                ("CodingSystem", "http://terminology.hl7.org/CodeSystem/v2-0162") => "HL70162",
                ("AdministrativeSex", "female") => "F",
                ("ImmunizationStatus", "completed") => "CP",
                ("ImmunizationStatus", "not-done") => "NA",
                _ => return None,
            };
            Some(v.into())
        }
    }

    fn header() -> Header {
        Header {
            sending_application: "V2FHIR".into(),
            timestamp: "20261130100000+0000".into(),
            control_id: "V2F7".into(),
            ..Header::default()
        }
    }

    fn patients() -> HashMap<String, Value> {
        HashMap::from([(
            "p1".to_string(),
            json!({"resourceType": "Patient", "id": "p1",
                   "identifier": [{"value": "MRN-1", "type": {"coding": [{"code": "MR"}]}}],
                   "name": [{"family": "Doe", "given": ["Jane"]}], "gender": "female", "birthDate": "1980-01-02"}),
        )])
    }

    fn flu() -> Value {
        json!({"resourceType": "Immunization", "id": "imm-1", "status": "completed",
               "identifier": [{"system": "urn:pharmacy", "value": "RX-991"}],
               "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "158", "display": "influenza, injectable, quadrivalent"}]},
               "patient": {"reference": "Patient/p1"},
               "occurrenceDateTime": "2026-11-29T10:30:00+01:00",
               "primarySource": true, "lotNumber": "LOT-42", "expirationDate": "2027-06-30",
               "manufacturer": {"identifier": {"system": "http://hl7.org/fhir/sid/mvx", "value": "SKB"}, "display": "GlaxoSmithKline"},
               "route": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0162", "code": "IM"}]},
               "doseQuantity": {"value": 0.5, "unit": "mL", "system": "http://unitsofmeasure.org", "code": "mL"}})
    }

    fn segment<'a>(text: &'a str, id: &str) -> Vec<&'a str> {
        text.split('\r')
            .find(|s| s.starts_with(id))
            .unwrap_or_default()
            .split('|')
            .collect()
    }

    #[test]
    fn an_immunization_becomes_a_vxu_with_its_patient() {
        let imm = flu();
        let text = build(&[&imm], &patients(), &header(), &Codes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(segment(&text, "MSH")[8], "VXU^V04^VXU_V04");
        assert_eq!(segment(&text, "PID")[3], "MRN-1^^^^MR");
        assert_eq!(segment(&text, "ORC")[3], "RX-991^urn:pharmacy");
        let rxa = segment(&text, "RXA");
        assert_eq!(rxa[3], "20261129103000+0100");
        assert_eq!(rxa[4], rxa[3]);
        assert_eq!(rxa[5], "158^influenza, injectable, quadrivalent^CVX");
        assert_eq!((rxa[6], rxa[7]), ("0.5", "mL^mL^UCUM"));
        assert_eq!(rxa[9], "00^New immunization record^NIP001");
        assert_eq!((rxa[15], rxa[16]), ("LOT-42", "20270630"));
        assert_eq!(rxa[17], "SKB^GlaxoSmithKline^MVX");
        assert_eq!((rxa[20], rxa[21]), ("CP", "A"));
        assert_eq!(segment(&text, "RXR")[1], "IM^^HL70162");
    }

    #[test]
    fn what_the_record_does_not_say_follows_the_cdc_guide() {
        let mut imm = flu();
        imm["primarySource"] = json!(false);
        imm["status"] = json!("not-done");
        imm["statusReason"] = json!({"coding": [{"system": "http://example.org/reasons", "code": "00", "display": "Parental decision"}]});
        if let Some(o) = imm.as_object_mut() {
            o.remove("doseQuantity");
            o.remove("route");
        }
        let text = build(&[&imm], &patients(), &header(), &Codes).unwrap_or_else(|e| panic!("{e}"));
        let rxa = segment(&text, "RXA");
        assert_eq!(rxa[6], "999", "an unknown amount");
        assert_eq!(
            rxa[9],
            "01^Historical information - source unspecified^NIP001"
        );
        assert!(rxa[18].starts_with("00^Parental decision"), "{}", rxa[18]);
        assert_eq!(rxa[20], "NA", "not done, for a reason that is no refusal");
        imm["statusReason"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "PATOBJ"}]});
        let text = build(&[&imm], &patients(), &header(), &Codes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(segment(&text, "RXA")[20], "RE", "a refusal");
        assert!(!text.contains("RXR|"));
        imm["status"] = json!("entered-in-error");
        let text = build(&[&imm], &patients(), &header(), &Codes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(segment(&text, "RXA")[21], "D");
    }

    #[test]
    fn what_cannot_be_sent_is_named() {
        let mut imm = flu();
        imm["patient"] = json!({"reference": "Patient/elsewhere"});
        let e = build(&[&imm], &patients(), &header(), &Codes)
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("Patient/elsewhere") && e.contains("imm-1"),
            "{e}"
        );
        let mut other = flu();
        other["id"] = json!("imm-2");
        other["patient"] = json!({"reference": "Patient/p2"});
        let mut two = patients();
        two.insert("p2".into(), json!({"resourceType": "Patient", "id": "p2"}));
        let first = flu();
        let e = build(&[&first, &other], &two, &header(), &Codes)
            .err()
            .unwrap_or_default();
        assert!(e.contains("one patient") && e.contains("imm-2"), "{e}");
        let mut undated = flu();
        if let Some(o) = undated.as_object_mut() {
            o.remove("occurrenceDateTime");
        }
        let e = build(&[&undated], &patients(), &header(), &Codes)
            .err()
            .unwrap_or_default();
        assert!(e.contains("occurrenceDateTime"), "{e}");
        assert!(build(&[], &patients(), &header(), &Codes).is_err());
    }
}
