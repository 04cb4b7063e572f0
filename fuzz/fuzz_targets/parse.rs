//! Fuzz the v2 parser, grouping, JSON view and ACK builder: nothing may panic, and every ACK we
//! build must itself parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use v2fhir::v2::{self, ack, Structures};

fuzz_target!(|data: &[u8]| {
    let opts = ack::AckOptions { control_id: "F".into(), timestamp: "2024".into(), max_errors: 5 };
    match v2::parse(data) {
        Ok(p) => {
            let _ = v2::json::parsed_json(&p, Structures::builtin());
            for m in &p.messages {
                let plan = ack::plan(m, &v2::json::escape_diagnostics(m));
                let a = ack::build(m, &plan, &opts);
                assert!(v2::parse(a.as_bytes()).is_ok());
            }
        }
        Err(e) => {
            let a = ack::reject_unparsable(&e.to_string(), &opts);
            assert!(v2::parse(a.as_bytes()).is_ok());
        }
    }
});
