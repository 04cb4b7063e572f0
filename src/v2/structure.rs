//! Abstract message structures (segment groups) loaded from data files in HL7's own notation
//! (`mappings/structures/*.hl7s`), and the grouping of a parsed message into group instances.
//!
//! Grouping searches forward from the current position, then outward through enclosing groups
//! (opening a new instance of a repeating group when its first segments match); where a segment
//! fits at several levels, a short lookahead picks the place the following segments fit best
//! (`choose`). A segment that fits nowhere is kept in place in the innermost open group and
//! reported — never dropped.

use super::diag::{Code, Diagnostic, Location, Severity};
use super::header::Header;
use super::model::Message;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// One element of a structure definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A segment slot.
    Segment {
        /// Segment id.
        id: String,
        /// `[ ]`
        optional: bool,
        /// `{ }`
        repeating: bool,
    },
    /// A named group.
    Group(Group),
}

/// A named group of nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name (`PATIENT_RESULT`); the root carries the structure name.
    pub name: Arc<str>,
    /// `[ ]`
    pub optional: bool,
    /// `{ }`
    pub repeating: bool,
    /// Children in order.
    pub children: Vec<Node>,
    /// Segment ids that can open an instance of this group.
    first: Vec<String>,
}

impl Node {
    fn optional(&self) -> bool {
        match self {
            Node::Segment { optional, .. } => *optional,
            Node::Group(g) => g.optional,
        }
    }
    fn repeating(&self) -> bool {
        match self {
            Node::Segment { repeating, .. } => *repeating,
            Node::Group(g) => g.repeating,
        }
    }
    fn set_flags(&mut self, opt: bool, rep: bool) {
        match self {
            Node::Segment {
                optional,
                repeating,
                ..
            } => {
                *optional |= opt;
                *repeating |= rep;
            }
            Node::Group(g) => {
                g.optional |= opt;
                g.repeating |= rep;
            }
        }
    }
    fn can_start_with(&self, id: &str) -> bool {
        match self {
            Node::Segment { id: s, .. } => s == id,
            Node::Group(g) => g.first.iter().any(|f| f == id),
        }
    }
}

fn compute_first(children: &mut [Node]) -> Vec<String> {
    let mut first = Vec::new();
    let mut open = true;
    for c in children.iter_mut() {
        let f = match c {
            Node::Segment { id, .. } => vec![id.clone()],
            Node::Group(g) => {
                g.first = compute_first(&mut g.children);
                g.first.clone()
            }
        };
        if open {
            for s in f {
                if !first.contains(&s) {
                    first.push(s);
                }
            }
            if !c.optional() {
                open = false;
            }
        }
    }
    first
}

/// A loaded set of structure definitions and the trigger → structure table.
#[derive(Debug, Clone, Default)]
pub struct Structures {
    defs: HashMap<String, Arc<Group>>,
    triggers: HashMap<String, String>,
    /// `fallback X = Y Z`: structures to read a message of structure X as when X leaves some
    /// of its segments unplaced (senders that declare one OUL structure and send another's
    /// layout).
    fallbacks: HashMap<String, Vec<String>>,
}

/// A definition error with its file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct StructureError {
    /// File name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "mappings/structures/adt.hl7s",
        include_str!("../../mappings/structures/adt.hl7s"),
    ),
    (
        "mappings/structures/orders-results.hl7s",
        include_str!("../../mappings/structures/orders-results.hl7s"),
    ),
    (
        "mappings/structures/other.hl7s",
        include_str!("../../mappings/structures/other.hl7s"),
    ),
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open(char),
    Close(char),
    Bar,
    Label(String),
    Seg(String),
}

fn tokenize(body: &str, file: &str, line: usize) -> Result<Vec<Tok>, StructureError> {
    let mut toks = Vec::new();
    let mut chars = body.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '[' | '{' | '<' => {
                toks.push(Tok::Open(c));
                chars.next();
            }
            ']' | '}' | '>' => {
                toks.push(Tok::Close(c));
                chars.next();
            }
            '|' => {
                toks.push(Tok::Bar);
                chars.next();
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut end = i;
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &body[i..end];
                if chars.peek().map(|&(_, d)| d) == Some(':') {
                    chars.next();
                    toks.push(Tok::Label(word.to_string()));
                } else if word.len() == 3
                    && word
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                {
                    toks.push(Tok::Seg(word.to_string()));
                } else {
                    return Err(StructureError {
                        file: file.into(),
                        line,
                        message: format!(
                            "'{word}' is neither a segment id (three upper-case characters) nor a group label (NAME:)"
                        ),
                    });
                }
            }
            other => {
                return Err(StructureError {
                    file: file.into(),
                    line,
                    message: format!("unexpected character '{other}'"),
                });
            }
        }
    }
    Ok(toks)
}

