//! A JSON view of parsed messages, for `v2fhir parse` and for humans: every valued leaf keyed by
//! its HL7 address (`PID-3[2].4.1`), `null` for `""`, plus header facts, groups and diagnostics.

use super::diag::{Code, Diagnostic, Location, Severity};
use super::model::{Datum, Message, Segment, Value};
use super::parse::Parsed;
use super::structure::{GroupInstance, GroupItem, Structures};
use serde_json::{Map, Value as J, json};

fn leaf_json(d: Datum<'_>) -> Option<J> {
    match d {
        Datum::Absent => None,
        Datum::Null => Some(J::Null),
        Datum::Text(t) => Some(J::String(t.into_owned())),
    }
}

/// Escape-sequence problems in every value of the message, as diagnostics with locations.
pub fn escape_diagnostics(msg: &Message<'_>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(esc) = msg.delimiters().escape else {
        return out;
    };
    for seg in msg.segments() {
        // Fast path: no escape character in the segment (MSH's encoding characters aside), no
        // escape sequence to check.
        let raw = seg.raw();
        let body = if seg.id() == "MSH" {
            &raw[raw.len().min(8)..]
        } else {
            raw
        };
        if memchr::memchr(esc, body).is_none() {
            continue;
        }
        walk_segment(msg, &seg, &mut |_, _| {}, &mut out);
    }
    out
}

fn walk_segment(
    msg: &Message<'_>,
    seg: &Segment<'_, '_>,
    emit: &mut dyn FnMut(String, J),
    diags: &mut Vec<Diagnostic>,
) {
    let id = seg.id();
    let base = msg.raw().as_ptr() as usize;
    let msg_off = msg.offset();
    for (n, field) in seg.fields() {
        if field.is_empty() {
            continue;
        }
        let reps: Vec<Value<'_>> = field.children().collect();
        let many_reps = reps.len() > 1;
        for (ri, rep) in reps.iter().enumerate() {
            let rep_key = if many_reps {
                format!("{id}-{n}[{}]", ri + 1)
            } else {
                format!("{id}-{n}")
            };
            let comps: Vec<Value<'_>> = rep.children().collect();
            let many_comps = comps.len() > 1;
            for (ci, comp) in comps.iter().enumerate() {
                let subs: Vec<Value<'_>> = comp.children().collect();
                let many_subs = subs.len() > 1;
                for (si, sub) in subs.iter().enumerate() {
                    let key = match (many_comps, many_subs) {
                        (false, false) => rep_key.clone(),
                        (true, false) => format!("{rep_key}.{}", ci + 1),
                        (_, true) => format!("{rep_key}.{}.{}", ci + 1, si + 1),
                    };
                    let leaf_off = (sub.raw().as_ptr() as usize).wrapping_sub(base) + msg_off;
                    let datum = sub.datum_checked(&mut |issue| {
                        diags.push(Diagnostic::new(
                            Severity::Warning,
                            Code::UnknownEscape,
                            Location {
                                segment: Some(id.to_string()),
                                segment_seq: Some(seg.index() as u32 + 1),
                                field: Some(n as u32),
                                repetition: Some(ri as u32 + 1),
                                component: Some(ci as u32 + 1),
                                offset: leaf_off + issue.offset,
                                line: seg.line(),
                            },
                            issue.message,
                        ))
                    });
                    if let Some(j) = leaf_json(datum) {
                        emit(key, j);
                    }
                }
            }
        }
    }
}

fn group_json(g: &GroupInstance, msg: &Message<'_>) -> J {
    let items: Vec<J> = g
        .items
        .iter()
        .map(|i| match i {
            GroupItem::Segment(s) => json!(format!(
                "{}#{}",
                msg.segment(*s).map(|x| x.id()).unwrap_or("?"),
                s
            )),
            GroupItem::Group(sub) => group_json(sub, msg),
        })
        .collect();
    json!({ "group": &*g.name, "items": items })
}

/// The JSON view of one message, with grouping by `structures`.
pub fn message_json(msg: &Message<'_>, index: usize, structures: &Structures) -> J {
    let mut diags: Vec<Diagnostic> = msg.diagnostics().to_vec();
    let grouping = structures.group(msg);
    diags.extend(grouping.diagnostics.iter().cloned());
    let mut segments = Vec::with_capacity(msg.len());
    for seg in msg.segments() {
        let mut fields = Map::new();
        walk_segment(
            msg,
            &seg,
            &mut |k, v| {
                fields.insert(k, v);
            },
            &mut diags,
        );
        segments.push(json!({
            "id": seg.id(),
            "line": seg.line(),
            "offset": seg.offset(),
            "fields": fields,
        }));
    }
    let mut m = Map::new();
    m.insert("index".into(), json!(index));
    m.insert("offset".into(), json!(msg.offset()));
    m.insert("length".into(), json!(msg.raw().len()));
    if let Some(b) = msg.batch() {
        m.insert("batch".into(), json!(b));
    }
    m.insert("delimiters".into(), json!(msg.delimiters()));
    m.insert("charset".into(), json!(msg.charset()));
    m.insert("header".into(), json!(msg.header()));
    m.insert("structure".into(), json!(grouping.structure));
    m.insert("segments".into(), J::Array(segments));
    if grouping.structure.is_some() {
        m.insert("groups".into(), group_json(&grouping.root, msg));
    }
    m.insert("diagnostics".into(), json!(diags));
    J::Object(m)
}

/// The JSON view of a whole input.
pub fn parsed_json(p: &Parsed<'_>, structures: &Structures) -> J {
    let messages: Vec<J> = p
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message_json(m, i, structures))
        .collect();
    let mut m = Map::new();
    m.insert("messages".into(), J::Array(messages));
    if !p.batches.is_empty() {
        m.insert("batches".into(), json!(p.batches));
    }
    if let Some(f) = &p.file {
        m.insert("file".into(), json!(f));
    }
    m.insert("diagnostics".into(), json!(p.diagnostics));
    J::Object(m)
}
