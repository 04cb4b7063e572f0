//! Declarative mappings: loading (YAML with positions, JSON Schema, semantic checks), compiling
//! to a plan, and evaluating the plan against a parsed v2 message to produce FHIR resources.

pub mod ast;
pub mod eval;
pub mod functions;
pub mod load;
pub mod plan;
pub mod tests;
pub mod yaml;
