//! v2fhir: an HL7 v2 → FHIR R4 gateway.
//!
//! See `ARCHITECTURE.md` for the code map, data flow and invariants.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod fhir;
pub mod mapping;
pub mod v2;
