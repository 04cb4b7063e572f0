//! The parser: bytes in, messages + diagnostics out. Never panics, never fails silently; only
//! input without a usable MSH is an error. One pass finds line ends (CR, LF, CRLF, mixed), a
//! second indexes field separators per segment; nothing is copied or allocated per field.

use super::charset::{Charset, Lookup};
use super::delims::{Delimiters, Msh2Verdict};
use super::diag::{Code, Diagnostic, Location, Severity};
use super::header::Header;
use super::model::{BatchPosition, Message, SegIdx};
use encoding_rs::Encoding;
use serde::Serialize;
use std::borrow::Cow;

/// Leniency and decoding settings.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions {
    /// Decoder used when the bytes are not valid in the declared (or default UTF-8) set.
    pub fallback_charset: &'static Encoding,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            fallback_charset: encoding_rs::WINDOWS_1252,
        }
    }
}

/// Why nothing could be parsed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParseError {
    /// No MSH segment with a usable field separator anywhere in the input.
    #[error("no usable MSH segment in {len} bytes of input ({} finding(s): {})", diagnostics.len(), summary(diagnostics))]
    NoMsh {
        /// Input length.
        len: usize,
        /// What was found instead.
        diagnostics: Vec<Diagnostic>,
    },
    /// Inputs are indexed with 32-bit offsets.
    #[error("input is {len} bytes; the parser handles at most 4 GiB per input")]
    TooLarge {
        /// Input length.
        len: usize,
    },
}

fn summary(d: &[Diagnostic]) -> String {
    d.iter()
        .take(3)
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ParseError {
    /// The diagnostics collected before giving up.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ParseError::NoMsh { diagnostics, .. } => diagnostics,
            ParseError::TooLarge { .. } => &[],
        }
    }
}

/// A batch/file envelope segment (FHS, BHS, BTS, FTS), kept as raw field text.
#[derive(Debug, Clone, Serialize)]
pub struct EnvelopeSegment {
    /// `FHS`, `BHS`, `BTS` or `FTS`.
    pub id: String,
    /// Field texts in HL7 numbering: `fields[0]` is field 1.
    pub fields: Vec<String>,
    /// Byte offset in the input.
    pub offset: usize,
    /// 1-based line.
    pub line: u32,
}

impl EnvelopeSegment {
    /// Field `n` (1-based), empty when absent.
    pub fn field(&self, n: usize) -> &str {
        n.checked_sub(1)
            .and_then(|i| self.fields.get(i))
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A batch (BHS … BTS) and the messages in it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Batch {
    /// BHS, if present.
    pub header: Option<EnvelopeSegment>,
    /// BTS, if present.
    pub trailer: Option<EnvelopeSegment>,
    /// Indexes into [`Parsed::messages`].
    pub messages: Vec<usize>,
}

/// A file envelope (FHS … FTS).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileEnvelope {
    /// FHS, if present.
    pub header: Option<EnvelopeSegment>,
    /// FTS, if present.
    pub trailer: Option<EnvelopeSegment>,
}

/// Everything found in one input: messages, batch structure, and input-level diagnostics.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    /// Messages in input order.
    pub messages: Vec<Message<'a>>,
    /// Batches (BHS/BTS), in order.
    pub batches: Vec<Batch>,
    /// The file envelope (FHS/FTS), if any.
    pub file: Option<FileEnvelope>,
    /// Findings that belong to no single message (junk, envelope problems, orphan segments).
    pub diagnostics: Vec<Diagnostic>,
}

/// Parse an input holding one message, several concatenated messages, or a batch file.
pub fn parse(input: &[u8]) -> Result<Parsed<'_>, ParseError> {
    parse_with(input, &ParseOptions::default())
}

/// [`parse`] with options.
pub fn parse_with<'a>(input: &'a [u8], opts: &ParseOptions) -> Result<Parsed<'a>, ParseError> {
    if u32::try_from(input.len()).is_err() {
        return Err(ParseError::TooLarge { len: input.len() });
    }
    let mut p = Parser::new(input, opts);
    p.run();
    p.finish()
}