struct TokParser<'t> {
    toks: &'t [Tok],
    pos: usize,
    file: &'t str,
    line: usize,
}

impl TokParser<'_> {
    fn err(&self, m: impl Into<String>) -> StructureError {
        StructureError {
            file: self.file.into(),
            line: self.line,
            message: m.into(),
        }
    }

    /// Parse a sequence until `close` (or end of input when `close` is None).
    fn seq(&mut self, close: Option<char>) -> Result<Vec<Node>, StructureError> {
        let mut out = Vec::new();
        loop {
            let Some(t) = self.toks.get(self.pos).cloned() else {
                return match close {
                    None => Ok(out),
                    Some(c) => Err(self.err(format!("missing '{c}'"))),
                };
            };
            self.pos += 1;
            match t {
                Tok::Seg(id) => out.push(Node::Segment {
                    id,
                    optional: false,
                    repeating: false,
                }),
                Tok::Open(o) => {
                    let closer = match o {
                        '[' => ']',
                        '{' => '}',
                        _ => '>',
                    };
                    if o == '<' {
                        // Choice: every alternative becomes optional.
                        let mut alts = Vec::new();
                        loop {
                            match self.toks.get(self.pos).cloned() {
                                Some(Tok::Seg(id)) => {
                                    self.pos += 1;
                                    alts.push(Node::Segment {
                                        id,
                                        optional: true,
                                        repeating: false,
                                    });
                                }
                                Some(Tok::Bar) => self.pos += 1,
                                Some(Tok::Close('>')) => {
                                    self.pos += 1;
                                    break;
                                }
                                _ => {
                                    return Err(
                                        self.err("a choice <A | B> may only hold segment ids")
                                    );
                                }
                            }
                        }
                        out.extend(alts);
                        continue;
                    }
                    let label = match self.toks.get(self.pos) {
                        Some(Tok::Label(l)) => {
                            let l = l.clone();
                            self.pos += 1;
                            Some(l)
                        }
                        _ => None,
                    };
                    let inner = self.seq(Some(closer))?;
                    let (opt, rep) = (o == '[', o == '{');
                    match label {
                        Some(name) => out.push(Node::Group(Group {
                            name: name.into(),
                            optional: opt,
                            repeating: rep,
                            children: inner,
                            first: vec![],
                        })),
                        None if inner.len() == 1 => {
                            let mut n = inner
                                .into_iter()
                                .next()
                                .ok_or_else(|| self.err("empty brackets"))?;
                            n.set_flags(opt, rep);
                            out.push(n);
                        }
                        None if inner.is_empty() => return Err(self.err("empty brackets")),
                        None => {
                            return Err(self.err(format!(
                                "brackets holding {} elements must be a named group ('{o}NAME: ...')",
                                inner.len()
                            )));
                        }
                    }
                }
                Tok::Close(c) => {
                    return if Some(c) == close {
                        Ok(out)
                    } else {
                        Err(self.err(format!("unexpected '{c}'")))
                    };
                }
                Tok::Bar => return Err(self.err("'|' outside a choice <A | B>")),
                Tok::Label(l) => {
                    return Err(self.err(format!("group label '{l}:' must follow '[' or '{{'")));
                }
            }
        }
    }
}

