//! The ACK builder: original mode (AA/AE/AR) and enhanced mode (CA/CE/CR), MSH with sender and
//! receiver swapped, MSA with the original control id, ERR segments with HL7 table 0357 codes and
//! the error location — in the same version, delimiters and character set as the inbound message.

use super::delims::Delimiters;
use super::diag::{Diagnostic, Hl7Error, Location, Severity};
use super::er7::{self, Leaf, OwnedSegment, field_components, field_text, owned_field};
use super::model::Message;
use serde::Serialize;

/// MSA-1 acknowledgment codes (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AckCode {
    /// Original mode: application accept.
    AA,
    /// Original mode: application error.
    AE,
    /// Original mode: application reject.
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit error.
    CE,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    /// The two letters.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// Outcome class regardless of mode.
    pub fn outcome(self) -> Outcome {
        match self {
            AckCode::AA | AckCode::CA => Outcome::Accept,
            AckCode::AE | AckCode::CE => Outcome::Error,
            AckCode::AR | AckCode::CR => Outcome::Reject,
        }
    }

    /// The code for an outcome in original or enhanced mode.
    pub fn for_outcome(o: Outcome, enhanced: bool) -> AckCode {
        match (o, enhanced) {
            (Outcome::Accept, false) => AckCode::AA,
            (Outcome::Error, false) => AckCode::AE,
            (Outcome::Reject, false) => AckCode::AR,
            (Outcome::Accept, true) => AckCode::CA,
            (Outcome::Error, true) => AckCode::CE,
            (Outcome::Reject, true) => AckCode::CR,
        }
    }
}

/// Accept, error or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Accepted.
    Accept,
    /// Accepted for storage, but processing failed.
    Error,
    /// Not accepted.
    Reject,
}

/// One ERR segment's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckError {
    /// HL7 table 0357 code.
    pub code: Hl7Error,
    /// E, W or I in ERR-4.
    pub severity: Severity,
    /// Where (segment id, sequence, field, repetition, component).
    pub location: Location,
    /// Human-readable text (no PHI).
    pub text: String,
}

impl From<&Diagnostic> for AckError {
    fn from(d: &Diagnostic) -> Self {
        AckError {
            code: d.code.hl7_error_code(),
            severity: d.severity,
            location: d.location.clone(),
            text: d.message.clone(),
        }
    }
}

/// What to answer, and whether the sender wants it sent.
#[derive(Debug, Clone, Serialize)]
pub struct AckPlan {
    /// MSA-1.
    pub code: AckCode,
    /// False when MSH-15 (enhanced mode) says the sender does not want this ACK (`NE`, or `ER`/`SU` not matching).
    pub send: bool,
    /// ERR segments.
    pub errors: Vec<AckError>,
}

/// Settings for building ACKs.
#[derive(Debug, Clone)]
pub struct AckOptions {
    /// MSH-10 of the ACK.
    pub control_id: String,
    /// MSH-7 of the ACK (HL7 DTM, e.g. `20261129120000+0000`).
    pub timestamp: String,
    /// Most ERR segments to write; the rest are summarized in one more.
    pub max_errors: usize,
}

const PROCESSING_IDS: &[&str] = &["P", "T", "D"];

/// Decide the acknowledgment for a parsed message from its diagnostics (plus `extra` findings from
/// later stages). Rejects: unsupported processing id (202), version not 2.x (203), missing message
/// type or control id (101). Errors (AE/CE): any error-severity diagnostic. Otherwise accept.
pub fn plan(msg: &Message<'_>, extra: &[Diagnostic]) -> AckPlan {
    let h = msg.header();
    let enhanced = h.enhanced_mode();
    let mut errors: Vec<AckError> = Vec::new();
    let msh = |field: u32| Location {
        segment: Some("MSH".into()),
        segment_seq: Some(1),
        field: Some(field),
        offset: msg.offset(),
        line: msg.segment(0).map(|s| s.line()).unwrap_or(1),
        ..Location::default()
    };
    let mut reject = |code: Hl7Error, field: u32, text: String| {
        errors.push(AckError {
            code,
            severity: Severity::Error,
            location: msh(field),
            text,
        });
    };
    match h.processing_id.as_deref() {
        Some(p) if !PROCESSING_IDS.contains(&p) => reject(
            Hl7Error::UnsupportedProcessingId,
            11,
            format!("processing id '{p}' is not supported (P, T or D)"),
        ),
        _ => {}
    }
    if let Some((major, _)) = h.version_number()
        && major != 2
    {
        reject(
            Hl7Error::UnsupportedVersionId,
            12,
            format!("version {major}.x is not HL7 v2"),
        );
    }
    if h.message_code.is_none() {
        reject(
            Hl7Error::RequiredFieldMissing,
            9,
            "MSH-9 (message type) is empty".into(),
        );
    }
    if h.control_id.is_none() {
        reject(
            Hl7Error::RequiredFieldMissing,
            10,
            "MSH-10 (message control id) is empty".into(),
        );
    }
    let rejected = !errors.is_empty();
    let all = msg.diagnostics().iter().chain(extra.iter());
    let mut has_error = false;
    for d in all {
        if d.severity == Severity::Info {
            continue;
        }
        if d.severity == Severity::Error {
            has_error = true;
        }
        // Header problems already reported above as rejections.
        if rejected && d.code == super::diag::Code::HeaderField {
            continue;
        }
        errors.push(AckError::from(d));
    }
    let outcome = if rejected {
        Outcome::Reject
    } else if has_error {
        Outcome::Error
    } else {
        Outcome::Accept
    };
    let code = AckCode::for_outcome(outcome, enhanced);
    let send = if enhanced {
        match h.accept_ack_type.as_deref().map(str::trim) {
            Some("NE") => false,
            Some("ER") => outcome != Outcome::Accept,
            Some("SU") => outcome == Outcome::Accept,
            _ => true,
        }
    } else {
        true
    };
    AckPlan { code, send, errors }
}