#[derive(Default, Clone, Copy)]
struct Terminators {
    cr: u32,
    lf: u32,
    crlf: u32,
}

struct Pending {
    start: u32,
    end: u32,
    line: u32,
}

struct MsgBuilder {
    delims: Delimiters,
    segs: Vec<SegIdx>,
    seps: Vec<u32>,
    diags: Vec<Diagnostic>,
    pending: Option<Pending>,
    terms: Terminators,
    empty_lines: Vec<(usize, u32)>,
    batch: Option<BatchPosition>,
}

struct Orphans {
    ids: Vec<String>,
    first_line: u32,
    last_line: u32,
    offset: usize,
}

struct Junk {
    bytes: usize,
    lines: u32,
    first_line: u32,
    offset: usize,
}

struct Parser<'a, 'o> {
    input: &'a [u8],
    opts: &'o ParseOptions,
    cur: Option<MsgBuilder>,
    messages: Vec<Message<'a>>,
    batches: Vec<Batch>,
    file: Option<FileEnvelope>,
    diags: Vec<Diagnostic>,
    env_delims: Delimiters,
    batch_open: Option<usize>,
    batch_open_line: u32,
    file_open: bool,
    orphans: Option<Orphans>,
    junk: Option<Junk>,
    seen_header: bool,
}

fn loc(offset: usize, line: u32) -> Location {
    Location {
        offset,
        line,
        ..Location::default()
    }
}

fn seg_loc(id: &str, seq: u32, field: Option<u32>, offset: usize, line: u32) -> Location {
    Location {
        segment: Some(id.to_string()),
        segment_seq: Some(seq),
        field,
        offset,
        line,
        ..Location::default()
    }
}

fn is_segment_id(b: &[u8]) -> bool {
    b.len() >= 3 && b[..3].iter().all(|c| c.is_ascii_alphanumeric())
}

impl<'a, 'o> Parser<'a, 'o> {
    fn new(input: &'a [u8], opts: &'o ParseOptions) -> Self {
        Parser {
            input,
            opts,
            cur: None,
            messages: Vec::new(),
            batches: Vec::new(),
            file: None,
            diags: Vec::new(),
            env_delims: Delimiters::default(),
            batch_open: None,
            batch_open_line: 0,
            file_open: false,
            orphans: None,
            junk: None,
            seen_header: false,
        }
    }

    fn run(&mut self) {
        let input = self.input;
        let len = input.len();
        let mut pos = 0usize;
        if input.starts_with(b"\xEF\xBB\xBF") {
            self.diags.push(Diagnostic::new(
                Severity::Info,
                Code::ByteOrderMark,
                loc(0, 1),
                "UTF-8 byte-order mark before the first segment; skipped",
            ));
            pos = 3;
        }
        let mut line = 1u32;
        while pos < len {
            let end = memchr::memchr2(b'\r', b'\n', &input[pos..])
                .map(|r| pos + r)
                .unwrap_or(len);
            let (next, term) = if end == len {
                (len, None)
            } else if input[end] == b'\r' && input.get(end + 1) == Some(&b'\n') {
                (end + 2, Some(2u8))
            } else if input[end] == b'\r' {
                (end + 1, Some(0u8))
            } else {
                (end + 1, Some(1u8))
            };
            self.line(pos, end, line, term);
            line = line.saturating_add(1);
            pos = next;
        }
        self.end_message();
        self.flush_junk();
        self.flush_orphans();
        if self.batch_open.take().is_some() {
            self.diags.push(Diagnostic::new(
                Severity::Warning,
                Code::BatchEnvelope,
                loc(len, line),
                format!(
                    "the batch opened by BHS at line {} has no BTS",
                    self.batch_open_line
                ),
            ));
        }
        if self.file_open {
            self.diags.push(Diagnostic::new(
                Severity::Warning,
                Code::BatchEnvelope,
                loc(len, line),
                "the file opened by FHS has no FTS",
            ));
        }
    }