impl Structures {
    /// The definitions compiled into the binary (from `mappings/structures/`).
    pub fn builtin() -> &'static Structures {
        static B: OnceLock<Structures> = OnceLock::new();
        B.get_or_init(|| {
            let mut s = Structures::default();
            let mut errors = Vec::new();
            for (file, text) in BUILTIN {
                if let Err(e) = s.add_file(file, text) {
                    errors.extend(e);
                }
            }
            // The built-in files are tested (`builtin_definitions_load`); an error here is a build defect.
            debug_assert!(
                errors.is_empty(),
                "built-in structure definitions: {errors:?}"
            );
            s
        })
    }

    /// Add the definitions of one file. All errors are returned, not just the first.
    pub fn add_file(&mut self, file: &str, text: &str) -> Result<(), Vec<StructureError>> {
        let mut errors = Vec::new();
        let mut fallback_lines: Vec<(usize, String, Vec<String>)> = Vec::new();
        // Join indented continuation lines into statements.
        let mut stmts: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("");
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match stmts.last_mut() {
                    Some((_, s)) => {
                        s.push(' ');
                        s.push_str(line.trim());
                    }
                    None => errors.push(StructureError {
                        file: file.into(),
                        line: i + 1,
                        message: "indented line with no statement to continue".into(),
                    }),
                }
            } else {
                stmts.push((i + 1, line.trim().to_string()));
            }
        }
        for (line, stmt) in stmts {
            let Some((lhs, rhs)) = stmt.split_once('=') else {
                errors.push(StructureError {
                    file: file.into(),
                    line,
                    message:
                        "expected 'NAME = ...', 'trigger ... = NAME' or 'fallback NAME = NAME ...'"
                            .into(),
                });
                continue;
            };
            let lhs = lhs.trim();
            let rhs = rhs.trim();
            if let Some(name) = lhs.strip_prefix("fallback ") {
                let alts: Vec<String> = rhs.split_whitespace().map(str::to_string).collect();
                if alts.is_empty() {
                    errors.push(StructureError {
                        file: file.into(),
                        line,
                        message: format!("fallback {} names no structure", name.trim()),
                    });
                }
                fallback_lines.push((line, name.trim().to_string(), alts));
                continue;
            }
            if let Some(list) = lhs.strip_prefix("trigger ") {
                for t in list.split_whitespace() {
                    if !t.contains('^') {
                        errors.push(StructureError {
                            file: file.into(),
                            line,
                            message: format!("trigger '{t}' must be TYPE^EVENT"),
                        });
                    }
                    self.triggers.insert(t.to_string(), rhs.to_string());
                }
                continue;
            }
            let toks = match tokenize(rhs, file, line) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut p = TokParser {
                toks: &toks,
                pos: 0,
                file,
                line,
            };
            match p.seq(None) {
                Ok(mut children) => {
                    if !matches!(children.first(), Some(Node::Segment { id, .. }) if id == "MSH") {
                        errors.push(StructureError {
                            file: file.into(),
                            line,
                            message: format!("structure {lhs} must start with MSH"),
                        });
                        continue;
                    }
                    let first = compute_first(&mut children);
                    self.defs.insert(
                        lhs.to_string(),
                        Arc::new(Group {
                            name: lhs.into(),
                            optional: false,
                            repeating: false,
                            children,
                            first,
                        }),
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        for (line, name, alts) in fallback_lines {
            for n in std::iter::once(&name).chain(&alts) {
                if !self.defs.contains_key(n) {
                    errors.push(StructureError {
                        file: file.into(),
                        line,
                        message: format!("fallback names unknown structure {n}"),
                    });
                }
            }
            self.fallbacks.entry(name).or_default().extend(alts);
        }
        for (t, target) in &self.triggers {
            if !self.defs.contains_key(target) {
                errors.push(StructureError {
                    file: file.into(),
                    line: 0,
                    message: format!("trigger {t} names unknown structure {target}"),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// A definition by structure name.
    pub fn get(&self, name: &str) -> Option<&Arc<Group>> {
        self.defs.get(name)
    }

    /// Does any loaded structure have a group named `name`?
    pub fn has_group(&self, name: &str) -> bool {
        fn walk(nodes: &[Node], name: &str) -> bool {
            nodes.iter().any(|n| match n {
                Node::Group(g) => &*g.name == name || walk(&g.children, name),
                Node::Segment { .. } => false,
            })
        }
        self.defs.values().any(|d| walk(&d.children, name))
    }

    /// Names of all loaded structures.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    /// Which structure applies: MSH-9.3 if known, else the trigger table, else `TYPE_EVENT`.
    pub fn resolve(&self, h: &Header<'_>) -> Option<&Arc<Group>> {
        if let Some(s) = h
            .message_structure
            .as_deref()
            .and_then(|s| self.defs.get(s.trim()))
        {
            return Some(s);
        }
        let code = h.message_code.as_deref().unwrap_or("").trim();
        let event = h.trigger_event.as_deref().unwrap_or("").trim();
        self.triggers
            .get(&format!("{code}^{event}"))
            .or_else(|| self.triggers.get(&format!("{code}^*")))
            .and_then(|n| self.defs.get(n))
            .or_else(|| self.defs.get(&format!("{code}_{event}")))
    }

    /// Group `msg` by its structure. Adds grouping diagnostics to the returned value (not the message).
    pub fn group(&self, msg: &Message<'_>) -> Grouping {
        let mut diags = Vec::new();
        let Some(def) = self.resolve(msg.header()) else {
            let h = msg.header();
            diags.push(Diagnostic::new(
                Severity::Info,
                Code::UnknownStructure,
                Location {
                    segment: Some("MSH".into()),
                    segment_seq: Some(1),
                    field: Some(9),
                    ..Location::default()
                },
                format!(
                    "no structure definition for {}{}; segments are not grouped",
                    h.message_type(),
                    h.message_structure
                        .as_deref()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                ),
            ));
            let items = (0..msg.len()).map(GroupItem::Segment).collect();
            return Grouping {
                structure: None,
                root: GroupInstance {
                    name: "".into(),
                    items,
                },
                diagnostics: diags,
            };
        };
        let mut root = group_segments(def, msg, &mut diags);
        let mut structure = def.name.to_string();
        // A sender that declares one structure and sends another's layout (OUL_R22 with its
        // orders before the specimens): of the declared structure's fallbacks, the one that
        // leaves fewest segments unplaced, if it leaves fewer than the declared one.
        let unplaced = |d: &[Diagnostic]| {
            d.iter()
                .filter(|x| matches!(x.code, Code::UnexpectedSegment | Code::MissingSegment))
                .count()
        };
        let declared = unplaced(&diags);
        if declared > 0
            && let Some(alts) = self.fallbacks.get(&*def.name)
        {
            let mut best: Option<(usize, &Arc<Group>, GroupInstance, Vec<Diagnostic>)> = None;
            for alt in alts.iter().filter_map(|n| self.defs.get(n)) {
                let mut d = Vec::new();
                let r = group_segments(alt, msg, &mut d);
                let n = unplaced(&d);
                if n < declared && best.as_ref().is_none_or(|b| n < b.0) {
                    best = Some((n, alt, r, d));
                }
            }
            if let Some((n, alt, r, d)) = best {
                let (offset, line) = msg
                    .segment(0)
                    .map(|s| (s.offset(), s.line()))
                    .unwrap_or((0, 1));
                let mut notes = vec![Diagnostic::new(
                    Severity::Warning,
                    Code::StructureFallback,
                    Location {
                        segment: Some("MSH".into()),
                        segment_seq: Some(1),
                        field: Some(9),
                        offset,
                        line,
                        ..Location::default()
                    },
                    format!(
                        "the segments do not follow {} ({declared} out of place or missing); read as {}, {}",
                        def.name,
                        alt.name,
                        if n == 0 {
                            "which places every one".to_string()
                        } else {
                            format!("which leaves {n} out of place or missing")
                        }
                    ),
                )];
                notes.extend(d);
                diags = notes;
                root = r;
                structure = alt.name.to_string();
            }
        }
        Grouping {
            structure: Some(structure),
            root,
            diagnostics: diags,
        }
    }
}

/// The result of grouping one message.
#[derive(Debug, Clone, Serialize)]
pub struct Grouping {
    /// Structure name used, if one was found.
    pub structure: Option<String>,
    /// The root instance (named after the structure).
    pub root: GroupInstance,
    /// Unexpected, Z- and missing segments.
    pub diagnostics: Vec<Diagnostic>,
}

/// One instance of a group in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInstance {
    /// Group name.
    pub name: Arc<str>,
    /// Segments (by index in the message) and sub-groups, in message order.
    pub items: Vec<GroupItem>,
}

/// A member of a group instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupItem {
    /// A segment, by 0-based index in the message.
    Segment(usize),
    /// A nested group instance.
    Group(GroupInstance),
}

impl GroupInstance {
    /// Segment indexes directly in this instance (not in sub-groups).
    pub fn segments(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().filter_map(|i| match i {
            GroupItem::Segment(s) => Some(*s),
            GroupItem::Group(_) => None,
        })
    }

    /// Direct sub-group instances named `name`.
    pub fn groups<'g>(&'g self, name: &'g str) -> impl Iterator<Item = &'g GroupInstance> + 'g {
        self.items.iter().filter_map(move |i| match i {
            GroupItem::Group(g) if &*g.name == name => Some(g),
            _ => None,
        })
    }

    /// All instances at a `/`-separated path of group names below this one (`PATIENT_RESULT/ORDER_OBSERVATION`).
    pub fn find_all<'g>(&'g self, path: &str) -> Vec<&'g GroupInstance> {
        let mut cur = vec![self];
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = cur
                .into_iter()
                .flat_map(|g| g.items.iter())
                .filter_map(|i| match i {
                    GroupItem::Group(g) if &*g.name == part => Some(g),
                    _ => None,
                })
                .collect();
        }
        cur
    }
}

fn report_missing(
    group: &Group,
    c: &Node,
    msg: &Message<'_>,
    at_seg: usize,
    diags: &mut Vec<Diagnostic>,
) {
    let (offset, line) = msg
        .segment(at_seg)
        .map(|s| (s.offset(), s.line()))
        .unwrap_or((0, 0));
    let what = match c {
        Node::Segment { id, .. } => format!("required segment {id}"),
        Node::Group(g) => format!(
            "required group {} (starting with {})",
            g.name,
            g.first.join("/")
        ),
    };
    diags.push(Diagnostic::new(
        Severity::Warning,
        Code::MissingSegment,
        Location {
            offset,
            line,
            ..Location::default()
        },
        format!("{what} is missing in {}", group.name),
    ));
}

/// Where grouping stands in one open group instance: the child it is at and whether that child
/// has been matched in this instance. The grouping proper and its lookahead share it.
#[derive(Clone, Copy)]
struct At<'d> {
    group: &'d Group,
    pos: usize,
    used: bool,
}

