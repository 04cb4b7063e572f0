//! FHIR R4 output: validation (official JSON Schema + required elements), bundles, ids, dates.

pub mod compartment;
pub mod datetime;
pub mod ids;
pub mod intake;
pub mod json;
pub mod oru;
pub mod search;
pub mod validate;
pub mod vxu;