    fn line(&mut self, mut start: usize, mut end: usize, line: u32, term: Option<u8>) {
        let input = self.input;
        // MLLP framing bytes left in a dump: VT before, FS after.
        while start < end && input[start] == 0x0B {
            start += 1;
        }
        while end > start && input[end - 1] == 0x1C {
            end -= 1;
        }
        let bytes = &input[start..end];
        if bytes.iter().all(|&b| b == b' ' || b == b'\t') {
            if let Some(m) = self.cur.as_mut() {
                m.empty_lines.push((start, line));
            }
            return;
        }
        let id = bytes.get(..3).unwrap_or(bytes);
        let header_delims = if matches!(id, b"MSH" | b"FHS" | b"BHS") && bytes.len() >= 4 {
            let field = bytes[3];
            let rest = &bytes[4..];
            let msh2_end = memchr::memchr(field, rest).unwrap_or(rest.len());
            Delimiters::from_msh2(field, &rest[..msh2_end])
        } else {
            None
        };
        if let Some((delims, verdict)) = header_delims {
            self.flush_junk();
            self.flush_orphans();
            let id_str = if id == b"MSH" {
                "MSH"
            } else if id == b"FHS" {
                "FHS"
            } else {
                "BHS"
            };
            let verdict_diag = |sev: Severity, code: Code, text: String| {
                Diagnostic::new(sev, code, seg_loc(id_str, 1, Some(2), start, line), text)
            };
            let vd = match verdict {
                Msh2Verdict::Ok => None,
                Msh2Verdict::Repaired(t) => Some(verdict_diag(
                    Severity::Warning,
                    Code::NonStandardEncodingCharacters,
                    t,
                )),
                Msh2Verdict::Invalid(t) => Some(verdict_diag(
                    Severity::Error,
                    Code::BadEncodingCharacters,
                    t,
                )),
            };
            if id == b"MSH" {
                self.end_message();
                self.seen_header = true;
                let batch = self.batch_open.map(|b| BatchPosition {
                    batch: b,
                    position: self
                        .batches
                        .get(b)
                        .map(|x| x.messages.len() as u32 + 1)
                        .unwrap_or(1),
                });
                let mut m = MsgBuilder {
                    delims,
                    segs: Vec::with_capacity(16),
                    seps: Vec::with_capacity(256),
                    diags: Vec::new(),
                    pending: None,
                    terms: Terminators::default(),
                    empty_lines: Vec::new(),
                    batch,
                };
                match term {
                    Some(0) => m.terms.cr += 1,
                    Some(1) => m.terms.lf += 1,
                    Some(2) => m.terms.crlf += 1,
                    _ => {}
                }
                m.diags.extend(vd);
                m.pending = Some(Pending {
                    start: start as u32,
                    end: end as u32,
                    line,
                });
                self.cur = Some(m);
            } else {
                self.end_message();
                self.env_delims = delims;
                self.diags.extend(vd);
                let seg = self.envelope_segment(id_str, start, end, line, delims.field);
                if id == b"FHS" {
                    self.open_file(seg);
                } else {
                    self.open_batch(seg);
                }
            }
            return;
        }
        // Envelope trailers.
        if matches!(id, b"BTS" | b"FTS") {
            let field = self
                .cur
                .as_ref()
                .map(|m| m.delims.field)
                .unwrap_or(self.env_delims.field);
            if bytes.len() == 3 || bytes[3] == field {
                self.end_message();
                self.flush_junk();
                self.flush_orphans();
                let id_str = if id == b"BTS" { "BTS" } else { "FTS" };
                let seg = self.envelope_segment(id_str, start, end, line, field);
                if id == b"BTS" {
                    self.close_batch(seg);
                } else {
                    self.close_file(seg);
                }
                return;
            }
        }
        let field = self
            .cur
            .as_ref()
            .map(|m| m.delims.field)
            .unwrap_or(self.env_delims.field);
        let segment_like = is_segment_id(bytes) && (bytes.len() == 3 || bytes[3] == field);
        if let Some(m) = self.cur.as_mut() {
            match term {
                Some(0) => m.terms.cr += 1,
                Some(1) => m.terms.lf += 1,
                Some(2) => m.terms.crlf += 1,
                _ => {}
            }
            if segment_like {
                let seq = m.segs.len() as u32 + 2;
                Self::finalize_pending(self.input, m);
                if !id
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                {
                    m.diags.push(Diagnostic::new(
                        Severity::Warning,
                        Code::BadSegmentId,
                        seg_loc(&String::from_utf8_lossy(id), seq, None, start, line),
                        "segment id is not upper-case; kept as is",
                    ));
                }
                for (off, l) in m.empty_lines.drain(..) {
                    m.diags.push(Diagnostic::new(
                        Severity::Info,
                        Code::EmptyLine,
                        loc(off, l),
                        "empty line inside the message; skipped",
                    ));
                }
                m.pending = Some(Pending {
                    start: start as u32,
                    end: end as u32,
                    line,
                });
            } else if let Some(p) = m.pending.as_mut() {
                // Not a segment: a line break inside a field value (e.g. multi-line OBX-5).
                let seg_id =
                    String::from_utf8_lossy(&input[p.start as usize..(p.start as usize + 3)])
                        .into_owned();
                let seq = m.segs.len() as u32 + 1;
                let field_no = {
                    let seg_bytes = &input[p.start as usize..p.end as usize];
                    let n = memchr::memchr_iter(m.delims.field, seg_bytes).count() as u32;
                    if super::model::is_header_id(seg_id.as_bytes()) {
                        n + 1
                    } else {
                        n
                    }
                };
                m.diags.push(Diagnostic::new(
                    Severity::Warning,
                    Code::ContinuationLine,
                    seg_loc(&seg_id, seq, Some(field_no), start, line),
                    format!(
                        "line {line} does not start with a segment id; kept as a line break inside {seg_id}-{field_no}"
                    ),
                ));
                p.end = end as u32;
            }
        } else if segment_like && id != b"MSH" {
            let o = self.orphans.get_or_insert(Orphans {
                ids: vec![],
                first_line: line,
                last_line: line,
                offset: start,
            });
            o.ids.push(String::from_utf8_lossy(id).into_owned());
            o.last_line = line;
        } else {
            if id == b"MSH" {
                self.push_truncated_msh(start, line);
                return;
            }
            let j = self.junk.get_or_insert(Junk {
                bytes: 0,
                lines: 0,
                first_line: line,
                offset: start,
            });
            j.bytes += end - start;
            j.lines += 1;
        }
    }