fn location_field(loc: &Location) -> Vec<Vec<Leaf>> {
    let n = |v: Option<u32>| v.map(|x| Leaf::text(x.to_string())).unwrap_or_default();
    vec![
        vec![loc.segment.clone().map(Leaf::text).unwrap_or_default()],
        vec![n(loc.segment_seq)],
        vec![n(loc.field)],
        vec![n(loc.repetition.or(loc.field.map(|_| 1)))],
        vec![n(loc.component)],
    ]
}

fn severity_code(s: Severity) -> &'static str {
    match s {
        Severity::Error => "E",
        Severity::Warning => "W",
        Severity::Info => "I",
    }
}

/// Build the ACK for `msg` (ER7, segments terminated by CR).
pub fn build(msg: &Message<'_>, plan: &AckPlan, opts: &AckOptions) -> String {
    let d = er7::usable(msg.delimiters());
    let h = msg.header();
    let msh_in = msg.segment(0);
    let copy = |n: usize| msh_in.map(|s| owned_field(s.field(n))).unwrap_or_default();
    let modern = h.version_number().is_none_or(|v| v >= (2, 5));
    let with_structure = h.version_number().is_none_or(|v| v >= (2, 4));
    let trigger = h.trigger_event.as_deref().unwrap_or("");
    let msg_type: Vec<&str> = if with_structure {
        vec!["ACK", trigger, "ACK"]
    } else {
        vec!["ACK", trigger]
    };
    let mut msh = OwnedSegment {
        id: "MSH".into(),
        fields: vec![vec![]; 18],
    };
    msh.fields[2] = copy(5);
    msh.fields[3] = copy(6);
    msh.fields[4] = copy(3);
    msh.fields[5] = copy(4);
    msh.fields[6] = field_text(opts.timestamp.clone());
    msh.fields[8] = field_components(&msg_type);
    msh.fields[9] = field_text(opts.control_id.clone());
    msh.fields[10] = copy(11);
    msh.fields[11] = copy(12);
    msh.fields[17] = copy(18);
    let mut segs = vec![msh];
    let control = h.control_id.as_deref().unwrap_or("").to_string();
    let mut msa = OwnedSegment {
        id: "MSA".into(),
        fields: vec![field_text(plan.code.as_str()), field_text(control)],
    };
    if !modern && let Some(e) = plan.errors.first() {
        msa.fields.push(field_text(e.text.clone()));
    }
    segs.push(msa);
    let shown = plan.errors.len().min(opts.max_errors);
    let mut errs: Vec<AckError> = plan.errors[..shown].to_vec();
    if plan.errors.len() > shown {
        errs.push(AckError {
            code: Hl7Error::ApplicationInternalError,
            severity: Severity::Warning,
            location: Location::default(),
            text: format!("{} more finding(s) not listed", plan.errors.len() - shown),
        });
    }
    for e in errs {
        let code = e.code.code().to_string();
        let err = if modern {
            // ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 user message.
            let mut fields = vec![vec![]; 8];
            let loc = location_field(&e.location);
            if e.location.segment.is_some() {
                fields[1] = vec![loc];
            }
            fields[2] = field_components(&[&code, e.code.text(), "HL70357"]);
            fields[3] = field_text(severity_code(e.severity));
            fields[7] = field_text(e.text);
            OwnedSegment {
                id: "ERR".into(),
                fields,
            }
        } else {
            // v2.1–2.4: ERR-1 ELD = segment^sequence^field^code&text&HL70357.
            let mut loc = location_field(&e.location);
            loc.truncate(3);
            loc.push(vec![
                Leaf::text(code),
                Leaf::text(e.code.text()),
                Leaf::text("HL70357"),
            ]);
            OwnedSegment {
                id: "ERR".into(),
                fields: vec![vec![loc]],
            }
        };
        segs.push(err);
    }
    er7::write_message(&segs, &d)
}

/// The negative acknowledgment for input with no usable MSH: standard delimiters, empty MSA-2.
pub fn reject_unparsable(reason: &str, opts: &AckOptions) -> String {
    let d = Delimiters::default();
    let mut msh = OwnedSegment {
        id: "MSH".into(),
        fields: vec![vec![]; 12],
    };
    msh.fields[2] = field_text("V2FHIR");
    msh.fields[6] = field_text(opts.timestamp.clone());
    msh.fields[8] = field_components(&["ACK", "", "ACK"]);
    msh.fields[9] = field_text(opts.control_id.clone());
    msh.fields[10] = field_text("P");
    msh.fields[11] = field_text("2.5.1");
    let msa = OwnedSegment {
        id: "MSA".into(),
        fields: vec![field_text("AR"), vec![]],
    };
    let mut err = OwnedSegment {
        id: "ERR".into(),
        fields: vec![vec![]; 8],
    };
    err.fields[2] = field_components(&["100", Hl7Error::SegmentSequenceError.text(), "HL70357"]);
    err.fields[3] = field_text("E");
    err.fields[7] = field_text(reason);
    er7::write_message(&[msh, msa, err], &d)
}
