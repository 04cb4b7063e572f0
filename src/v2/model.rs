//! The parsed-message model: zero-copy views ([`Message`], [`Segment`], [`Value`]) over the
//! input bytes, with 1-based HL7 addressing (`PID-3[2].4.1`).

use super::charset::Charset;
use super::delims::Delimiters;
use super::diag::Diagnostic;
use super::escape::{self, EscapeIssue};
use super::header::Header;
use serde::Serialize;
use std::borrow::Cow;

/// Find `needle` in `hay`. Values are mostly a few bytes long, where a plain loop beats memchr's
/// per-call setup; long values go to memchr.
#[inline]
pub(crate) fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() < 32 {
        hay.iter().position(|&b| b == needle)
    } else {
        memchr::memchr(needle, hay)
    }
}

/// Index entry for one segment: byte range in the input plus its slice of field-separator positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegIdx {
    pub start: u32,
    pub end: u32,
    pub seps_start: u32,
    pub seps_len: u32,
    pub line: u32,
}

/// One HL7 message: borrowed bytes plus an index of segments and field separators.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub(crate) input: &'a [u8],
    pub(crate) delims: Delimiters,
    pub(crate) charset: Charset,
    pub(crate) declared_charset: Option<Cow<'a, str>>,
    pub(crate) segs: Vec<SegIdx>,
    pub(crate) seps: Vec<u32>,
    pub(crate) header: Header<'a>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) batch: Option<BatchPosition>,
}

/// Where a message sits in a batch file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchPosition {
    /// Index into [`super::Parsed::batches`].
    pub batch: usize,
    /// 1-based position of the message within its batch.
    pub position: u32,
}

/// The nesting level of a [`Value`]: what its children are split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A whole field; children are repetitions.
    Field,
    /// One repetition; children are components.
    Repetition,
    /// One component; children are subcomponents.
    Component,
    /// One subcomponent; no children.
    Subcomponent,
}

/// What a value holds, HL7-wise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum<'a> {
    /// Nothing was sent (empty). The receiver keeps what it had.
    Absent,
    /// `""`: explicitly null. The receiver deletes what it had.
    Null,
    /// Text, escape sequences decoded.
    Text(Cow<'a, str>),
}

/// A zero-copy view of a field, repetition, component or subcomponent.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    bytes: &'a [u8],
    level: Level,
    delims: Delimiters,
    charset: Charset,
    /// MSH-1 / MSH-2: never split, never unescaped.
    literal: bool,
}