    fn push_truncated_msh(&mut self, start: usize, line: u32) {
        self.diags.push(Diagnostic::new(
            Severity::Error,
            Code::TruncatedMsh,
            seg_loc("MSH", 1, Some(1), start, line),
            "MSH without a usable field separator (MSH-1 must be a printable non-alphanumeric character); skipped",
        ));
    }

    fn flush_junk(&mut self) {
        if let Some(j) = self.junk.take() {
            let where_ = if self.seen_header {
                "between messages"
            } else {
                "before the first MSH"
            };
            self.diags.push(Diagnostic::new(
                Severity::Warning,
                Code::LeadingJunk,
                loc(j.offset, j.first_line),
                format!(
                    "{} byte(s) on {} line(s) that are not segments {where_}; skipped",
                    j.bytes, j.lines
                ),
            ));
        }
    }

    fn flush_orphans(&mut self) {
        if let Some(o) = self.orphans.take() {
            let mut ids = o.ids.clone();
            ids.dedup();
            self.diags.push(Diagnostic::new(
                Severity::Error,
                Code::OrphanSegment,
                loc(o.offset, o.first_line),
                format!(
                    "{} segment(s) ({}) on lines {}-{} belong to no message (no MSH before them); skipped",
                    o.ids.len(),
                    ids.join(", "),
                    o.first_line,
                    o.last_line
                ),
            ));
        }
    }

