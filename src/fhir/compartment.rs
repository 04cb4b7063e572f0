//! The Patient compartment (R4 CompartmentDefinition `patient`), for the resource types the
//! gateway stores: which types can belong to a patient, and whether a resource does — it holds a
//! `Patient/…` reference at one of the paths that define membership. Pure.

use serde_json::Value;

/// Type → the element paths whose `Patient/…` reference puts a resource in a patient's
/// compartment (R4 `CompartmentDefinition/patient`, its search parameters' paths).
const PATIENT: &[(&str, &[&str])] = &[
    ("Account", &["subject"]),
    ("AllergyIntolerance", &["patient", "recorder", "asserter"]),
    ("Appointment", &["participant.actor"]),
    ("ChargeItem", &["subject"]),
    ("Condition", &["subject", "asserter"]),
    (
        "Coverage",
        &["policyHolder", "subscriber", "beneficiary", "payor"],
    ),
    ("Device", &["patient"]),
    ("DiagnosticReport", &["subject"]),
    ("DocumentReference", &["subject", "author"]),
    ("Encounter", &["subject"]),
    ("Immunization", &["patient"]),
    ("MedicationDispense", &["subject", "receiver"]),
    ("MedicationRequest", &["subject"]),
    ("Observation", &["subject", "performer"]),
    ("Procedure", &["subject", "performer.actor"]),
    ("Provenance", &["target"]),
    ("RelatedPerson", &["patient"]),
    ("ServiceRequest", &["subject", "performer", "requester"]),
    ("Specimen", &["subject"]),
];

/// Can resources of this type be in a patient's compartment? (Patient itself is.)
pub fn patient_type(resource_type: &str) -> bool {
    resource_type == "Patient" || PATIENT.iter().any(|(t, _)| *t == resource_type)
}

/// The types of the Patient compartment, Patient first.
pub fn patient_types() -> impl Iterator<Item = &'static str> {
    std::iter::once("Patient").chain(PATIENT.iter().map(|(t, _)| *t))
}

/// Is this resource in some patient's compartment? A Patient is; another resource when it
/// refers to a Patient at one of its type's compartment paths.
pub fn in_patient_compartment(resource: &Value) -> bool {
    let Some(ty) = resource["resourceType"].as_str() else {
        return false;
    };
    if ty == "Patient" {
        return true;
    }
    let Some((_, paths)) = PATIENT.iter().find(|(t, _)| *t == ty) else {
        return false;
    };
    paths.iter().any(|p| {
        let mut nodes = vec![resource];
        for step in p.split('.') {
            nodes = nodes
                .into_iter()
                .flat_map(|n| match &n[step] {
                    Value::Array(a) => a.iter().collect::<Vec<_>>(),
                    Value::Null => Vec::new(),
                    v => vec![v],
                })
                .collect();
        }
        nodes.iter().any(|n| {
            n["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("Patient/"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn membership_follows_the_references_that_define_it() {
        assert!(in_patient_compartment(
            &json!({"resourceType": "Patient", "id": "p"})
        ));
        assert!(in_patient_compartment(
            &json!({"resourceType": "Observation", "subject": {"reference": "Patient/p"}})
        ));
        assert!(in_patient_compartment(&json!({"resourceType": "Procedure",
            "performer": [{"actor": {"reference": "Practitioner/x"}}, {"actor": {"reference": "Patient/p"}}]})));
        assert!(in_patient_compartment(
            &json!({"resourceType": "Provenance",
            "target": [{"reference": "Encounter/e"}, {"reference": "Patient/p"}]})
        ));
        // About a device or a group, or referring to a patient elsewhere: not in it.
        assert!(!in_patient_compartment(
            &json!({"resourceType": "Observation", "subject": {"reference": "Device/d"}})
        ));
        assert!(!in_patient_compartment(
            &json!({"resourceType": "Observation", "focus": [{"reference": "Patient/p"}]})
        ));
        // Types outside the compartment.
        for ty in ["Organization", "Practitioner", "Location", "MessageHeader"] {
            assert!(!patient_type(ty));
            assert!(!in_patient_compartment(&json!({"resourceType": ty})));
        }
        assert!(patient_type("Patient") && patient_type("Encounter"));
        assert_eq!(patient_types().next(), Some("Patient"));
        // Every listed type is an R4 resource type.
        assert!(patient_types().all(crate::fhir::validate::is_resource_type));
    }
}