/// How far [`choose`] looks ahead when a segment fits more than one open group.
const LOOKAHEAD: usize = 8;

/// Every place a segment `id` can go, innermost level first: per open level (`d`, bottom of the
/// stack = 0), the first child at or after the level's position that can start with `id`.
/// Lazy: the lookahead and the common single-place case take only the first.
fn slots<'l>(levels: &'l [At<'l>], id: &'l str) -> impl Iterator<Item = (usize, usize)> + 'l {
    levels.iter().enumerate().rev().filter_map(move |(d, f)| {
        f.group
            .children
            .iter()
            .enumerate()
            .skip(f.pos)
            .filter(|&(j, c)| !(j == f.pos && f.used && !c.repeating()))
            .find(|(_, c)| c.can_start_with(id))
            .map(|(j, _)| (d, j))
    })
}

/// The stack of open group instances, seen by [`place`]: the grouping proper builds instances and
/// reports what is missing; the lookahead only counts what would be reported.
trait Levels<'d> {
    fn levels(&mut self) -> &mut Vec<At<'d>>;
    /// Close the innermost instance.
    fn pop(&mut self);
    /// Open an instance of `g` inside the innermost one.
    fn push(&mut self, g: &'d Group);
    /// A required child `c` of the innermost instance was not matched.
    fn missing(&mut self, c: &'d Node);
    /// The segment went into the innermost instance.
    fn segment(&mut self);
}

/// Required children from `from` on that an instance closing at `at` never matched.
fn unmatched<'d>(at: &At<'d>) -> impl Iterator<Item = &'d Node> + 'd {
    let start = if at.used { at.pos + 1 } else { at.pos };
    at.group
        .children
        .iter()
        .skip(start)
        .filter(|c| !c.optional())
}

