//! v2fhir: an HL7 v2 → FHIR R4 gateway.
//!
//! See `ARCHITECTURE.md` for the code map, data flow and invariants.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod clock;
pub mod fhir;
pub mod ingest;
pub mod mapping;
pub mod serve;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod v2;