    fn envelope_segment(
        &self,
        id: &str,
        start: usize,
        end: usize,
        line: u32,
        field: u8,
    ) -> EnvelopeSegment {
        let bytes = &self.input[start..end];
        let mut fields: Vec<String> = Vec::new();
        let mut pieces = bytes.split(|&b| b == field);
        pieces.next(); // segment id
        if super::model::is_header_id(id.as_bytes()) {
            fields.push((field as char).to_string());
        }
        fields.extend(pieces.map(|p| String::from_utf8_lossy(p).into_owned()));
        EnvelopeSegment {
            id: id.to_string(),
            fields,
            offset: start,
            line,
        }
    }

    fn open_file(&mut self, seg: EnvelopeSegment) {
        if self.file_open {
            self.diags.push(Diagnostic::new(
                Severity::Error,
                Code::BatchEnvelope,
                loc(seg.offset, seg.line),
                "FHS inside a file that is already open (files do not nest); a new file starts here",
            ));
        }
        self.file_open = true;
        let file = self.file.get_or_insert_with(FileEnvelope::default);
        if file.header.is_none() {
            file.header = Some(seg);
        }
    }

    fn close_file(&mut self, seg: EnvelopeSegment) {
        if let Some(b) = self.batch_open.take() {
            let line = self
                .batches
                .get(b)
                .and_then(|x| x.header.as_ref())
                .map(|h| h.line)
                .unwrap_or(0);
            self.diags.push(Diagnostic::new(
                Severity::Warning,
                Code::BatchEnvelope,
                loc(seg.offset, seg.line),
                format!("FTS closes the file while the batch opened at line {line} has no BTS"),
            ));
        }
        if !self.file_open {
            self.diags.push(Diagnostic::new(
                Severity::Warning,
                Code::BatchEnvelope,
                loc(seg.offset, seg.line),
                "FTS without FHS",
            ));
        }
        let declared = seg.field(1).trim().to_string();
        if let Ok(n) = declared.parse::<usize>()
            && !self.batches.is_empty()
            && n != self.batches.len()
        {
            self.diags.push(Diagnostic::new(
                Severity::Warning,
                Code::BatchEnvelope,
                loc(seg.offset, seg.line),
                format!(
                    "FTS-1 declares {n} batch(es); the file holds {}",
                    self.batches.len()
                ),
            ));
        }
        self.file_open = false;
        self.file.get_or_insert_with(FileEnvelope::default).trailer = Some(seg);
    }

    fn open_batch(&mut self, seg: EnvelopeSegment) {
        if let Some(b) = self.batch_open {
            self.diags.push(Diagnostic::new(
                Severity::Error,
                Code::BatchEnvelope,
                loc(seg.offset, seg.line),
                format!(
                    "BHS at line {} opens a batch while batch #{} (line {}) has no BTS",
                    seg.line,
                    b + 1,
                    self.batch_open_line
                ),
            ));
        }
        self.batch_open_line = seg.line;
        self.batches.push(Batch {
            header: Some(seg),
            trailer: None,
            messages: vec![],
        });
        self.batch_open = Some(self.batches.len() - 1);
    }

