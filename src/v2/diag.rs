//! Diagnostics: what the parser (or a later stage) found wrong, and exactly where.
//!
//! The parser never fails silently: every repair, guess or oddity becomes a [`Diagnostic`]
//! with a severity, a stable code, and a [`Location`] (segment, field, byte offset, line).

use serde::Serialize;
use std::fmt;

/// How bad a diagnostic is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing (e.g. a Z-segment kept in place); nothing was lost.
    Info,
    /// Input was repaired or interpreted leniently; data is intact but the sender is non-conformant.
    Warning,
    /// Data may be wrong or missing; the message should not be acknowledged with AA.
    Error,
}

/// Stable machine-readable diagnostic codes. The `snake_case` name is part of the public output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// Bytes before the first MSH/FHS/BHS that are not a segment (skipped).
    LeadingJunk,
    /// A UTF-8 byte-order mark before the first segment (skipped).
    ByteOrderMark,
    /// No MSH segment found in the input at all.
    NoMsh,
    /// MSH is present but too short to carry delimiters.
    TruncatedMsh,
    /// MSH-2 encoding characters invalid (duplicates, alphanumerics, wrong count); defaults used.
    BadEncodingCharacters,
    /// MSH-2 deviates from the standard but was interpreted unambiguously.
    NonStandardEncodingCharacters,
    /// A line that does not start with a segment id, appended to the previous segment.
    ContinuationLine,
    /// A segment id that is not three upper-case letters or digits.
    BadSegmentId,
    /// Empty line(s) between segments.
    EmptyLine,
    /// Segment terminators are not the standard CR (LF, CRLF or mixed).
    NonStandardTerminator,
    /// Bytes are not valid in the declared (or default) character set; a fallback decoder was used.
    InvalidCharacters,
    /// MSH-18 names a character set we do not know or do not support.
    UnknownCharset,
    /// An escape sequence we do not know, or that is malformed; kept verbatim.
    UnknownEscape,
    /// MSH-9/MSH-10/MSH-11/MSH-12 missing or odd.
    HeaderField,
    /// FHS/BHS/BTS/FTS envelope problems (missing trailer, count mismatch, stray trailer).
    BatchEnvelope,
    /// A segment not expected at this position by the message structure (kept in place).
    UnexpectedSegment,
    /// A Z-segment (site-defined); kept in place.
    ZSegment,
    /// A required segment is missing according to the message structure.
    MissingSegment,
    /// No structure definition known for this message type.
    UnknownStructure,
    /// The segments follow another structure than the one declared, which was used instead.
    StructureFallback,
    /// Input exceeds a configured or absolute limit.
    TooLarge,
    /// Segments that belong to no message (no MSH before them); skipped.
    OrphanSegment,
    /// A later stage (conversion to FHIR) failed for this message; the text says why.
    Conversion,
}

