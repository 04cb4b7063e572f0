//! Property: converting mutated real messages never panics, and whatever is emitted is valid R4
//! with every reference resolving inside its bundle.

mod common;

use proptest::prelude::*;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::OnceLock;
use v2fhir::mapping::eval::{self, ConvertOptions};
use v2fhir::mapping::plan::Plan;

fn plan() -> &'static Plan {
    static P: OnceLock<Plan> = OnceLock::new();
    P.get_or_init(common::plan)
}

fn seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        common::hl7_files(&common::root().join("tests/golden"))
            .into_iter()
            .map(|p| std::fs::read(p).expect("golden"))
            .collect()
    })
}

/// Byte insertions biased towards delimiters, escapes, nulls and digits.
fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'|'),
            Just(b'^'),
            Just(b'~'),
            Just(b'&'),
            Just(b'\\'),
            Just(b'\r'),
            Just(b'"'),
            Just(b'0'),
            Just(b'9'),
            Just(b'-'),
            Just(b'+'),
            Just(b'.'),
            any::<u8>()
        ],
        0..6,
    )
}

fn check(bytes: &[u8]) {
    let Ok(parsed) = v2fhir::v2::parse(bytes) else {
        return;
    };
    for m in &parsed.messages {
        let c = eval::convert(plan(), m, &ConvertOptions::default());
        let _ = c.outcome();
        let Some(b) = &c.bundle else { continue };
        let entries = b["entry"].as_array().expect("entries");
        let ids: HashSet<String> = entries
            .iter()
            .filter_map(|e| {
                Some(format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str()?,
                    e["resource"]["id"].as_str()?
                ))
            })
            .collect();
        let with_id = entries
            .iter()
            .filter(|e| e["resource"]["id"].is_string())
            .count();
        assert_eq!(ids.len(), with_id, "a Type/id twice in one Bundle");
        for e in entries {
            let r = &e["resource"];
            let problems = v2fhir::fhir::validate::validate(r);
            assert!(
                problems.is_empty(),
                "emitted an invalid resource: {problems:?}"
            );
        }
        // Tracing changes nothing in the output, and names only emitted resources.
        let traced = eval::convert(
            plan(),
            m,
            &ConvertOptions {
                trace: true,
                ..ConvertOptions::default()
            },
        );
        assert_eq!(
            traced.bundle.as_ref(),
            Some(b),
            "tracing changed the Bundle"
        );
        for row in &traced.trace {
            assert!(
                ids.contains(&row.resource),
                "trace row of no resource: {row:?}"
            );
        }
        let mut stack: Vec<&Value> = vec![b];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(r)) = o.get("reference") {
                        assert!(ids.contains(r), "reference {r} does not resolve");
                    }
                    stack.extend(o.values());
                }
                Value::Array(a) => stack.extend(a.iter()),
                _ => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn mutated_golden_messages_convert_safely(
        which in 0usize..7,
        edits in prop::collection::vec((0usize..2000, 0usize..4, junk()), 1..10),
    ) {
        let seed = &seeds()[which % seeds().len()];
        let mut bytes = seed.clone();
        for (at, del, ins) in edits {
            let at = at % (bytes.len() + 1);
            let end = (at + del).min(bytes.len());
            bytes.splice(at..end, ins);
        }
        check(&bytes);
    }

    /// Segments repeated as they are, or repeated with one field changed (same business keys,
    /// other content), never put one id twice in a Bundle nor break a reference.
    #[test]
    fn repeated_segments_never_repeat_an_id(
        which in 0usize..7,
        repeats in prop::collection::vec((1usize..40, any::<bool>()), 1..6),
    ) {
        let seed = &seeds()[which % seeds().len()];
        let mut segs: Vec<Vec<u8>> = seed
            .split(|&b| b == b'\r')
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        for (at, changed) in repeats {
            // Never MSH (index 0): a second MSH starts a second message.
            let i = 1 + at % (segs.len() - 1).max(1);
            let Some(seg) = segs.get(i).cloned() else { continue };
            let mut copy = seg;
            if changed {
                copy.extend_from_slice(b"|||||||||||||||||||||||||X");
            }
            segs.insert(i + 1, copy);
        }
        check(&segs.join(&b'\r'));
    }
}