impl std::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately no content: values may be PHI.
        f.debug_struct("Value")
            .field("level", &self.level)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl<'a> Value<'a> {
    pub(crate) fn new(
        bytes: &'a [u8],
        level: Level,
        delims: Delimiters,
        charset: Charset,
        literal: bool,
    ) -> Self {
        Value {
            bytes,
            level,
            delims,
            charset,
            literal,
        }
    }

    /// An empty value with standard delimiters (absent, not null).
    pub fn empty() -> Value<'static> {
        Value {
            bytes: &[],
            level: Level::Field,
            delims: Delimiters::default(),
            charset: Charset::Utf8,
            literal: false,
        }
    }

    /// An empty value (used for addresses past the end).
    pub(crate) fn absent(level: Level, delims: Delimiters, charset: Charset) -> Self {
        Value {
            bytes: &[],
            level,
            delims,
            charset,
            literal: false,
        }
    }

    /// The raw bytes, escapes and charset untouched.
    pub fn raw(&self) -> &'a [u8] {
        self.bytes
    }

    /// The nesting level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// True when nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// True for `""` (explicit null).
    pub fn is_null(&self) -> bool {
        self.bytes == b"\"\""
    }

    /// True when the value is neither empty nor null: it holds something besides separators and
    /// blanks (`^^^`, `~` or ` ` alone is as empty as nothing: HL7 v2 lets trailing separators be
    /// sent or left out, and a field of spaces carries no data).
    pub fn is_valued(&self) -> bool {
        if self.is_empty() || self.is_null() {
            return false;
        }
        if self.literal {
            return true;
        }
        let d = &self.delims;
        let sub = d.subcomponent.unwrap_or(d.component);
        // Separators and blanks alone carry no data (`^^^`, `PID|1|| |…`).
        self.bytes
            .iter()
            .any(|&b| b != d.component && b != d.repetition && b != sub && !b.is_ascii_whitespace())
    }

    fn child_delim(&self) -> Option<u8> {
        if self.literal {
            return None;
        }
        match self.level {
            Level::Field => Some(self.delims.repetition),
            Level::Repetition => Some(self.delims.component),
            Level::Component => self.delims.subcomponent,
            Level::Subcomponent => None,
        }
    }

    fn child_level(&self) -> Level {
        match self.level {
            Level::Field => Level::Repetition,
            Level::Repetition => Level::Component,
            Level::Component | Level::Subcomponent => Level::Subcomponent,
        }
    }

    /// Does this value have more than one child (e.g. several repetitions)?
    pub fn has_children(&self) -> bool {
        match self.child_delim() {
            Some(d) => find_byte(d, self.bytes).is_some(),
            None => false,
        }
    }

    /// The children one level down (repetitions of a field, components of a repetition, ...).
    /// An empty value has one empty child; a value at the subcomponent level is its own only child.
    pub fn children(&self) -> Children<'a> {
        Children {
            rest: Some(self.bytes),
            delim: self.child_delim(),
            level: self.child_level(),
            delims: self.delims,
            charset: self.charset,
            literal: self.literal,
        }
    }

    /// The `n`-th child (1-based); absent when out of range or `n == 0`.
    pub fn child(&self, n: usize) -> Value<'a> {
        if n == 0 {
            return Value::absent(self.child_level(), self.delims, self.charset);
        }
        let Some(d) = self.child_delim() else {
            return if n == 1 {
                Value {
                    level: self.child_level(),
                    ..*self
                }
            } else {
                Value::absent(self.child_level(), self.delims, self.charset)
            };
        };
        // Skip n - 1 separators in one scalar pass (children are short: a search call per
        // child costs more than it saves), then cut at the next one.
        let mut rest = self.bytes;
        if n > 1 {
            let mut seen = 1;
            let mut from = None;
            for (i, &b) in self.bytes.iter().enumerate() {
                if b == d {
                    seen += 1;
                    if seen == n {
                        from = Some(i + 1);
                        break;
                    }
                }
            }
            match from {
                Some(p) => rest = self.bytes.get(p..).unwrap_or(&[]),
                None => return Value::absent(self.child_level(), self.delims, self.charset),
            }
        }
        let end = find_byte(d, rest).unwrap_or(rest.len());
        Value {
            bytes: &rest[..end],
            level: self.child_level(),
            ..*self
        }
    }

    /// Where each child ends (offsets into [`Value::raw`], the last one its length), for
    /// [`Value::child_at`]: one pass for a caller that reads several children of one value.
    /// `false` (and `ends` empty) when the value has no child separator: use [`Value::child`].
    pub fn child_ends(&self, ends: &mut smallvec::SmallVec<[u32; 32]>) -> bool {
        ends.clear();
        let Some(d) = self.child_delim() else {
            return false;
        };
        for (i, &b) in self.bytes.iter().enumerate() {
            if b == d {
                ends.push(i as u32);
            }
        }
        ends.push(self.bytes.len() as u32);
        true
    }

    /// Child `n` (1-based) from the `ends` [`Value::child_ends`] gave for this value: the same
    /// value as [`Value::child`]`(n)`.
    pub fn child_at(&self, ends: &[u32], n: usize) -> Value<'a> {
        if n == 0 || n > ends.len() {
            return Value::absent(self.child_level(), self.delims, self.charset);
        }
        let start = if n == 1 { 0 } else { ends[n - 2] as usize + 1 };
        let end = ends[n - 1] as usize;
        Value {
            bytes: self.bytes.get(start..end).unwrap_or(&[]),
            level: self.child_level(),
            ..*self
        }
    }

    /// Repetition `n` (1-based) of a field. On other levels, this value itself for `n == 1`.
    pub fn rep(&self, n: usize) -> Value<'a> {
        match self.level {
            Level::Field => self.child(n),
            _ if n == 1 => *self,
            _ => Value::absent(self.level, self.delims, self.charset),
        }
    }

    /// Component `n` (1-based). On a field, of its first repetition.
    pub fn component(&self, n: usize) -> Value<'a> {
        match self.level {
            Level::Field => self.child(1).child(n),
            Level::Repetition => self.child(n),
            _ if n == 1 => *self,
            _ => Value::absent(Level::Subcomponent, self.delims, self.charset),
        }
    }

    /// Subcomponent `n` (1-based) of a component.
    pub fn sub(&self, n: usize) -> Value<'a> {
        match self.level {
            Level::Component => self.child(n),
            Level::Subcomponent if n == 1 => *self,
            Level::Subcomponent => Value::absent(Level::Subcomponent, self.delims, self.charset),
            _ => self.component(1).sub(n),
        }
    }

    /// Charset-decoded text with escape sequences still in place.
    pub fn raw_text(&self) -> Cow<'a, str> {
        self.charset.decode(self.bytes)
    }

    /// What the value holds, with escapes decoded (issues ignored).
    pub fn datum(&self) -> Datum<'a> {
        self.datum_checked(&mut |_| {})
    }

    /// Like [`Value::datum`], reporting undecodable escape sequences to `issue`.
    pub fn datum_checked(&self, issue: &mut dyn FnMut(EscapeIssue)) -> Datum<'a> {
        if self.is_empty() {
            Datum::Absent
        } else if self.is_null() {
            Datum::Null
        } else if self.literal {
            Datum::Text(self.raw_text())
        } else {
            Datum::Text(escape::decode(
                self.raw_text(),
                &self.delims,
                self.charset,
                issue,
            ))
        }
    }

    /// The decoded text, or `None` when empty or null.
    pub fn text(&self) -> Option<Cow<'a, str>> {
        match self.datum() {
            Datum::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The decoded text, or `""` when empty or null.
    pub fn text_or_empty(&self) -> Cow<'a, str> {
        self.text().unwrap_or(Cow::Borrowed(""))
    }
}