impl Code {
    /// The stable snake_case name used in JSON output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::LeadingJunk => "leading_junk",
            Code::ByteOrderMark => "byte_order_mark",
            Code::NoMsh => "no_msh",
            Code::TruncatedMsh => "truncated_msh",
            Code::BadEncodingCharacters => "bad_encoding_characters",
            Code::NonStandardEncodingCharacters => "non_standard_encoding_characters",
            Code::ContinuationLine => "continuation_line",
            Code::BadSegmentId => "bad_segment_id",
            Code::EmptyLine => "empty_line",
            Code::NonStandardTerminator => "non_standard_terminator",
            Code::InvalidCharacters => "invalid_characters",
            Code::UnknownCharset => "unknown_charset",
            Code::UnknownEscape => "unknown_escape",
            Code::HeaderField => "header_field",
            Code::BatchEnvelope => "batch_envelope",
            Code::UnexpectedSegment => "unexpected_segment",
            Code::ZSegment => "z_segment",
            Code::MissingSegment => "missing_segment",
            Code::UnknownStructure => "unknown_structure",
            Code::StructureFallback => "structure_fallback",
            Code::TooLarge => "too_large",
            Code::OrphanSegment => "orphan_segment",
            Code::Conversion => "conversion",
        }
    }

    /// The HL7 table 0357 ("Message error condition codes") code that best describes this diagnostic
    /// when it is reported in an ERR segment.
    pub fn hl7_error_code(self) -> Hl7Error {
        match self {
            Code::UnexpectedSegment | Code::BadSegmentId => Hl7Error::SegmentSequenceError,
            Code::MissingSegment | Code::HeaderField => Hl7Error::RequiredFieldMissing,
            Code::InvalidCharacters | Code::UnknownEscape | Code::BadEncodingCharacters => {
                Hl7Error::DataTypeError
            }
            Code::UnknownCharset => Hl7Error::TableValueNotFound,
            Code::UnknownStructure => Hl7Error::UnsupportedMessageType,
            Code::TooLarge => Hl7Error::ValueTooLong,
            Code::Conversion => Hl7Error::ApplicationInternalError,
            _ => Hl7Error::SegmentSequenceError,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HL7 table 0357, message error condition codes (v2.5+), used in ERR-3 and ERR-1.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Hl7Error {
    /// 0 — Message accepted.
    MessageAccepted,
    /// 100 — Segment sequence error.
    SegmentSequenceError,
    /// 101 — Required field missing.
    RequiredFieldMissing,
    /// 102 — Data type error.
    DataTypeError,
    /// 103 — Table value not found.
    TableValueNotFound,
    /// 104 — Value too long.
    ValueTooLong,
    /// 200 — Unsupported message type.
    UnsupportedMessageType,
    /// 201 — Unsupported event code.
    UnsupportedEventCode,
    /// 202 — Unsupported processing id.
    UnsupportedProcessingId,
    /// 203 — Unsupported version id.
    UnsupportedVersionId,
    /// 204 — Unknown key identifier.
    UnknownKeyIdentifier,
    /// 205 — Duplicate key identifier.
    DuplicateKeyIdentifier,
    /// 206 — Application record locked.
    ApplicationRecordLocked,
    /// 207 — Application internal error.
    ApplicationInternalError,
}

impl Hl7Error {
    /// The numeric code as written in ERR.
    pub fn code(self) -> u16 {
        match self {
            Hl7Error::MessageAccepted => 0,
            Hl7Error::SegmentSequenceError => 100,
            Hl7Error::RequiredFieldMissing => 101,
            Hl7Error::DataTypeError => 102,
            Hl7Error::TableValueNotFound => 103,
            Hl7Error::ValueTooLong => 104,
            Hl7Error::UnsupportedMessageType => 200,
            Hl7Error::UnsupportedEventCode => 201,
            Hl7Error::UnsupportedProcessingId => 202,
            Hl7Error::UnsupportedVersionId => 203,
            Hl7Error::UnknownKeyIdentifier => 204,
            Hl7Error::DuplicateKeyIdentifier => 205,
            Hl7Error::ApplicationRecordLocked => 206,
            Hl7Error::ApplicationInternalError => 207,
        }
    }

    /// The display text from table 0357.
    pub fn text(self) -> &'static str {
        match self {
            Hl7Error::MessageAccepted => "Message accepted",
            Hl7Error::SegmentSequenceError => "Segment sequence error",
            Hl7Error::RequiredFieldMissing => "Required field missing",
            Hl7Error::DataTypeError => "Data type error",
            Hl7Error::TableValueNotFound => "Table value not found",
            Hl7Error::ValueTooLong => "Value too long",
            Hl7Error::UnsupportedMessageType => "Unsupported message type",
            Hl7Error::UnsupportedEventCode => "Unsupported event code",
            Hl7Error::UnsupportedProcessingId => "Unsupported processing id",
            Hl7Error::UnsupportedVersionId => "Unsupported version id",
            Hl7Error::UnknownKeyIdentifier => "Unknown key identifier",
            Hl7Error::DuplicateKeyIdentifier => "Duplicate key identifier",
            Hl7Error::ApplicationRecordLocked => "Application record locked",
            Hl7Error::ApplicationInternalError => "Application internal error",
        }
    }
}

/// Where a diagnostic applies. Every part is optional except the byte offset into the input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Location {
    /// Segment id (e.g. `PID`), if the problem is inside a segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// 1-based position of the segment within its message (MSH = 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_seq: Option<u32>,
    /// 1-based field number (HL7 numbering: MSH-1 is the field separator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<u32>,
    /// 1-based repetition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition: Option<u32>,
    /// 1-based component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<u32>,
    /// Byte offset into the input as given to the parser.
    pub offset: usize,
    /// 1-based line number in the input (counting CR, LF and CRLF as line breaks).
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, byte {}", self.line, self.offset)?;
        if let Some(seg) = &self.segment {
            write!(f, ", {seg}")?;
            if let Some(n) = self.segment_seq {
                write!(f, " (segment #{n})")?;
            }
            if let Some(field) = self.field {
                write!(f, " {seg}-{field}")?;
                if let Some(r) = self.repetition {
                    write!(f, "[{r}]")?;
                }
                if let Some(c) = self.component {
                    write!(f, ".{c}")?;
                }
            }
        }
        Ok(())
    }
}

/// One finding: what was wrong, where, and how bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// How bad it is.
    pub severity: Severity,
    /// Stable code.
    pub code: Code,
    /// Where.
    pub location: Location,
    /// Human-readable text. Never contains field values from the message (no PHI).
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{sev}[{}] {}: {}",
            self.code, self.location, self.message
        )
    }
}

impl Diagnostic {
    /// Shorthand constructor.
    pub fn new(
        severity: Severity,
        code: Code,
        location: Location,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            code,
            location,
            message: message.into(),
        }
    }
}