    fn close_batch(&mut self, seg: EnvelopeSegment) {
        let idx = match self.batch_open.take() {
            Some(i) => i,
            None => {
                self.diags.push(Diagnostic::new(
                    Severity::Warning,
                    Code::BatchEnvelope,
                    loc(seg.offset, seg.line),
                    "BTS without BHS; the messages before it form a batch without header",
                ));
                let taken: Vec<usize> = (0..self.messages.len())
                    .filter(|&i| self.messages[i].batch.is_none())
                    .collect();
                self.batches.push(Batch {
                    header: None,
                    trailer: None,
                    messages: vec![],
                });
                let b = self.batches.len() - 1;
                for (pos, &i) in taken.iter().enumerate() {
                    self.messages[i].batch = Some(BatchPosition {
                        batch: b,
                        position: pos as u32 + 1,
                    });
                }
                self.batches[b].messages = taken;
                b
            }
        };
        let count = self.batches.get(idx).map(|b| b.messages.len()).unwrap_or(0);
        if let Ok(n) = seg.field(1).trim().parse::<usize>()
            && n != count
        {
            self.diags.push(Diagnostic::new(
                Severity::Warning,
                Code::BatchEnvelope,
                loc(seg.offset, seg.line),
                format!("BTS-1 declares {n} message(s); the batch holds {count}"),
            ));
        }
        if let Some(b) = self.batches.get_mut(idx) {
            b.trailer = Some(seg);
        }
    }

    fn finalize_pending(input: &[u8], m: &mut MsgBuilder) {
        if let Some(p) = m.pending.take() {
            let seps_start = m.seps.len() as u32;
            let s = p.start as usize;
            for off in memchr::memchr_iter(m.delims.field, &input[s..p.end as usize]) {
                m.seps.push((s + off) as u32);
            }
            let seps_len = m.seps.len() as u32 - seps_start;
            m.segs.push(SegIdx {
                start: p.start,
                end: p.end,
                seps_start,
                seps_len,
                line: p.line,
            });
        }
    }