/// Iterator over the children of a [`Value`].
pub struct Children<'a> {
    rest: Option<&'a [u8]>,
    delim: Option<u8>,
    level: Level,
    delims: Delimiters,
    charset: Charset,
    literal: bool,
}

impl<'a> Iterator for Children<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        let rest = self.rest?;
        let (head, tail) = match self.delim.and_then(|d| find_byte(d, rest)) {
            Some(p) => (&rest[..p], Some(&rest[p + 1..])),
            None => (rest, None),
        };
        self.rest = tail;
        Some(Value::new(
            head,
            self.level,
            self.delims,
            self.charset,
            self.literal,
        ))
    }
}

/// A view of one segment of a message.
#[derive(Clone, Copy)]
pub struct Segment<'m, 'a> {
    msg: &'m Message<'a>,
    idx: usize,
    seg: SegIdx,
}

impl std::fmt::Debug for Segment<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("id", &self.id())
            .field("index", &self.idx)
            .finish()
    }
}

/// Segments whose field 1 is the field separator itself (MSH-1), shifting numbering by one.
pub(crate) fn is_header_id(id: &[u8]) -> bool {
    matches!(id, b"MSH" | b"FHS" | b"BHS")
}

impl<'m, 'a> Segment<'m, 'a> {
    /// The three-character segment id (e.g. `PID`). Non-UTF-8 ids come back lossily decoded.
    pub fn id(&self) -> &'a str {
        std::str::from_utf8(self.id_bytes()).unwrap_or("???")
    }

    /// The segment id's bytes as sent (no UTF-8 check: for comparisons).
    fn id_bytes(&self) -> &'a [u8] {
        let s = self.seg.start as usize;
        self.msg.input.get(s..s + 3).unwrap_or(&[])
    }

    /// 0-based index of this segment in the message (MSH is 0).
    pub fn index(&self) -> usize {
        self.idx
    }

    /// The raw bytes of the whole segment (without terminator).
    pub fn raw(&self) -> &'a [u8] {
        &self.msg.input[self.seg.start as usize..self.seg.end as usize]
    }

    /// Byte offset of the segment in the input.
    pub fn offset(&self) -> usize {
        self.seg.start as usize
    }

    /// 1-based line number of the segment in the input.
    pub fn line(&self) -> u32 {
        self.seg.line
    }

    fn seps(&self) -> &'m [u32] {
        let a = self.seg.seps_start as usize;
        &self.msg.seps[a..a + self.seg.seps_len as usize]
    }

    /// The number of pieces after the segment id (fields present, counting empty ones).
    fn pieces(&self) -> usize {
        self.seg.seps_len as usize
    }

    /// The highest field number present (HL7 numbering).
    pub fn field_count(&self) -> usize {
        let n = self.pieces();
        if is_header_id(self.id_bytes()) && n > 0 {
            n + 1
        } else {
            n
        }
    }

    fn piece(&self, i: usize) -> &'a [u8] {
        let seps = self.seps();
        if i == 0 || i > seps.len() {
            return &[];
        }
        let start = seps[i - 1] as usize + 1;
        let end = seps
            .get(i)
            .map(|&e| e as usize)
            .unwrap_or(self.seg.end as usize);
        &self.msg.input[start..end]
    }

    /// Field `n` (1-based HL7 numbering: `MSH-1` is the field separator, `MSH-2` the encoding
    /// characters; both are returned literally).
    pub fn field(&self, n: usize) -> Value<'a> {
        let d = self.msg.delims;
        let cs = self.msg.charset;
        if is_header_id(self.id_bytes()) {
            match n {
                0 => Value::absent(Level::Field, d, cs),
                1 => {
                    let s = self.seg.start as usize + 3;
                    let bytes = self.msg.input.get(s..s + 1).unwrap_or(&[]);
                    Value::new(bytes, Level::Field, d, cs, true)
                }
                2 => Value::new(self.piece(1), Level::Field, d, cs, true),
                _ => Value::new(self.piece(n - 1), Level::Field, d, cs, false),
            }
        } else {
            Value::new(self.piece(n), Level::Field, d, cs, false)
        }
    }

    /// All fields, 1..=field_count.
    pub fn fields(&self) -> impl Iterator<Item = (usize, Value<'a>)> + '_ {
        (1..=self.field_count()).map(move |n| (n, self.field(n)))
    }
}

