//! The HL7 v2 message model: parser, escapes, character sets, batches, segment groups, the ER7
//! writer and the ACK builder.
//!
//! Invariant: this module knows nothing of FHIR, HTTP, storage or the network. It turns bytes
//! into [`Message`]s with [`Diagnostic`]s and messages back into bytes.

pub mod ack;
pub mod charset;
pub mod delims;
pub mod diag;
pub mod er7;
pub mod escape;
pub mod header;
pub mod json;
pub mod model;
pub mod parse;
pub mod path;
pub mod structure;

pub use charset::Charset;
pub use delims::Delimiters;
pub use diag::{Code, Diagnostic, Hl7Error, Location, Severity};
pub use header::{Hd, Header};
pub use model::{BatchPosition, Datum, Level, Message, Segment, Value};
pub use parse::{
    Batch, EnvelopeSegment, FileEnvelope, ParseError, ParseOptions, Parsed, parse, parse_with,
};
pub use path::Path;
pub use structure::{GroupInstance, GroupItem, Structures};