/// Put segment `id` at child `j` of level `d` (a slot from [`slots`]): close the levels above
/// `d`, advance level `d` to `j`, and open the groups the segment starts.
fn place<'d>(st: &mut impl Levels<'d>, d: usize, j: usize, id: &str) {
    while st.levels().len() > d + 1 {
        st.pop();
    }
    let mut j = j;
    loop {
        let Some(f) = st.levels().last().copied() else {
            return;
        };
        let skip_from = if f.used { f.pos + 1 } else { f.pos };
        for c in f.group.children.iter().take(j).skip(skip_from) {
            if !c.optional() {
                st.missing(c);
            }
        }
        if let Some(top) = st.levels().last_mut() {
            top.pos = j;
            top.used = true;
        }
        match f.group.children.get(j) {
            None => return,
            Some(Node::Segment { .. }) => {
                st.segment();
                return;
            }
            Some(Node::Group(g)) => {
                st.push(g);
                // Descend: the segment starts this group, so it matches at or below.
                match g.children.iter().position(|c| c.can_start_with(id)) {
                    Some(k) => j = k,
                    None => return,
                }
            }
        }
    }
}

/// The lookahead's stack: positions only, and a count of what would have been reported.
struct Probe<'d> {
    levels: Vec<At<'d>>,
    problems: usize,
}