impl<'a> Message<'a> {
    /// The delimiters declared by (or repaired from) MSH-1/MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }

    /// The decoder in use (declared in MSH-18, or the fallback).
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// MSH-18 as sent (first repetition), if any.
    pub fn declared_charset(&self) -> Option<&str> {
        self.declared_charset.as_deref()
    }

    /// Header facts from MSH.
    pub fn header(&self) -> &Header<'a> {
        &self.header
    }

    /// Everything the parser found wrong with this message.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Append a diagnostic (used by later stages such as grouping).
    pub fn push_diagnostic(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    /// Position in a batch, if the input was a batch file.
    pub fn batch(&self) -> Option<BatchPosition> {
        self.batch
    }

    /// The bytes of this message (from MSH to the end of its last segment), as received.
    pub fn raw(&self) -> &'a [u8] {
        match (self.segs.first(), self.segs.last()) {
            (Some(f), Some(l)) => &self.input[f.start as usize..l.end as usize],
            _ => &[],
        }
    }

    /// Byte offset of the MSH in the input.
    pub fn offset(&self) -> usize {
        self.segs.first().map(|s| s.start as usize).unwrap_or(0)
    }

    /// Number of segments (MSH included).
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    /// Always false: a message has at least its MSH.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Segment `i` (0-based; MSH is 0).
    pub fn segment(&self, i: usize) -> Option<Segment<'_, 'a>> {
        self.segs.get(i).map(|&seg| Segment {
            msg: self,
            idx: i,
            seg,
        })
    }

    /// All segments in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_, 'a>> + '_ {
        self.segs
            .iter()
            .enumerate()
            .map(move |(idx, &seg)| Segment {
                msg: self,
                idx,
                seg,
            })
    }

    /// The raw id bytes of segment `i` (e.g. `b"PID"`), without building a [`Segment`].
    #[inline]
    pub fn segment_id(&self, i: usize) -> &'a [u8] {
        match self.segs.get(i) {
            Some(s) => self
                .input
                .get(s.start as usize..s.start as usize + 3)
                .unwrap_or(&[]),
            None => &[],
        }
    }

    /// The `occurrence`-th (1-based) segment with this id.
    pub fn find(&self, id: &str, occurrence: usize) -> Option<Segment<'_, 'a>> {
        self.segments()
            .filter(|s| s.id() == id)
            .nth(occurrence.checked_sub(1)?)
    }

    /// The value at an HL7 path such as `PID-3[2].4.1` (see [`super::Path`]).
    pub fn get(&self, path: &super::path::Path) -> Value<'a> {
        let d = self.delims;
        let cs = self.charset;
        let Some(seg) = self.find(path.segment(), path.segment_occurrence) else {
            return Value::absent(Level::Field, d, cs);
        };
        let mut v = seg.field(path.field).rep(path.repetition);
        if let Some(c) = path.component {
            v = v.component(c);
            if let Some(s) = path.subcomponent {
                v = v.sub(s);
            }
        }
        v
    }
}
