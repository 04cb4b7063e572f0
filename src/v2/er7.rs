//! The ER7 (pipe-delimited) writer: an owned segment tree, escaped on output. Used for ACKs and
//! for re-encoding messages (e.g. with standard delimiters).

use super::delims::Delimiters;
use super::escape;
use super::model::{Datum, Message, Value};

/// A leaf value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Leaf {
    /// Nothing (empty).
    #[default]
    Absent,
    /// `""`, explicit null.
    Null,
    /// Text, unescaped.
    Text(String),
}

impl Leaf {
    /// Text leaf; empty text becomes [`Leaf::Absent`].
    pub fn text(s: impl Into<String>) -> Leaf {
        let s = s.into();
        if s.is_empty() {
            Leaf::Absent
        } else {
            Leaf::Text(s)
        }
    }
}

/// Subcomponents of one component.
pub type OwnedComponent = Vec<Leaf>;
/// Components of one repetition.
pub type OwnedRepetition = Vec<OwnedComponent>;
/// Repetitions of one field.
pub type OwnedField = Vec<OwnedRepetition>;

/// An owned segment. `fields[i]` is field `i + 1`; for MSH/FHS/BHS, `fields[0]` and `fields[1]`
/// (the delimiters) are ignored on output: the writer's delimiters are written instead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedSegment {
    /// Segment id.
    pub id: String,
    /// Fields, from field 1.
    pub fields: Vec<OwnedField>,
}

/// A field holding one text value.
pub fn field_text(s: impl Into<String>) -> OwnedField {
    vec![vec![vec![Leaf::text(s)]]]
}

/// A field holding one repetition of text components.
pub fn field_components(parts: &[&str]) -> OwnedField {
    vec![parts.iter().map(|p| vec![Leaf::text(*p)]).collect()]
}

/// An owned copy of a parsed value, decoded (escape sequences resolved).
pub fn owned_field(v: Value<'_>) -> OwnedField {
    v.children()
        .map(|rep| {
            rep.children()
                .map(|comp| comp.children().map(owned_leaf).collect())
                .collect()
        })
        .collect()
}

fn owned_leaf(v: Value<'_>) -> Leaf {
    match v.datum() {
        Datum::Absent => Leaf::Absent,
        Datum::Null => Leaf::Null,
        Datum::Text(t) => Leaf::Text(t.into_owned()),
    }
}

/// Owned copies of every segment of a parsed message.
pub fn owned_segments(msg: &Message<'_>) -> Vec<OwnedSegment> {
    msg.segments()
        .map(|s| OwnedSegment {
            id: s.id().to_string(),
            fields: s.fields().map(|(_, v)| owned_field(v)).collect(),
        })
        .collect()
}

fn trim_trailing<T>(v: &[T], empty: impl Fn(&T) -> bool) -> &[T] {
    let mut n = v.len();
    while n > 0 && empty(&v[n - 1]) {
        n -= 1;
    }
    &v[..n]
}

fn comp_empty(c: &OwnedComponent) -> bool {
    c.iter().all(|l| *l == Leaf::Absent)
}
fn rep_empty(r: &OwnedRepetition) -> bool {
    r.iter().all(comp_empty)
}
fn field_empty(f: &OwnedField) -> bool {
    f.iter().all(rep_empty)
}

fn write_leaf(l: &Leaf, d: &Delimiters, out: &mut String) {
    match l {
        Leaf::Absent => {}
        Leaf::Null => out.push_str("\"\""),
        // A text that is literally `""` must not read back as null.
        Leaf::Text(t) if t == "\"\"" => {
            let e = d.escape.unwrap_or(b'\\') as char;
            out.push(e);
            out.push_str("X22");
            out.push(e);
            out.push('"');
        }
        Leaf::Text(t) => escape::encode(t, d, out),
    }
}

/// Write one field with `d` (escape and subcomponent characters must be set; see [`Delimiters::default`]).
pub fn write_field(f: &OwnedField, d: &Delimiters, out: &mut String) {
    let sub = d.subcomponent.unwrap_or(b'&') as char;
    for (ri, rep) in trim_trailing(f, rep_empty).iter().enumerate() {
        if ri > 0 {
            out.push(d.repetition as char);
        }
        for (ci, comp) in trim_trailing(rep, comp_empty).iter().enumerate() {
            if ci > 0 {
                out.push(d.component as char);
            }
            for (si, leaf) in trim_trailing(comp, |l| *l == Leaf::Absent)
                .iter()
                .enumerate()
            {
                if si > 0 {
                    out.push(sub);
                }
                write_leaf(leaf, d, out);
            }
        }
    }
}

/// Write one segment (without terminator).
pub fn write_segment(seg: &OwnedSegment, d: &Delimiters, out: &mut String) {
    out.push_str(&seg.id);
    let header = matches!(seg.id.as_str(), "MSH" | "FHS" | "BHS");
    let fields = trim_trailing(&seg.fields, field_empty);
    if header {
        out.push(d.field as char);
        out.push_str(&d.encoding_characters());
        for f in fields.iter().skip(2) {
            out.push(d.field as char);
            write_field(f, d, out);
        }
    } else {
        for f in fields {
            out.push(d.field as char);
            write_field(f, d, out);
        }
    }
}

/// Write a whole message, each segment terminated by CR.
pub fn write_message(segs: &[OwnedSegment], d: &Delimiters) -> String {
    let d = usable(d);
    let mut out = String::with_capacity(segs.len() * 64);
    for s in segs {
        write_segment(s, &d, &mut out);
        out.push('\r');
    }
    out
}

/// Delimiters that can express every value: the given ones if escape and subcomponent
/// characters are declared, else the standard set.
pub fn usable(d: &Delimiters) -> Delimiters {
    if d.escape.is_some() && d.subcomponent.is_some() {
        *d
    } else {
        Delimiters::default()
    }
}