impl<'d> Levels<'d> for Probe<'d> {
    fn levels(&mut self) -> &mut Vec<At<'d>> {
        &mut self.levels
    }
    fn pop(&mut self) {
        if let Some(f) = self.levels.pop() {
            self.problems += unmatched(&f).count();
        }
    }
    fn push(&mut self, g: &'d Group) {
        self.levels.push(At {
            group: g,
            pos: 0,
            used: false,
        });
    }
    fn missing(&mut self, _: &'d Node) {
        self.problems += 1;
    }
    fn segment(&mut self) {}
}

/// Of several places segment `i` fits, the one after which the most following segments fit
/// without a required segment skipped or a segment that fits nowhere (up to [`LOOKAHEAD`]). On a
/// tie, a place where the segment is a required one (the ORC that every ORDER starts with) goes
/// before one where it is optional (the ORC an ORDER_PRIOR may start with), then the innermost.
/// So in OMG^O19 an ORC after an order's observations or specimens opens a new ORDER, not the
/// order's PRIOR_RESULT group, unless only PRIOR_RESULT takes the segments that follow it; and in
/// BAR^P01 a PV2 after PV1 stays in the same VISIT (both places optional: the innermost).
fn choose<'d>(
    levels: &[At<'d>],
    cands: &[(usize, usize)],
    msg: &Message<'_>,
    i: usize,
) -> Option<(usize, usize)> {
    // (place, segments that fit, the segment is required there)
    let mut best: Option<((usize, usize), usize, bool)> = None;
    for &(d, j) in cands {
        let mut probe = Probe {
            levels: levels.to_vec(),
            problems: 0,
        };
        let Some(seg) = msg.segment(i) else {
            break;
        };
        place(&mut probe, d, j, seg.id());
        let mut fitted = usize::from(probe.problems == 0);
        if probe.problems == 0 {
            for k in i + 1..(i + 1 + LOOKAHEAD).min(msg.len()) {
                let Some(next) = msg.segment(k) else { break };
                let Some((d2, j2)) = slots(&probe.levels, next.id()).next() else {
                    break;
                };
                place(&mut probe, d2, j2, next.id());
                if probe.problems > 0 {
                    break;
                }
                fitted += 1;
            }
        }
        let required = levels
            .get(d)
            .is_some_and(|l| lands_required(l, j, seg.id()));
        let better = match best {
            None => true,
            Some((_, f, r)) => fitted > f || (fitted == f && required && !r),
        };
        if better {
            best = Some(((d, j), fitted, required));
        }
    }
    best.map(|b| b.0)
}

/// Is the segment slot that `id` takes when placed at child `j` of `level` a required one?
fn lands_required(level: &At<'_>, j: usize, id: &str) -> bool {
    let Some(mut node) = level.group.children.get(j) else {
        return false;
    };
    while let Node::Group(g) = node {
        match g.children.iter().find(|c| c.can_start_with(id)) {
            Some(c) => node = c,
            None => return false,
        }
    }
    !node.optional()
}

struct Grouper<'d, 'm, 'x> {
    levels: Vec<At<'d>>,
    insts: Vec<GroupInstance>,
    msg: &'m Message<'m>,
    /// The segment being placed.
    at_seg: usize,
    diags: &'x mut Vec<Diagnostic>,
}

impl<'d> Levels<'d> for Grouper<'d, '_, '_> {
    fn levels(&mut self) -> &mut Vec<At<'d>> {
        &mut self.levels
    }
    fn pop(&mut self) {
        let (Some(f), Some(inst)) = (self.levels.pop(), self.insts.pop()) else {
            return;
        };
        for c in unmatched(&f) {
            report_missing(f.group, c, self.msg, self.at_seg, self.diags);
        }
        if let Some(parent) = self.insts.last_mut() {
            parent.items.push(GroupItem::Group(inst));
        }
    }
    fn push(&mut self, g: &'d Group) {
        self.levels.push(At {
            group: g,
            pos: 0,
            used: false,
        });
        self.insts.push(GroupInstance {
            name: g.name.clone(),
            items: vec![],
        });
    }
    fn missing(&mut self, c: &'d Node) {
        if let Some(f) = self.levels.last() {
            report_missing(f.group, c, self.msg, self.at_seg, self.diags);
        }
    }
    fn segment(&mut self) {
        if let Some(top) = self.insts.last_mut() {
            top.items.push(GroupItem::Segment(self.at_seg));
        }
    }
}