    fn end_message(&mut self) {
        let Some(mut b) = self.cur.take() else { return };
        Self::finalize_pending(self.input, &mut b);
        let mut msg = Message {
            input: self.input,
            delims: b.delims,
            charset: Charset::Utf8,
            declared_charset: None,
            segs: b.segs,
            seps: b.seps,
            header: Header::default(),
            diagnostics: b.diags,
            batch: b.batch,
        };
        let (msh_offset, msh_line) = msg
            .segment(0)
            .map(|s| (s.offset(), s.line()))
            .unwrap_or((0, 0));
        let msh_loc = |field: u32| seg_loc("MSH", 1, Some(field), msh_offset, msh_line);

        // Character set: MSH-18 is ASCII, so it can be read before decoding anything else.
        let declared: Option<String> = msg
            .segment(0)
            .map(|s| {
                String::from_utf8_lossy(s.field(18).rep(1).raw())
                    .trim()
                    .to_string()
            })
            .filter(|s| !s.is_empty());
        let mut charset = match Charset::from_msh18(declared.as_deref().unwrap_or("")) {
            Lookup::Known(cs) => cs,
            other => {
                let what = if other == Lookup::Unsupported {
                    "is not supported"
                } else {
                    "is not in HL7 table 0211"
                };
                msg.diagnostics.push(Diagnostic::new(
                    Severity::Warning,
                    Code::UnknownCharset,
                    msh_loc(18),
                    format!(
                        "MSH-18 character set '{}' {what}; decoding as UTF-8",
                        declared.as_deref().unwrap_or("")
                    ),
                ));
                Charset::Utf8
            }
        };
        let raw = msg.raw();
        if let Some(bad) = charset.first_invalid(raw) {
            let fallback = Charset::Other(self.opts.fallback_charset);
            let declared_txt = match &declared {
                Some(d) => format!("declared in MSH-18 as '{d}'"),
                None => "the default, MSH-18 being empty".to_string(),
            };
            let mut l = loc(msh_offset + bad, 0);
            if let Some(seg) = msg
                .segments()
                .take_while(|s| s.offset() <= msh_offset + bad)
                .last()
            {
                l = seg_loc(
                    seg.id(),
                    seg.index() as u32 + 1,
                    None,
                    msh_offset + bad,
                    seg.line(),
                );
            }
            msg.diagnostics.push(Diagnostic::new(
                Severity::Warning,
                Code::InvalidCharacters,
                l,
                format!(
                    "bytes are not valid {} ({declared_txt}); decoded as {}",
                    charset.name(),
                    fallback.name()
                ),
            ));
            charset = fallback;
        } else if declared
            .as_deref()
            .is_some_and(|d| d.eq_ignore_ascii_case("ASCII"))
            && !raw.is_ascii()
        {
            msg.diagnostics.push(Diagnostic::new(
                Severity::Info,
                Code::InvalidCharacters,
                msh_loc(18),
                "MSH-18 declares ASCII but the message holds non-ASCII UTF-8 text; decoded as UTF-8",
            ));
        }
        msg.charset = charset;
        msg.declared_charset = declared.map(Cow::Owned);
        let header = match msg.segment(0) {
            Some(msh) => Header::from_msh(&msh),
            None => Header::default(),
        };
        msg.header = header;

        // Header checks.
        let h = &msg.header;
        let mut hd = Vec::new();
        if h.message_code.is_none() {
            hd.push((
                Severity::Error,
                9,
                "MSH-9 (message type) is empty".to_string(),
            ));
        } else if h.trigger_event.is_none() && h.message_code.as_deref() != Some("ACK") {
            hd.push((
                Severity::Warning,
                9,
                "MSH-9.2 (trigger event) is empty".to_string(),
            ));
        }
        if h.control_id.is_none() {
            hd.push((
                Severity::Error,
                10,
                "MSH-10 (message control id) is empty; an acknowledgment cannot reference this message".to_string(),
            ));
        }
        if h.processing_id.is_none() {
            hd.push((
                Severity::Warning,
                11,
                "MSH-11 (processing id) is empty".to_string(),
            ));
        }
        match (&h.version, h.version_number()) {
            (None, _) => hd.push((
                Severity::Warning,
                12,
                "MSH-12 (version id) is empty".to_string(),
            )),
            (Some(v), None) => hd.push((
                Severity::Warning,
                12,
                format!("MSH-12 version '{v}' is not a version number"),
            )),
            (Some(v), Some((major, minor))) => {
                let known = [
                    "2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1",
                    "2.8", "2.8.1", "2.8.2", "2.9",
                ];
                if major != 2 || !known.contains(&v.as_ref()) {
                    hd.push((
                        Severity::Info,
                        12,
                        format!("MSH-12 version '{v}' is not a standard v2 version (read as {major}.{minor})"),
                    ));
                }
            }
        }
        for (sev, field, text) in hd {
            msg.diagnostics.push(Diagnostic::new(
                sev,
                Code::HeaderField,
                msh_loc(field),
                text,
            ));
        }
        let t = b.terms;
        if t.lf > 0 || t.crlf > 0 {
            let mut kinds = vec![];
            for (n, name) in [(t.cr, "CR"), (t.lf, "LF"), (t.crlf, "CRLF")] {
                if n > 0 {
                    kinds.push(format!("{name} ×{n}"));
                }
            }
            msg.diagnostics.push(Diagnostic::new(
                Severity::Info,
                Code::NonStandardTerminator,
                loc(msh_offset, msh_line),
                format!(
                    "segment terminators are not the standard CR: {}",
                    kinds.join(", ")
                ),
            ));
        }
        let idx = self.messages.len();
        if let Some(bp) = msg.batch
            && let Some(batch) = self.batches.get_mut(bp.batch)
        {
            batch.messages.push(idx);
        }
        self.messages.push(msg);
    }

    fn finish(self) -> Result<Parsed<'a>, ParseError> {
        if self.messages.is_empty() {
            let mut diagnostics = self.diags;
            diagnostics.push(Diagnostic::new(
                Severity::Error,
                Code::NoMsh,
                loc(0, 1),
                "no MSH segment with a usable field separator was found",
            ));
            return Err(ParseError::NoMsh {
                len: self.input.len(),
                diagnostics,
            });
        }
        Ok(Parsed {
            messages: self.messages,
            batches: self.batches,
            file: self.file,
            diagnostics: self.diags,
        })
    }
}
