//! R4 validation: each resource against its own definition in the official FHIR R4 JSON Schema
//! (compiled once), plus the required elements the schema does not enforce.

use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

const SCHEMA: &str = include_str!("fhir.r4.schema.json");

/// One validation finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalid {
    /// Resource type.
    pub resource_type: String,
    /// JSON pointer into the resource (`/identifier/0/system`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

struct Compiled {
    /// The document, kept to build per-type validators for error details.
    schema: Option<&'static Value>,
    /// The whole schema (root `oneOf` over all resource types): the fast yes/no check.
    full: Option<jsonschema::Validator>,
    error: Option<String>,
    per_type: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// The official FHIR R4 JSON Schema, parsed once (shared by the validator and the mapping
/// loader's element model). `None` if the embedded copy is not JSON.
pub fn schema_document() -> Option<&'static Value> {
    static DOC: OnceLock<Option<Value>> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(SCHEMA).ok())
        .as_ref()
}

/// Is `name` an R4 resource type (a key of the schema's discriminator)?
pub fn is_resource_type(name: &str) -> bool {
    schema_document()
        .and_then(|d| d.get("discriminator"))
        .and_then(|d| d.get("mapping"))
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(name))
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let fail = |e: String| Compiled {
            schema: None,
            full: None,
            error: Some(e),
            per_type: Mutex::default(),
        };
        let Some(schema) = schema_document() else {
            return fail("the embedded FHIR schema is not JSON".into());
        };
        match jsonschema::options()
            .should_validate_formats(false)
            .build(schema)
        {
            Ok(full) => Compiled {
                schema: Some(schema),
                full: Some(full),
                error: None,
                per_type: Mutex::default(),
            },
            Err(e) => fail(format!("FHIR schema does not compile: {e}")),
        }
    })
}

/// A validator for one resource type's definition (precise error paths), compiled on first use.
fn for_type(c: &Compiled, rt: &str) -> Result<Arc<jsonschema::Validator>, String> {
    let mut cache = c
        .per_type
        .lock()
        .map_err(|_| "validator cache poisoned".to_string())?;
    if let Some(v) = cache.get(rt) {
        return Ok(v.clone());
    }
    let Some(Value::Object(doc)) = c.schema else {
        return Err("FHIR schema not loaded".into());
    };
    if doc.get("definitions").and_then(|d| d.get(rt)).is_none() {
        return Err(format!("'{rt}' is not an R4 resource type"));
    }
    let mut doc = doc.clone();
    doc.remove("oneOf");
    doc.remove("discriminator");
    doc.insert("$ref".into(), Value::String(format!("#/definitions/{rt}")));
    let v = jsonschema::options()
        .should_validate_formats(false)
        .build(&Value::Object(doc))
        .map_err(|e| format!("schema for {rt} does not compile: {e}"))?;
    let v = Arc::new(v);
    cache.insert(rt.to_string(), v.clone());
    Ok(v)
}