fn group_segments(def: &Group, msg: &Message<'_>, diags: &mut Vec<Diagnostic>) -> GroupInstance {
    let mut g = Grouper {
        levels: Vec::new(),
        insts: Vec::new(),
        msg,
        at_seg: 0,
        diags,
    };
    g.push(def);
    for seg in msg.segments() {
        let id = seg.id();
        let i = seg.index();
        g.at_seg = i;
        // Almost always one place, often none: no allocation for those.
        let cands: smallvec::SmallVec<[(usize, usize); 4]> = slots(&g.levels, id).collect();
        let chosen = if cands.len() > 1 {
            choose(&g.levels, &cands, msg, i)
        } else {
            cands.first().copied()
        };
        let Some((d, j)) = chosen else {
            let innermost = g.levels.last().map(|f| &*f.group.name).unwrap_or("");
            let (code, sev, text) = if id.starts_with('Z') {
                (
                    Code::ZSegment,
                    Severity::Info,
                    format!("Z-segment {id} kept in place in group {innermost}"),
                )
            } else {
                (
                    Code::UnexpectedSegment,
                    Severity::Warning,
                    format!(
                        "segment {id} is not expected here by {}; kept in place in group {innermost}",
                        def.name
                    ),
                )
            };
            g.diags.push(Diagnostic::new(
                sev,
                code,
                Location {
                    segment: Some(id.to_string()),
                    segment_seq: Some(i as u32 + 1),
                    offset: seg.offset(),
                    line: seg.line(),
                    ..Location::default()
                },
                text,
            ));
            g.segment();
            continue;
        };
        place(&mut g, d, j, id);
    }
    g.at_seg = msg.len().saturating_sub(1);
    while g.levels.len() > 1 {
        g.pop();
    }
    let (Some(root), Some(inst)) = (g.levels.pop(), g.insts.pop()) else {
        return GroupInstance {
            name: def.name.clone(),
            items: vec![],
        };
    };
    for c in unmatched(&root) {
        report_missing(root.group, c, msg, g.at_seg, g.diags);
    }
    inst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_definitions_load() {
        let mut s = Structures::default();
        for (file, text) in BUILTIN {
            s.add_file(file, text).unwrap_or_else(|e| panic!("{e:?}"));
        }
        for name in [
            "ADT_A01", "ORU_R01", "VXU_V04", "ORM_O01", "OML_O21", "SIU_S12", "MDM_T02", "DFT_P03",
            "RDE_O11", "BAR_P01", "QBP_Q11", "RSP_K11", "ACK",
        ] {
            assert!(s.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn definition_errors_name_file_and_line() {
        let mut s = Structures::default();
        let errs = s
            .add_file(
                "t.hl7s",
                "X_1 = MSH [PID NK1]\nY_1 = MSH pid\nZ_1 = PID\ntrigger FOO = Q\n",
            )
            .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text[0].starts_with("t.hl7s:1: brackets holding 2 elements"),
            "{text:?}"
        );
        assert!(text[1].starts_with("t.hl7s:2: 'pid'"), "{text:?}");
        assert!(
            text[2].starts_with("t.hl7s:3: structure Z_1 must start with MSH"),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("trigger 'FOO' must be TYPE^EVENT")),
            "{text:?}"
        );
    }

    #[test]
    fn fallbacks_name_known_structures() {
        let mut s = Structures::default();
        let errs = s
            .add_file(
                "f.hl7s",
                "A_1 = MSH PID\nB_1 = MSH PV1\nfallback A_1 = B_1\nfallback B_1 = C_9\nfallback A_1 =\n",
            )
            .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t == "f.hl7s:4: fallback names unknown structure C_9"),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t == "f.hl7s:5: fallback A_1 names no structure"),
            "{text:?}"
        );
    }
}
