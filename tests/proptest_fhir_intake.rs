//! Property: whatever a FHIR client sends to the FHIR source — bytes, JSON of any shape, Bundles
//! with random entries — deciding it never panics, and the decision keeps its promises: a
//! refused transaction stores nothing, everything stored is valid R4 with the id its entry was
//! given, reads store nothing, and every entry gets exactly one answer.

use proptest::prelude::*;
use serde_json::{Value, json};
use v2fhir::fhir::intake::{self, Plan};
use v2fhir::store::Status;
use v2fhir::v2::ack::Outcome;

/// A JSON value of any shape (small), with FHIR-ish keys now and then.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|i| json!(i)),
        "[a-zA-Z0-9 :/|.-]{0,12}".prop_map(Value::String),
        Just(json!("urn:uuid:p1")),
        Just(json!("Patient/p1")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("resourceType".to_string()),
                        Just("id".to_string()),
                        Just("status".to_string()),
                        Just("reference".to_string()),
                        Just("identifier".to_string()),
                        Just("meta".to_string()),
                        "[a-z]{1,8}",
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A resource: sometimes valid, sometimes not.
fn resource() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}]})),
        Just(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
            "subject": {"reference": "urn:uuid:p1"}})
        ),
        Just(json!({"resourceType": "Observation", "status": "banana", "code": {"text": "hr"}})),
        Just(
            json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}})
        ),
        any_json(),
    ]
}

fn entry() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("POST"),
            Just("PUT"),
            Just("DELETE"),
            Just("GET"),
            Just("PATCH")
        ],
        prop_oneof![
            Just("Patient".to_string()),
            Just("Observation".to_string()),
            Just("Observation/o1".to_string()),
            Just("Patient/p1".to_string()),
            Just("Banana/1".to_string()),
            Just("Observation?code=1".to_string()),
            "[A-Za-z/0-9.?=-]{0,16}",
        ],
        prop::option::of(resource()),
        prop::option::of(prop_oneof![Just("urn:uuid:p1".to_string()), "[a-z:]{0,10}"]),
    )
        .prop_map(|(method, url, res, full)| {
            let mut e = json!({"request": {"method": method, "url": url}});
            if let Some(r) = res {
                e["resource"] = r;
            }
            if let Some(f) = full {
                e["fullUrl"] = json!(f);
            }
            e
        })
}

/// A well-formed entry (valid or not as R4): the url matches the resource.
fn good_entry() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(json!({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}]})),
            Just(json!({"resourceType": "Patient", "gender": "female"})),
            Just(json!({"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                "subject": {"reference": "urn:uuid:p1"}})),
            Just(json!({"resourceType": "Observation", "status": "final", "code": {"text": "spo2"},
                "valueQuantity": {"value": 97}})),
            Just(json!({"resourceType": "Observation", "status": "banana", "code": {"text": "hr"}})),
        ],
        0..3usize,
        "[a-z0-9]{1,6}",
        any::<bool>(),
    )
        .prop_map(|(res, how, id, full)| {
            let ty = res["resourceType"].as_str().unwrap_or("Patient").to_string();
            let mut e = match how {
                0 => json!({"resource": res, "request": {"method": "POST", "url": ty}}),
                1 => {
                    let mut r = res;
                    r["id"] = json!(id);
                    json!({"resource": r, "request": {"method": "PUT", "url": format!("{ty}/{id}")}})
                }
                _ => json!({"request": {"method": "DELETE", "url": format!("{ty}/{id}")}}),
            };
            if full && ty == "Patient" {
                e["fullUrl"] = json!("urn:uuid:p1");
            }
            e
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => any_json().prop_map(|v| v.to_string().into_bytes()),
        4 => (
            prop_oneof![3 => Just("transaction"), 3 => Just("batch"), 1 => Just("collection")],
            prop::collection::vec(prop_oneof![3 => good_entry(), 1 => entry()], 0..6)
        )
            .prop_map(|(kind, entries)| {
                json!({"resourceType": "Bundle", "type": kind, "entry": entries})
                    .to_string()
                    .into_bytes()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_submission_is_decided_and_the_decision_holds(raw in body()) {
        let p = intake::prepare(&raw, 1, true);
        let plan = Plan::from_ack(&p.row.ack).expect("the decision is stored with the row");
        prop_assert_eq!(p.acks.len(), 1);
        // Refused whole: nothing stored, and the reason is given.
        if plan.status.is_some() {
            prop_assert!(p.row.resources.is_empty());
            prop_assert!(p.row.output.is_none());
            prop_assert!(p.outcome != Outcome::Accept);
            prop_assert!(p.row.diagnostics.is_some());
        }
        // Every refused entry says why; stored entries have a type and an id.
        for e in &plan.entries {
            match e.status {
                Some(_) => prop_assert!(e.outcome.is_some()),
                None => {
                    prop_assert!(!e.resource_type.is_empty());
                    prop_assert!(!e.id.is_empty());
                }
            }
        }
        // What is stored is valid R4, under the id its entry was given.
        let stored: Vec<(&str, &str)> = plan
            .entries
            .iter()
            // Reads (GET entries) write nothing.
            .filter(|e| e.status.is_none() && e.method != "GET")
            .map(|e| (e.resource_type.as_str(), e.id.as_str()))
            .collect();
        prop_assert_eq!(p.row.resources.len(), if plan.status.is_some() { 0 } else { stored.len() });
        for r in &p.row.resources {
            prop_assert!(stored.contains(&(r.resource_type.as_str(), r.id.as_str())));
            if !r.deleted {
                let v: Value = serde_json::from_str(&r.content).expect("stored JSON");
                prop_assert!(v2fhir::fhir::validate::validate(&v).is_empty(), "{}", r.content);
            }
        }
        if p.row.status == Status::Converted {
            prop_assert_eq!(p.outcome, Outcome::Accept);
        }
    }
}