/// Compile the schema now (start-up) rather than on the first message. Returns the compile error, if any.
pub fn warm_up() -> Result<(), String> {
    match &compiled().error {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

/// Elements R4 requires (min cardinality 1) for the resource types we emit; the JSON Schema
/// does not enforce `required`. `a|b` means one of the choice elements.
const REQUIRED: &[(&str, &[&str])] = &[
    ("Account", &["status"]),
    ("AllergyIntolerance", &["patient"]),
    ("Condition", &["subject"]),
    ("Coverage", &["status", "beneficiary", "payor"]),
    ("DiagnosticReport", &["status", "code"]),
    ("Encounter", &["status", "class"]),
    (
        "Immunization",
        &[
            "status",
            "vaccineCode",
            "patient",
            "occurrenceDateTime|occurrenceString",
        ],
    ),
    ("MessageHeader", &["eventCoding|eventUri", "source"]),
    ("Observation", &["status", "code"]),
    ("Procedure", &["status", "subject"]),
    ("Provenance", &["target", "recorded", "agent"]),
    ("RelatedPerson", &["patient"]),
    ("ServiceRequest", &["status", "intent", "subject"]),
    ("Specimen", &[]),
    ("DocumentReference", &["status", "content"]),
    ("Appointment", &["status", "participant"]),
    ("ChargeItem", &["status", "code", "subject"]),
    (
        "MedicationRequest",
        &[
            "status",
            "intent",
            "subject",
            "medicationCodeableConcept|medicationReference",
        ],
    ),
    (
        "MedicationDispense",
        &["status", "medicationCodeableConcept|medicationReference"],
    ),
    ("Bundle", &["type"]),
];

/// The top-level elements R4 requires of `resource_type` (both names of a required choice,
/// `occurrenceDateTime` and `occurrenceString`), for the types we emit; empty for the others.
pub fn mandatory_elements(resource_type: &str) -> impl Iterator<Item = &'static str> {
    REQUIRED
        .iter()
        .find(|(t, _)| *t == resource_type)
        .into_iter()
        .flat_map(|(_, req)| req.iter().flat_map(|r| r.split('|')))
}

/// Validate one resource. An empty result means valid.
pub fn validate(resource: &Value) -> Vec<Invalid> {
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut out = Vec::new();
    let c = compiled();
    let Some(full) = &c.full else {
        out.push(Invalid {
            resource_type: rt,
            path: String::new(),
            message: c.error.clone().unwrap_or_default(),
        });
        return out;
    };
    if !full.is_valid(resource) {
        match for_type(c, &rt) {
            Ok(v) => {
                for e in v.iter_errors(resource).take(20) {
                    out.push(Invalid {
                        resource_type: rt.clone(),
                        path: e.instance_path().to_string(),
                        message: short(&e.to_string()),
                    });
                }
            }
            Err(message) => out.push(Invalid {
                resource_type: rt.clone(),
                path: "/resourceType".into(),
                message,
            }),
        }
    }
    if let Some((_, req)) = REQUIRED.iter().find(|(t, _)| *t == rt) {
        for r in req.iter() {
            if !r
                .split('|')
                .any(|alt| resource.get(alt).is_some_and(|v| !v.is_null()))
            {
                out.push(Invalid {
                    resource_type: rt.clone(),
                    path: format!("/{}", r.split('|').next().unwrap_or(r)),
                    message: format!("required element {} is missing", r.replace('|', " or ")),
                });
            }
        }
    }
    out
}

/// Messages from the schema validator can quote whole sub-documents; keep them to one line.
fn short(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 {
        one.chars().take(200).collect::<String>() + "…"
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_catches_bad_codes_dates_and_unknown_elements() {
        assert!(
            validate(
                &json!({"resourceType": "Patient", "gender": "female", "birthDate": "1980-01-02"})
            )
            .is_empty()
        );
        let bad = validate(
            &json!({"resourceType": "Patient", "gender": "banana", "birthDate": "1980-13-45", "foo": 1}),
        );
        let paths: Vec<&str> = bad.iter().map(|i| i.path.as_str()).collect();
        assert!(paths.contains(&"/gender"), "{bad:?}");
        assert!(paths.contains(&"/birthDate"), "{bad:?}");
        assert!(bad.iter().any(|i| i.message.contains("foo")), "{bad:?}");
    }

    #[test]
    fn required_elements_are_checked() {
        let bad = validate(&json!({"resourceType": "Observation", "code": {"text": "x"}}));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].path, "/status");
        let bad = validate(
            &json!({"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"}, "patient": {"reference": "Patient/1"}}),
        );
        assert!(
            bad.iter()
                .any(|i| i.message.contains("occurrenceDateTime or occurrenceString")),
            "{bad:?}"
        );
        assert!(!validate(&json!({"resourceType": "Nonsense"})).is_empty());
    }
}
