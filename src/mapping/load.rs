//! Loading a mapping set: YAML with positions → JSON Schema (`mappings/schema/mapping.schema.json`)
//! → typed files → semantic checks → a compiled [`Plan`]. Every problem is reported as
//! `file:line:col: what`, and all of them at once.

use super::ast::{self, File};
use super::plan::*;
use super::yaml::{self, Pos};
use crate::v2::Structures;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A problem in a mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// File (as given, relative to the mapping directory's parent when possible).
    pub file: String,
    /// 1-based line (0 when the problem is about the file as a whole).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

const MAPPING_SCHEMA: &str = include_str!("../../mappings/schema/mapping.schema.json");

fn mapping_validator() -> Result<&'static jsonschema::Validator, String> {
    static V: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(MAPPING_SCHEMA)
            .map_err(|e| format!("mapping schema is not JSON: {e}"))?;
        jsonschema::options()
            .build(&schema)
            .map_err(|e| format!("mapping schema does not compile: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// FHIR element model read from the official R4 JSON Schema's definitions.
struct FhirModel {
    defs: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ElementInfo {
    array: bool,
    /// Element type name (`Identifier`, `string`, `code`…).
    ty: String,
}

fn fhir_model() -> Option<&'static FhirModel> {
    static M: OnceLock<Option<FhirModel>> = OnceLock::new();
    M.get_or_init(|| {
        let v = crate::fhir::validate::schema_document()?;
        let defs = v.get("definitions")?.as_object()?.clone();
        Some(FhirModel { defs })
    })
    .as_ref()
}

fn ref_name(v: &Value) -> Option<String> {
    v.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/definitions/"))
        .map(str::to_string)
}

impl FhirModel {
    fn has_type(&self, t: &str) -> bool {
        self.defs.contains_key(t)
    }
    fn element(&self, ty: &str, key: &str) -> Option<ElementInfo> {
        let p = self.defs.get(ty)?.get("properties")?.get(key)?;
        if let Some(items) = p.get("items") {
            return Some(ElementInfo {
                array: true,
                ty: ref_name(items).unwrap_or_else(|| "code".into()),
            });
        }
        Some(ElementInfo {
            array: false,
            ty: ref_name(p).unwrap_or_else(|| "code".into()),
        })
    }
    fn choices(&self, ty: &str, key: &str) -> Vec<String> {
        let Some(props) = self
            .defs
            .get(ty)
            .and_then(|d| d.get("properties"))
            .and_then(Value::as_object)
        else {
            return vec![];
        };
        props
            .keys()
            .filter(|k| {
                k.len() > key.len()
                    && k.starts_with(key)
                    && k[key.len()..].starts_with(|c: char| c.is_ascii_uppercase())
            })
            .cloned()
            .collect()
    }
}

fn is_primitive(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_lowercase()) || t == "ResourceList"
}

/// Highest field number per segment (HL7 v2.8.2), for "field exists" checks; Z- and unlisted
/// segments are not checked.
const SEGMENT_FIELDS: &[(&str, usize)] = &[
    ("MSH", 28),
    ("EVN", 7),
    ("PID", 40),
    ("PD1", 22),
    ("NK1", 41),
    ("PV1", 54),
    ("PV2", 50),
    ("AL1", 6),
    ("DG1", 26),
    ("PR1", 26),
    ("IN1", 56),
    ("IN2", 72),
    ("IN3", 28),
    ("GT1", 57),
    ("OBR", 53),
    ("OBX", 33),
    ("ORC", 38),
    ("NTE", 8),
    ("SPM", 32),
    ("RXA", 28),
    ("RXR", 6),
    ("TQ1", 14),
    ("MRG", 7),
    ("ROL", 14),
    ("SFT", 6),
    ("PRT", 24),
    ("MSA", 8),
    ("ERR", 12),
    ("DB1", 8),
    ("ACC", 11),
    ("UB1", 23),
    ("UB2", 17),
    ("PDA", 9),
    ("DRG", 31),
    ("SCH", 27),
];

struct Ctx<'a> {
    errors: Vec<LoadError>,
    /// Maps that failed to load or compile cleanly; errors that follow from them are not repeated.
    quiet_maps: std::collections::HashSet<String>,
    map_ids: HashMap<String, MapId>,
    vocab_ids: HashMap<String, VocabId>,
    alias_ids: HashMap<String, AliasId>,
    files: &'a HashMap<String, (String, HashMap<String, Pos>)>,
}

impl Ctx<'_> {
    /// Report a missing map, unless it is one that failed to load (already reported).
    fn err_missing_map(&mut self, file: &str, ptr: &str, name: &str, message: String) {
        if !self.quiet_maps.contains(name) {
            self.err(file, ptr, message);
        }
    }

    fn err(&mut self, file: &str, ptr: &str, message: impl Into<String>) {
        let pos = self
            .files
            .get(file)
            .map(|(_, p)| yaml::position_of(p, ptr))
            .unwrap_or_default();
        self.errors.push(LoadError {
            file: file.to_string(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
        });
    }
    fn origin(&self, file: &str, ptr: &str) -> String {
        let pos = self
            .files
            .get(file)
            .map(|(_, p)| yaml::position_of(p, ptr))
            .unwrap_or_default();
        format!("{file}:{}:{}", pos.line, pos.col)
    }
}

/// Parse a source path. Segment paths: `PID-3`, `PID-3[*]`, `PID-3[2].4.1`; relative: `.`, `.4.1`;
/// alternatives: `a | b`.
pub fn parse_src(s: &str) -> Result<Src, String> {
    let s = s.trim();
    if s.contains('|') {
        let alts: Result<Vec<Src>, String> = s.split('|').map(parse_src).collect();
        return Ok(Src::Alt(alts?));
    }
    if s == "." {
        return Ok(Src::Rel(vec![]));
    }
    if let Some((group, rest)) = s.split_once('/') {
        let named = !group.is_empty()
            && group
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !named {
            return Err(format!(
                "'{s}': a group name before '/' is upper-case letters, digits and '_' (TIMING_ENCODED/TQ1-7)"
            ));
        }
        let inner = parse_src(rest)?;
        if !matches!(inner, Src::Field { .. }) {
            return Err(format!(
                "'{s}': GROUP/ takes a field path (GROUP/SEG-n…), not a segment or a relative path"
            ));
        }
        return Ok(Src::InGroup(group.into(), Box::new(inner)));
    }
    if let Some(rest) = s.strip_prefix('.') {
        let parts: Result<Vec<usize>, String> = rest
            .split('.')
            .map(|p| match p.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!(
                    "'{s}': relative paths are .N or .N.M with 1-based numbers"
                )),
                Ok(n) => Ok(n),
            })
            .collect();
        let parts = parts?;
        if parts.len() > 2 {
            return Err(format!(
                "'{s}': at most two levels (.component.subcomponent)"
            ));
        }
        return Ok(Src::Rel(parts));
    }
    let b = s.as_bytes();
    if b.len() < 3
        || !b[..3]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(format!(
            "'{s}': expected SEG-field (e.g. PID-3), SEG[*] or a relative path (.1)"
        ));
    }
    let seg = [b[0], b[1], b[2]];
    if let Some(r) = s[3..].strip_prefix("[**]") {
        if !r.is_empty() {
            return Err(format!(
                "'{s}': SEG[**] (the segments in the current group and all its subgroups) selects \
                 segments; read their fields in sub-rules"
            ));
        }
        return Ok(Src::Seg {
            seg,
            which: SegScope::Deep,
        });
    }
    if let Some(r) = s[3..].strip_prefix("[.]") {
        if !r.is_empty() {
            return Err(format!(
                "'{s}': SEG[.] (the segments directly in the current group) selects segments; \
                 read their fields in sub-rules"
            ));
        }
        return Ok(Src::Seg {
            seg,
            which: SegScope::Direct,
        });
    }
    let (seg_all, after) = match s[3..].strip_prefix("[*]") {
        Some(r) => (true, r),
        None => (false, &s[3..]),
    };
    if after.is_empty() {
        return Ok(Src::Seg {
            seg,
            which: if seg_all {
                SegScope::All
            } else {
                SegScope::First
            },
        });
    }
    let Some(rest) = after.strip_prefix('-') else {
        return Err(format!(
            "'{s}': expected SEG-field (e.g. PID-3), SEG[*] or a relative path (.1)"
        ));
    };
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let field: usize = rest[..end]
        .parse()
        .map_err(|_| format!("'{s}': field number missing"))?;
    if field == 0 {
        return Err(format!("'{s}': fields are 1-based"));
    }
    let mut rest = &rest[end..];
    let mut rep = Rep::First;
    if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']').ok_or_else(|| format!("'{s}': unclosed '['"))?;
        rep = match &r[..close] {
            "*" => Rep::All,
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => {
                    return Err(format!("'{s}': repetition must be [*] or a 1-based number"));
                }
                Ok(n) => Rep::Nth(n),
            },
        };
        rest = &r[close + 1..];
    }
    let mut nums = vec![];
    for p in rest.split('.').skip(1) {
        match p.parse::<usize>() {
            Ok(n) if n > 0 => nums.push(n),
            _ => return Err(format!("'{s}': components are 1-based numbers")),
        }
    }
    if !rest.is_empty() && !rest.starts_with('.') {
        return Err(format!("'{s}': unexpected text after the field"));
    }
    if nums.len() > 2 {
        return Err(format!("'{s}': at most field.component.subcomponent"));
    }
    Ok(Src::Field {
        seg,
        seg_all,
        field,
        rep,
        comp: nums.first().copied(),
        sub: nums.get(1).copied(),
    })
}

/// Parse a target path: `identifier[+].type.coding[+].code`, `value[x]`.
pub fn parse_target(s: &str) -> Result<Vec<Step>, String> {
    s.split('.')
        .map(|part| {
            let (key, mode) = match part.split_once('[') {
                None => (part, Mode::Plain),
                Some((k, m)) => {
                    let m = m
                        .strip_suffix(']')
                        .ok_or_else(|| format!("'{s}': unclosed '['"))?;
                    let mode = match m {
                        "+" => Mode::Append,
                        "=" => Mode::Last,
                        "x" => Mode::Choice,
                        n => Mode::Index(n.parse().map_err(|_| {
                            format!("'{s}': [{m}] is not [+], [=], [x] or an index")
                        })?),
                    };
                    (k, mode)
                }
            };
            // `_birthDate`: the element of a primitive (its extensions), as in FHIR JSON.
            let name = key.strip_prefix('_').unwrap_or(key);
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("'{s}': '{key}' is not an element name"));
            }
            Ok(Step {
                key: key.to_string(),
                mode,
            })
        })
        .collect()
}

fn parse_cond(v: &Value, vocabs: &HashMap<String, VocabId>) -> Result<Cond, String> {
    let obj = v
        .as_object()
        .ok_or("a condition is an object with one key")?;
    let (k, val) = obj.iter().next().ok_or("empty condition")?;
    let list = |val: &Value| -> Result<Vec<Cond>, String> {
        val.as_array()
            .ok_or(format!("'{k}' takes a list of conditions"))?
            .iter()
            .map(|c| parse_cond(c, vocabs))
            .collect()
    };
    let path = |val: &Value| -> Result<Src, String> {
        parse_src(val.as_str().ok_or(format!("'{k}' takes a path"))?)
    };
    Ok(match k.as_str() {
        "valued" => Cond::Valued(path(val)?),
        "not_valued" => Cond::NotValued(path(val)?),
        "all" => Cond::All(list(val)?),
        "any" => Cond::Any(list(val)?),
        "not" => Cond::Not(Box::new(parse_cond(val, vocabs)?)),
        "in_vocab" => {
            let (p, name) = path_and_text(
                val,
                "'in_vocab' takes one path and a vocabulary name: { in_vocab: { \"PV1-2.1\": EncounterClass } }",
            )?;
            let id = *vocabs.get(name).ok_or(format!(
                "'in_vocab' {p}: no vocabulary named {name} (mappings/vocab/{name}.csv)"
            ))?;
            Cond::InVocab(parse_src(p)?, id)
        }
        "converts" => {
            let (p, f) = path_and_text(
                val,
                "'converts' takes one path and a function name: { converts: { \"OBX-5\": compared_decimal } }",
            )?;
            let func =
                Func::from_name(f).ok_or(format!("'converts' {p}: no function named {f}"))?;
            Cond::Converts(parse_src(p)?, func)
        }
        "matches" => {
            let (p, re) = path_and_text(
                val,
                "'matches' takes one path and its regular expression: { matches: { \"OBX-5\": \"^[<>]\" } }",
            )?;
            let re = regex::Regex::new(re)
                .map_err(|e| format!("'matches' {p}: not a regular expression: {e}"))?;
            Cond::Matches(parse_src(p)?, re)
        }
        p => {
            let values = val
                .as_array()
                .ok_or(format!("'{p}' takes a list of values"))?
                .iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            Cond::In(parse_src(p)?, values)
        }
    })
}

/// The one `PATH: text` pair of a condition such as `{ matches: { PATH: regex } }`; `usage`
/// (what the condition takes, with an example) when `val` is anything else.
fn path_and_text<'v>(val: &'v Value, usage: &str) -> Result<(&'v str, &'v str), String> {
    val.as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .and_then(|(p, t)| Some((p.as_str(), t.as_str()?)))
        .ok_or_else(|| usage.to_string())
}

fn cond_paths<'c>(c: &'c Cond, out: &mut Vec<&'c Src>) {
    match c {
        Cond::In(s, _)
        | Cond::Valued(s)
        | Cond::NotValued(s)
        | Cond::Matches(s, _)
        | Cond::InVocab(s, _)
        | Cond::Converts(s, _) => out.push(s),
        Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| cond_paths(c, out)),
        Cond::Not(c) => cond_paths(c, out),
    }
}

fn src_fields(s: &Src, out: &mut Vec<([u8; 3], usize)>) {
    match s {
        Src::Field { seg, field, .. } => out.push((*seg, *field)),
        Src::Seg { .. } | Src::Rel(_) => {}
        Src::Alt(a) => a.iter().for_each(|x| src_fields(x, out)),
        Src::InGroup(_, x) => src_fields(x, out),
    }
}

/// Give map `i` its base's rules (`extends`), the base's own base first: a rule of map `i` with
/// the name of a base rule replaces it in place, the others follow the base's. A base that is
/// missing, of the other kind, of another FHIR type or segment, or a cycle (map `i` reached again
/// through its bases: `visiting`) is an error at the map's `extends`. Each map is resolved once.
fn resolve_extends(
    i: usize,
    defs: &[(String, &ast::RuleMap, bool)],
    maps: &mut [MapPlan],
    done: &mut [bool],
    visiting: &mut Vec<usize>,
    ctx: &mut Ctx<'_>,
) {
    let (file, m, is_segment) = &defs[i];
    let Some(base_name) = m.extends.as_ref().filter(|_| !done[i]) else {
        return;
    };
    let fail = |ctx: &mut Ctx<'_>, message: String| {
        ctx.err(file, "/extends", message);
        ctx.quiet_maps.insert(m.map.clone());
    };
    if visiting.contains(&i) {
        done[i] = true;
        fail(
            ctx,
            format!("{} extends itself (through {base_name})", m.map),
        );
        return;
    }
    let Some(&b) = ctx.map_ids.get(base_name) else {
        done[i] = true;
        if !ctx.quiet_maps.contains(base_name.as_str()) {
            fail(ctx, format!("no segment or datatype map named {base_name}"));
        }
        return;
    };
    let kind = |seg: bool| if seg { "segment" } else { "datatype" };
    let segment = |name: &str| split_map_name(name).map(|(l, _)| l.to_string());
    let mismatch = if defs[b].2 != *is_segment {
        Some(format!(
            "{} is a {} map and {base_name} a {} map: a map extends one of its own kind",
            m.map,
            kind(*is_segment),
            kind(defs[b].2)
        ))
    } else if *is_segment && segment(&m.map) != segment(base_name) {
        Some(format!("{} and {base_name} read different segments", m.map))
    } else if maps[b].fhir_type != maps[i].fhir_type {
        Some(format!(
            "{} makes {} and {base_name} makes {}: a map extends one of its own FHIR type",
            m.map, maps[i].fhir_type, maps[b].fhir_type
        ))
    } else {
        None
    };
    if let Some(message) = mismatch {
        done[i] = true;
        fail(ctx, message);
        return;
    }
    visiting.push(i);
    resolve_extends(b, defs, maps, done, visiting, ctx);
    visiting.pop();
    if done[i] {
        return; // a cycle through this map was reported while its bases resolved
    }
    done[i] = true;
    let mut rules = maps[b].rules.clone();
    for r in std::mem::take(&mut maps[i].rules) {
        match rules.iter().position(|x| x.name == r.name) {
            Some(p) => rules[p] = r,
            None => rules.push(r),
        }
    }
    maps[i].rules = rules;
    if ctx.quiet_maps.contains(base_name.as_str()) {
        ctx.quiet_maps.insert(m.map.clone());
    }
}

/// Split `X[Y]` or `X[Y:Variant]` into (`X`, `Y`): the FHIR type without the variant name.
fn split_map_name(n: &str) -> Option<(&str, &str)> {
    let (a, b) = n.split_once('[')?;
    let inner = b.strip_suffix(']')?;
    Some((a, inner.split(':').next().unwrap_or(inner)))
}

/// A vocabulary CSV; an error names its 1-based line.
fn read_vocab(name: &str, text: &str) -> Result<Vocab, (usize, String)> {
    // `#! key: value` lines are directives; other `#` lines are comments.
    let mut unmatched = None;
    for (i, line) in text.lines().enumerate() {
        let Some(d) = line.strip_prefix("#!") else {
            continue;
        };
        match d.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("unmatched", f)) => match Func::from_name(f) {
                Some(func) if crate::mapping::functions::vocab_fallback(func) => {
                    unmatched = Some(func)
                }
                _ => {
                    return Err((
                        i + 1,
                        format!(
                            "'unmatched: {f}': a vocabulary can apply uri, text, upper or lower to a code it has no row for"
                        ),
                    ));
                }
            },
            _ => {
                return Err((
                    i + 1,
                    format!("unknown directive '#!{d}' (known: '#! unmatched: FUNCTION')"),
                ));
            }
        }
    }
    let mut rows = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (header_at, header) = rows
        .next()
        .ok_or((1, "empty vocabulary file".to_string()))?;
    let cols: Vec<String> = split_csv(header)
        .into_iter()
        .map(|c| c.trim().to_string())
        .collect();
    let col = |n: &str| cols.iter().position(|c| c == n);
    let missing = |c: &str| (header_at + 1, format!("header must have {c}"));
    let sc = col("source_code").ok_or_else(|| missing("source_code"))?;
    let tc = col("target_code").ok_or_else(|| missing("target_code"))?;
    let (td, ts) = (col("target_display"), col("target_system"));
    let mut entries = HashMap::new();
    for (i, line) in rows {
        let cells = split_csv(line);
        let get = |c: Option<usize>| {
            c.and_then(|c| cells.get(c))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let key = get(Some(sc));
        if entries.contains_key(&key) {
            return Err((i + 1, format!("source_code '{key}' appears twice")));
        }
        entries.insert(
            key,
            VocabEntry {
                code: get(Some(tc)),
                display: get(td),
                system: get(ts),
            },
        );
    }
    Ok(Vocab {
        name: name.to_string(),
        entries,
        unmatched,
    })
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(l) = out.last_mut() {
                    l.push('"');
                }
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => {
                if let Some(l) = out.last_mut() {
                    l.push(c);
                }
            }
        }
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "schema" || n == "structures")
            {
                continue;
            }
            collect_files(&p, out)?;
        } else if p
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "csv")
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Load and compile the mapping set in `dir` (e.g. `mappings/`).
pub fn load_dir(dir: &Path) -> Result<Plan, Vec<LoadError>> {
    let mut paths = Vec::new();
    if let Err(e) = collect_files(dir, &mut paths) {
        return Err(vec![LoadError {
            file: dir.display().to_string(),
            line: 0,
            col: 0,
            message: format!("cannot read: {e}"),
        }]);
    }
    let base = dir.parent().unwrap_or(dir);
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let name = p.strip_prefix(base).unwrap_or(&p).display().to_string();
        match std::fs::read_to_string(&p) {
            Ok(t) => sources.push((name, t)),
            Err(e) => errors.push(LoadError {
                file: name,
                line: 0,
                col: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    match load_sources(&sources) {
        Ok(plan) if errors.is_empty() => Ok(plan),
        Ok(_) => Err(errors),
        Err(mut e) => {
            errors.append(&mut e);
            Err(errors)
        }
    }
}

/// Load and compile from in-memory `(file name, text)` pairs: `.yaml` mapping files and `.csv`
/// vocabularies (named by file stem).
pub fn load_sources(sources: &[(String, String)]) -> Result<Plan, Vec<LoadError>> {
    let mut errors: Vec<LoadError> = Vec::new();
    let validator = match mapping_validator() {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(LoadError {
                file: "mappings/schema/mapping.schema.json".into(),
                line: 0,
                col: 0,
                message: e,
            });
            None
        }
    };
    let mut files: HashMap<String, (String, HashMap<String, Pos>)> = HashMap::new();
    // Maps whose file did not load: references to them are not reported again (one root cause).
    let mut broken_maps: std::collections::HashSet<String> = Default::default();
    let mut parsed: Vec<(String, File)> = Vec::new();
    let mut vocabs: Vec<Vocab> = Vec::new();
    for (name, text) in sources {
        if name.ends_with(".csv") {
            let stem = Path::new(name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match read_vocab(&stem, text) {
                Ok(v) => vocabs.push(v),
                Err((line, message)) => errors.push(LoadError {
                    file: name.clone(),
                    line,
                    col: 1,
                    message,
                }),
            }
            continue;
        }
        let declared_map = text
            .lines()
            .find_map(|l| l.strip_prefix("map:"))
            .map(|v| v.trim().trim_matches(['"', '\'']).to_string());
        let node = match yaml::parse(text) {
            Ok(n) => n,
            Err(e) => {
                errors.push(LoadError {
                    file: name.clone(),
                    line: e.pos.line,
                    col: e.pos.col,
                    message: e.message,
                });
                if let Some(m) = &declared_map {
                    broken_maps.insert(m.clone());
                }
                continue;
            }
        };
        let mut positions = HashMap::new();
        let mut json = node.to_json(&mut positions);
        let mut schema_ok = true;
        let mut bad_rules: std::collections::BTreeSet<usize> = Default::default();
        let mut bad_elsewhere = false;
        if let Some(v) = validator {
            for e in v.iter_errors(&json) {
                schema_ok = false;
                let ptr = e.instance_path().to_string();
                match ptr
                    .strip_prefix("/rules/")
                    .and_then(|r| r.split('/').next())
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    Some(n) => {
                        bad_rules.insert(n);
                    }
                    None => bad_elsewhere = true,
                }
                let pos = yaml::position_of(&positions, &ptr);
                let msg: String = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let msg = if msg.chars().count() > 240 {
                    msg.chars().take(240).collect::<String>() + "…"
                } else {
                    msg
                };
                errors.push(LoadError {
                    file: name.clone(),
                    line: pos.line,
                    col: pos.col,
                    message: format!("{}: {msg}", if ptr.is_empty() { "/" } else { &ptr }),
                });
            }
        }
        files.insert(name.clone(), (String::new(), positions));
        if !schema_ok {
            // Keep checking the rules that are well-formed, so every error is listed at once:
            // each broken rule is replaced by a stub that compilation skips.
            if bad_elsewhere {
                if let Some(m) = &declared_map {
                    broken_maps.insert(m.clone());
                }
                continue;
            }
            if let Some(rules) = json.get_mut("rules").and_then(Value::as_array_mut) {
                for &n in &bad_rules {
                    if let Some(r) = rules.get_mut(n) {
                        *r = serde_json::json!({ "name": format!("__schema_error_{n}") });
                    }
                }
            }
        }
        match serde_json::from_value::<File>(json) {
            Ok(mut f) => {
                if let File::Segment(m) | File::Datatype(m) = &mut f {
                    for &n in &bad_rules {
                        if let Some(r) = m.rules.get_mut(n) {
                            r.invalid = true;
                        }
                    }
                }
                parsed.push((name.clone(), f));
            }
            Err(e) => errors.push(LoadError {
                file: name.clone(),
                line: 1,
                col: 1,
                message: e.to_string(),
            }),
        }
    }

    let mut ctx = Ctx {
        errors,
        quiet_maps: broken_maps,
        map_ids: HashMap::new(),
        vocab_ids: HashMap::new(),
        alias_ids: HashMap::new(),
        files: &files,
    };
    let mut seen_vocab = HashMap::new();
    for (i, v) in vocabs.iter().enumerate() {
        if seen_vocab.insert(v.name.clone(), i).is_some() {
            ctx.errors.push(LoadError {
                file: format!("vocab {}", v.name),
                line: 0,
                col: 0,
                message: "vocabulary defined twice".into(),
            });
        }
        ctx.vocab_ids.insert(v.name.clone(), i);
    }
    // Map ids first (maps may refer to each other in any order).
    let mut map_defs: Vec<(String, &ast::RuleMap, bool)> = Vec::new();
    for (file, f) in &parsed {
        match f {
            File::Segment(m) | File::Datatype(m) => {
                if ctx.map_ids.contains_key(&m.map) {
                    ctx.err(file, "/map", format!("map {} is defined twice", m.map));
                    continue;
                }
                ctx.map_ids.insert(m.map.clone(), map_defs.len());
                map_defs.push((file.clone(), m, matches!(f, File::Segment(_))));
            }
            File::Sender(_) => {}
            File::Message(m) => {
                for r in &m.resources {
                    let n = ctx.alias_ids.len();
                    ctx.alias_ids.entry(r.alias.clone()).or_insert(n);
                }
            }
        }
    }
    let model = fhir_model();
    if model.is_none() {
        ctx.errors.push(LoadError {
            file: "src/fhir/fhir.r4.schema.json".into(),
            line: 0,
            col: 0,
            message: "FHIR schema unreadable".into(),
        });
    }
    let mut maps = Vec::new();
    for (file, m, is_segment) in &map_defs {
        let (left, fhir_type) = split_map_name(&m.map).unwrap_or(("", ""));
        if let Some(model) = model
            && !model.has_type(fhir_type)
        {
            ctx.err(file, "/map", format!("'{fhir_type}' is not an R4 type"));
        }
        if *is_segment && left.len() != 3 {
            ctx.err(
                file,
                "/map",
                format!("a segment map is named SEG[Type]; '{left}' is not a segment id"),
            );
        }
        let seg_ctx = if *is_segment { Some(left) } else { None };
        let errors_before = ctx.errors.len();
        let rules = compile_rules(
            &mut ctx,
            model,
            file,
            "/rules",
            &m.rules,
            fhir_type,
            seg_ctx,
            !*is_segment,
        );
        // A map with errors (or with rules dropped for a missing map) may lack rules that
        // overlays name: those follow-on errors are not repeated.
        if ctx.errors.len() > errors_before || rules.len() < m.rules.len() {
            ctx.quiet_maps.insert(m.map.clone());
        }
        maps.push(MapPlan {
            name: m.map.clone(),
            fhir_type: fhir_type.to_string(),
            rules,
        });
    }
    // `extends`: a map starts from its base's rules (after the base's own `extends`).
    let mut done = vec![false; map_defs.len()];
    for i in 0..map_defs.len() {
        resolve_extends(
            i,
            &map_defs,
            &mut maps,
            &mut done,
            &mut Vec::new(),
            &mut ctx,
        );
    }
    let mut messages = Vec::new();
    let mut message_names = HashMap::new();
    for (file, f) in &parsed {
        let File::Message(m) = f else { continue };
        if message_names.insert(m.name.clone(), file.clone()).is_some() {
            ctx.err(
                file,
                "/name",
                format!("message map '{}' is defined twice", m.name),
            );
        }
        for (i, s) in m.structures.iter().enumerate() {
            if Structures::builtin().get(s).is_none() {
                ctx.err(
                    file,
                    &format!("/structures/{i}"),
                    format!("unknown message structure {s} (see mappings/structures/)"),
                );
            }
        }
        let mut resources = Vec::new();
        let mut declared: Vec<String> = Vec::new();
        for (i, r) in m.resources.iter().enumerate() {
            let ptr = format!("/resources/{i}");
            let alias = ctx.alias_ids.get(&r.alias).copied().unwrap_or(0);
            let map = match ctx.map_ids.get(&r.map) {
                Some(&id) => {
                    if !map_defs[id].2 {
                        ctx.err(
                            file,
                            &format!("{ptr}/map"),
                            format!(
                                "{} is a datatype map; resources come from segment maps",
                                r.map
                            ),
                        );
                    }
                    if maps[id].fhir_type != r.rtype {
                        ctx.err(
                            file,
                            &format!("{ptr}/map"),
                            format!("{} builds {}, not {}", r.map, maps[id].fhir_type, r.rtype),
                        );
                    }
                    id
                }
                None => {
                    ctx.err_missing_map(
                        file,
                        &format!("{ptr}/map"),
                        &r.map,
                        format!("no segment map named {}", r.map),
                    );
                    0
                }
            };
            let mut steps: Vec<SourceStep> = r
                .source
                .split('/')
                .map(|p| match p.strip_suffix("[*]") {
                    Some(n) => SourceStep {
                        name: n.to_string(),
                        all: true,
                    },
                    None => SourceStep {
                        name: p.to_string(),
                        all: false,
                    },
                })
                .collect();
            let segment = steps.pop().unwrap_or(SourceStep {
                name: String::new(),
                all: false,
            });
            if segment.name.len() != 3
                || !segment
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                ctx.err(
                    file,
                    &format!("{ptr}/source"),
                    format!("'{}': the last step must be a segment id", r.source),
                );
            } else if let Some((seg, _)) = split_map_name(&r.map)
                && seg != segment.name
            {
                ctx.err(
                    file,
                    &format!("{ptr}/source"),
                    format!(
                        "source segment {} does not match map {}",
                        segment.name, r.map
                    ),
                );
            }
            for st in &steps {
                let known = m.structures.iter().any(|s| {
                    Structures::builtin()
                        .get(s)
                        .is_some_and(|g| group_exists(g, &st.name))
                });
                if !known {
                    ctx.err(
                        file,
                        &format!("{ptr}/source"),
                        format!(
                            "group {} does not exist in {}",
                            st.name,
                            m.structures.join(", ")
                        ),
                    );
                }
            }
            let mut key = Vec::new();
            for (k, p) in r.id.key.iter().enumerate() {
                if let Some(lit) = p
                    .strip_prefix('\'')
                    .and_then(|rest| rest.strip_suffix('\''))
                    .filter(|l| !l.is_empty())
                {
                    key.push(IdKey::Literal(lit.to_string()));
                    continue;
                }
                match parse_src(p) {
                    Ok(s) => key.push(IdKey::Path(s)),
                    Err(e) => ctx.err(file, &format!("{ptr}/id/key/{k}"), e),
                }
            }
            let scope = match r.id.scope.as_deref() {
                None | Some("sender") => IdScope::Sender,
                Some("message") => IdScope::Message,
                _ => IdScope::Global,
            };
            let base = match &r.id.base {
                Some(b) if declared.contains(b) => ctx.alias_ids.get(b).copied(),
                Some(b) => {
                    ctx.err(
                        file,
                        &format!("{ptr}/id/base"),
                        format!("base '{b}' must be a resource declared before this one"),
                    );
                    None
                }
                None => None,
            };
            let when = match &r.when {
                Some(w) => match parse_cond(w, &ctx.vocab_ids) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        ctx.err(file, &format!("{ptr}/when"), e);
                        None
                    }
                },
                None => None,
            };
            declared.push(r.alias.clone());
            let origin = ctx.origin(file, &ptr);
            resources.push(ResourcePlan {
                alias,
                rtype: r.rtype.clone(),
                groups: steps,
                segment,
                map,
                key,
                scope,
                base,
                optional: r.optional,
                when,
                origin,
            });
        }
        messages.push(MessagePlan {
            name: m.name.clone(),
            structures: m.structures.clone(),
            events: m.events.clone(),
            resources,
            tests: m.tests.clone(),
            file: file.clone(),
        });
    }
    // Every alias used by ref/refs must be declared by some message map.
    let mut aliases: Vec<String> = vec![String::new(); ctx.alias_ids.len()];
    for (k, &v) in &ctx.alias_ids {
        aliases[v] = k.clone();
    }
    // A cycle of `via` / `resource:` maps (A → B → A) would recurse forever at conversion time.
    for (id, m) in maps.iter().enumerate() {
        if let Some(path) = find_cycle(&maps, id) {
            let (file, _, _) = &map_defs[id];
            let names: Vec<&str> = path.iter().map(|&i| maps[i].name.as_str()).collect();
            ctx.err(
                file,
                "/map",
                format!("map {} is part of a cycle: {}", m.name, names.join(" → ")),
            );
        }
    }
    // Sender overlays: patched copies of the maps they change, checked like any other rules.
    let mut senders = Vec::new();
    let mut sender_names = HashMap::new();
    for (file, f) in &parsed {
        let File::Sender(sm) = f else { continue };
        if sender_names.insert(sm.name.clone(), file.clone()).is_some() {
            ctx.err(
                file,
                "/name",
                format!("sender overlay '{}' is defined twice", sm.name),
            );
        }
        let mut matches = Vec::new();
        for (path, values) in &sm.matches {
            match parse_src(path) {
                Ok(src) => matches.push((src, values.clone())),
                Err(e) => ctx.err(file, &format!("/match/{path}"), e),
            }
        }
        let mut patched: HashMap<MapId, MapPlan> = HashMap::new();
        for (k, p) in sm.patch.iter().enumerate() {
            let ptr = format!("/patch/{k}");
            let Some(&id) = ctx.map_ids.get(&p.map) else {
                ctx.err_missing_map(
                    file,
                    &format!("{ptr}/map"),
                    &p.map,
                    format!("no segment or datatype map named {}", p.map),
                );
                continue;
            };
            let is_segment = map_defs[id].2;
            let left = split_map_name(&p.map).map(|(l, _)| l).unwrap_or("");
            let seg_ctx = if is_segment { Some(left) } else { None };
            let mut base = patched.remove(&id).unwrap_or_else(|| maps[id].clone());
            // A map that did not compile cleanly may lack rules: its own errors say why.
            let base_quiet = ctx.quiet_maps.contains(&p.map);
            let fhir_type = base.fhir_type.clone();
            let position =
                |base: &MapPlan, name: &str| base.rules.iter().position(|r| r.name == name);
            if let (Some(name), Some(with)) = (&p.replace, &p.with) {
                match position(&base, name) {
                    Some(i) => {
                        if with.name.is_none() {
                            ctx.err(
                                file,
                                &format!("{ptr}/with"),
                                "the replacement rule needs a name",
                            );
                        }
                        let compiled = compile_rule(
                            &mut ctx,
                            model,
                            file,
                            &format!("{ptr}/with"),
                            with,
                            &fhir_type,
                            seg_ctx,
                            !is_segment,
                            None,
                            None,
                        );
                        if let Some(rp) = compiled {
                            base.rules[i] = rp;
                        }
                    }
                    None => {
                        if !base_quiet {
                            ctx.err(
                                file,
                                &format!("{ptr}/replace"),
                                format!("{} has no rule named '{name}'", p.map),
                            )
                        }
                    }
                }
            } else if let Some(name) = &p.remove {
                match position(&base, name) {
                    Some(i) => {
                        base.rules.remove(i);
                    }
                    None => {
                        if !base_quiet {
                            ctx.err(
                                file,
                                &format!("{ptr}/remove"),
                                format!("{} has no rule named '{name}'", p.map),
                            )
                        }
                    }
                }
            } else if let Some(rules) = &p.rules {
                let new = compile_rules(
                    &mut ctx,
                    model,
                    file,
                    &format!("{ptr}/rules"),
                    rules,
                    &fhir_type,
                    seg_ctx,
                    !is_segment,
                );
                let at = match (&p.add_before, &p.add_after) {
                    (Some(name), _) => position(&base, name).ok_or(("add_before", name)),
                    (None, Some(name)) => position(&base, name)
                        .map(|i| i + 1)
                        .ok_or(("add_after", name)),
                    (None, None) => Ok(base.rules.len()),
                };
                match at {
                    Ok(i) => {
                        for (n, rp) in new.into_iter().enumerate() {
                            base.rules.insert(i + n, rp);
                        }
                    }
                    Err((key, name)) => {
                        if !base_quiet {
                            ctx.err(
                                file,
                                &format!("{ptr}/{key}"),
                                format!("{} has no rule named '{name}'", p.map),
                            )
                        }
                    }
                }
            }
            let mut seen: HashMap<&str, ()> = HashMap::new();
            for r in &base.rules {
                if seen.insert(r.name.as_str(), ()).is_some() {
                    ctx.err(
                        file,
                        &ptr,
                        format!(
                            "after this patch {} has two rules named '{}'",
                            p.map, r.name
                        ),
                    );
                }
            }
            patched.insert(id, base);
        }
        let mut view = maps.clone();
        for (id, m) in &patched {
            view[*id] = m.clone();
        }
        for id in patched.keys() {
            if let Some(path) = find_cycle(&view, *id) {
                let names: Vec<&str> = path.iter().map(|&i| view[i].name.as_str()).collect();
                ctx.err(
                    file,
                    "/patch",
                    format!("the patches create a cycle: {}", names.join(" → ")),
                );
            }
        }
        senders.push(SenderPlan {
            name: sm.name.clone(),
            matches,
            maps: patched,
        });
    }
    // Its name says it builds a MessageHeader, so its targets were checked against one.
    let header = maps.iter().position(|m| m.name == HEADER_MAP);
    let errors = ctx.errors;
    if errors.is_empty() {
        Ok(Plan {
            messages,
            maps,
            vocabs,
            aliases,
            senders,
            header,
        })
    } else {
        Err(errors)
    }
}

/// The segment map the evaluator runs on every message's MSH for the MessageHeader it builds.
pub const HEADER_MAP: &str = "MSH[MessageHeader]";

/// Maps referenced by a rule list (via, resource:, nested rules, switch cases).
fn referenced_maps(rules: &[RulePlan], out: &mut Vec<MapId>) {
    for r in rules {
        match &r.producer {
            Producer::Via(m) => out.push(*m),
            Producer::Resource { map, rules, .. } => {
                out.push(*map);
                referenced_maps(rules, out);
            }
            Producer::Rules(sub) => referenced_maps(sub, out),
            Producer::Switch { cases, default, .. } => {
                for (_, c) in cases {
                    referenced_maps(std::slice::from_ref(c), out);
                }
                if let Some(d) = default {
                    referenced_maps(std::slice::from_ref(d), out);
                }
            }
            _ => {}
        }
    }
}

/// A cycle through `start`, as the list of maps along it (start … start), if any.
fn find_cycle(maps: &[MapPlan], start: MapId) -> Option<Vec<MapId>> {
    fn dfs(
        maps: &[MapPlan],
        start: MapId,
        at: MapId,
        path: &mut Vec<MapId>,
        seen: &mut Vec<bool>,
    ) -> bool {
        let mut next = Vec::new();
        referenced_maps(&maps[at].rules, &mut next);
        for n in next {
            if n == start {
                path.push(n);
                return true;
            }
            if n < seen.len() && !seen[n] {
                seen[n] = true;
                path.push(n);
                if dfs(maps, start, n, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = vec![false; maps.len()];
    dfs(maps, start, start, &mut path, &mut seen).then_some(path)
}

fn group_exists(g: &crate::v2::structure::Group, name: &str) -> bool {
    use crate::v2::structure::Node;
    &*g.name == name
        || g.children.iter().any(|c| match c {
            Node::Group(sub) => group_exists(sub, name),
            Node::Segment { .. } => false,
        })
}

#[allow(clippy::too_many_arguments)]
fn compile_rules(
    ctx: &mut Ctx<'_>,
    model: Option<&FhirModel>,
    file: &str,
    ptr: &str,
    rules: &[ast::Rule],
    target_type: &str,
    segment: Option<&str>,
    has_value: bool,
) -> Vec<RulePlan> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if r.invalid {
            continue;
        }
        let p = format!("{ptr}/{i}");
        match r.name.as_deref() {
            Some(n) => {
                if let Some(prev) = names.insert(n, i) {
                    ctx.err(
                        file,
                        &format!("{p}/name"),
                        format!("rule name '{n}' is already used by rule #{}", prev + 1),
                    );
                }
            }
            None => ctx.err(file, &p, "every rule needs a name"),
        }
        if let Some(rp) = compile_rule(
            ctx,
            model,
            file,
            &p,
            r,
            target_type,
            segment,
            has_value,
            None,
            None,
        ) {
            out.push(rp);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn compile_rule(
    ctx: &mut Ctx<'_>,
    model: Option<&FhirModel>,
    file: &str,
    ptr: &str,
    r: &ast::Rule,
    target_type: &str,
    segment: Option<&str>,
    has_value: bool,
    inherit_from: Option<&Src>,
    inherit_to: Option<&str>,
) -> Option<RulePlan> {
    let name = r.name.clone().unwrap_or_else(|| "case".into());
    let producers = [
        r.value.is_some(),
        r.via.is_some(),
        r.func.is_some(),
        r.rules.is_some(),
        r.reference.is_some(),
        r.refs.is_some(),
        r.resource.is_some(),
        r.switch.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if producers > 1 {
        ctx.err(
            file,
            ptr,
            "a rule takes at most one of value, via, fn, rules, ref, refs, resource, switch",
        );
        return None;
    }
    let from = match &r.from {
        Some(f) => match parse_src(f) {
            Ok(s) => {
                check_src(ctx, file, &format!("{ptr}/from"), &s, segment, has_value);
                Some(s)
            }
            Err(e) => {
                ctx.err(file, &format!("{ptr}/from"), e);
                return None;
            }
        },
        None => inherit_from.cloned(),
    };
    let to_text = r.to.as_deref().or(inherit_to);
    let to = match to_text {
        Some(t) => match parse_target(t) {
            Ok(s) => s,
            Err(e) => {
                ctx.err(file, &format!("{ptr}/to"), e);
                return None;
            }
        },
        None if r.switch.is_some() => vec![],
        None => {
            ctx.err(file, ptr, "rule has no 'to'");
            return None;
        }
    };
    // Resolve the FHIR type of the target element.
    let mut elem_ty: Option<String> = None;
    if let Some(model) = model
        && !to.is_empty()
    {
        let mut ty = target_type.to_string();
        for (k, st) in to.iter().enumerate() {
            if st.mode == Mode::Choice {
                let c = model.choices(&ty, &st.key);
                if c.is_empty() {
                    ctx.err(
                        file,
                        &format!("{ptr}/to"),
                        format!("{ty} has no choice element {}[x]", st.key),
                    );
                    return None;
                }
                elem_ty = Some("*".into());
                break;
            }
            match model.element(&ty, &st.key) {
                None => {
                    ctx.err(
                        file,
                        &format!("{ptr}/to"),
                        format!("{ty} has no element '{}'", st.key),
                    );
                    return None;
                }
                Some(info) => {
                    if info.array && st.mode == Mode::Plain {
                        ctx.err(
                            file,
                            &format!("{ptr}/to"),
                            format!(
                                "{ty}.{} is a list: write {}[+] (append) or {}[=] (last)",
                                st.key, st.key, st.key
                            ),
                        );
                    }
                    if !info.array && matches!(st.mode, Mode::Append | Mode::Last | Mode::Index(_))
                    {
                        ctx.err(
                            file,
                            &format!("{ptr}/to"),
                            format!("{ty}.{} is not a list; drop the [..]", st.key),
                        );
                    }
                    ty = info.ty;
                    if k == to.len() - 1 {
                        elem_ty = Some(ty.clone());
                    }
                }
            }
        }
    }
    // Inside this rule (its `when`, nested rules), relative paths address the selected field value.
    let item_value = has_value
        || matches!(
            from,
            Some(Src::Field { .. }) | Some(Src::Alt(_)) | Some(Src::InGroup(..))
        );
    let when = match &r.when {
        Some(w) => match parse_cond(w, &ctx.vocab_ids) {
            Ok(c) => {
                let mut ps = vec![];
                cond_paths(&c, &mut ps);
                for s in ps {
                    check_src(ctx, file, &format!("{ptr}/when"), s, segment, item_value);
                }
                Some(c)
            }
            Err(e) => {
                ctx.err(file, &format!("{ptr}/when"), e);
                return None;
            }
        },
        None => None,
    };
    let vocab = match &r.vocab {
        Some(v) => {
            let (n, field) = match v.split_once('.') {
                Some((n, "display")) => (n, VocabField::Display),
                Some((n, "system")) => (n, VocabField::System),
                Some((n, _)) => (n, VocabField::Code),
                None => (v.as_str(), VocabField::Code),
            };
            match ctx.vocab_ids.get(n) {
                Some(&id) => Some((id, field)),
                None => {
                    ctx.err(
                        file,
                        &format!("{ptr}/vocab"),
                        format!("no vocabulary named {n} (mappings/vocab/{n}.csv)"),
                    );
                    None
                }
            }
        }
        None => None,
    };
    let expect_ty = |ctx: &mut Ctx<'_>, want: &str, what: &str| {
        if let Some(t) = &elem_ty
            && t != "*"
            && t != want
        {
            ctx.err(
                file,
                &format!("{ptr}/to"),
                format!("{what} produces {want}, but the target element is {t}"),
            );
        }
    };
    let producer = if let Some(v) = &r.value {
        Producer::Const(v.clone())
    } else if let Some(via) = &r.via {
        match ctx.map_ids.get(via) {
            Some(&id) => {
                let (_, fty) = split_map_name(via).unwrap_or(("", ""));
                expect_ty(ctx, fty, &format!("via {via}"));
                Producer::Via(id)
            }
            None => {
                ctx.err_missing_map(
                    file,
                    &format!("{ptr}/via"),
                    via,
                    format!("no datatype map named {via}"),
                );
                return None;
            }
        }
    } else if let Some(f) = &r.func {
        let func = Func::from_name(f)?;
        if let Some(t) = &elem_ty {
            let object_fn = matches!(
                func,
                Func::Sn | Func::Attachment | Func::TextAttachment | Func::Narrative
            );
            if t != "*" && !object_fn && !is_primitive(t) {
                ctx.err(
                    file,
                    &format!("{ptr}/to"),
                    format!("fn {f} produces a primitive, but the target element is {t}"),
                );
            }
        }
        Producer::Fn(func)
    } else if let Some(sub) = &r.rules {
        let t = elem_ty
            .clone()
            .or_else(|| model.is_none().then(String::new))?;
        Producer::Rules(compile_rules(
            ctx,
            model,
            file,
            &format!("{ptr}/rules"),
            sub,
            &t,
            segment,
            item_value,
        ))
    } else if let Some(a) = &r.reference {
        expect_ty(ctx, "Reference", "ref");
        match ctx.alias_ids.get(a) {
            Some(&id) => Producer::Ref(id),
            None => {
                ctx.err(
                    file,
                    &format!("{ptr}/ref"),
                    format!("no message map declares a resource 'as: {a}'"),
                );
                return None;
            }
        }
    } else if let Some(a) = &r.refs {
        expect_ty(ctx, "Reference", "refs");
        match ctx.alias_ids.get(a) {
            Some(&id) => Producer::Refs(id),
            None => {
                ctx.err(
                    file,
                    &format!("{ptr}/refs"),
                    format!("no message map declares a resource 'as: {a}'"),
                );
                return None;
            }
        }
    } else if let Some(res) = &r.resource {
        expect_ty(ctx, "Reference", "resource");
        let map = match ctx.map_ids.get(&res.map) {
            Some(&id) => id,
            None => {
                ctx.err_missing_map(
                    file,
                    &format!("{ptr}/resource/map"),
                    &res.map,
                    format!("no datatype map named {}", res.map),
                );
                return None;
            }
        };
        if split_map_name(&res.map).map(|(_, t)| t) != Some(res.rtype.as_str()) {
            ctx.err(
                file,
                &format!("{ptr}/resource/map"),
                format!("{} does not build {}", res.map, res.rtype),
            );
        }
        let mut key = vec![];
        for (k, p) in res.key.iter().enumerate() {
            match parse_src(p) {
                Ok(s) => key.push(s),
                Err(e) => ctx.err(file, &format!("{ptr}/resource/key/{k}"), e),
            }
        }
        let rules = compile_rules(
            ctx,
            model,
            file,
            &format!("{ptr}/resource/rules"),
            &res.rules,
            &res.rtype,
            segment,
            item_value,
        );
        Producer::Resource {
            rtype: res.rtype.clone(),
            map,
            key,
            rules,
        }
    } else if let Some(sw) = &r.switch {
        let on = match parse_src(sw) {
            Ok(s) => s,
            Err(e) => {
                ctx.err(file, &format!("{ptr}/switch"), e);
                return None;
            }
        };
        check_src(
            ctx,
            file,
            &format!("{ptr}/switch"),
            &on,
            segment,
            item_value,
        );
        let mut cases = vec![];
        let mut default = None;
        for (k, c) in r.cases.iter().flatten().enumerate() {
            let cp = format!("{ptr}/cases/{k}");
            let Some(plan) = compile_rule(
                ctx,
                model,
                file,
                &cp,
                c,
                target_type,
                segment,
                has_value,
                from.as_ref(),
                to_text,
            ) else {
                continue;
            };
            let mut plan = plan;
            plan.required |= r.required;
            if c.name.is_none() {
                plan.name = name.clone();
            }
            match &c.is {
                Some(values) => cases.push((values.clone(), plan)),
                None if default.is_none() => default = Some(Box::new(plan)),
                None => ctx.err(file, &cp, "only one case may omit 'is' (the default)"),
            }
        }
        if cases.is_empty() && default.is_none() {
            ctx.err(file, ptr, "a switch needs cases");
        }
        Producer::Switch { on, cases, default }
    } else {
        if from.is_none() {
            ctx.err(
                file,
                ptr,
                "a rule needs 'from' or one of value, via, fn, rules, ref, refs, resource, switch",
            );
            return None;
        }
        if let Some(t) = &elem_ty
            && t != "*"
            && !is_primitive(t)
        {
            ctx.err(
                file,
                &format!("{ptr}/to"),
                format!("copying text into {t} needs 'via' a datatype map or 'rules'"),
            );
        }
        Producer::Text
    };
    let group_by = match &r.group_by {
        None => None,
        Some(g) => {
            if !matches!(producer, Producer::Rules(_)) || !from.as_ref().is_some_and(Src::iterates)
            {
                ctx.err(
                    file,
                    &format!("{ptr}/group_by"),
                    "group_by needs `rules` and a `from` that selects several items ([*])",
                );
            }
            match parse_src(g) {
                Ok(src) => {
                    check_src(
                        ctx,
                        file,
                        &format!("{ptr}/group_by"),
                        &src,
                        segment,
                        item_value,
                    );
                    Some(src)
                }
                Err(e) => {
                    ctx.err(file, &format!("{ptr}/group_by"), e);
                    None
                }
            }
        }
    };
    if r.join.is_some() {
        let text_producer = match &producer {
            Producer::Text => true,
            Producer::Fn(f) => super::functions::joinable(*f),
            _ => false,
        };
        if !text_producer || vocab.is_some() || group_by.is_some() {
            ctx.err(
                file,
                &format!("{ptr}/join"),
                "join takes the decoded texts: no producer but `fn: text`, `upper`, `lower` or `text_attachment`, and no vocab or group_by",
            );
        }
        if !from.as_ref().is_some_and(Src::iterates) {
            ctx.err(
                file,
                &format!("{ptr}/join"),
                "join needs a `from` that selects several items ([*])",
            );
        }
    }
    if r.rejected.is_some() && r.when.is_none() {
        ctx.err(
            file,
            &format!("{ptr}/rejected"),
            "`rejected` says what a value the condition rejects counts as: it needs a `when`",
        );
    }
    let consumes = compile_consumes(
        ctx,
        file,
        ptr,
        r,
        from.as_ref(),
        (segment, item_value),
        has_value,
    );
    let with = compile_with(ctx, file, ptr, r, &producer, segment, item_value);
    let origin = ctx.origin(file, ptr);
    Some(RulePlan {
        name,
        from,
        to,
        when,
        producer,
        vocab,
        default: r.default.clone(),
        required: r.required,
        rejected_consumed: r.rejected.as_deref() == Some("consumed"),
        consumes,
        with,
        group_by,
        join: r.join.clone(),
        origin,
    })
}

/// The `with` paths of rule `r`: the further inputs of its function, which must take them
/// (`end_after`, `start_before`: one CQ, or a number and its unit); such a function needs them.
fn compile_with(
    ctx: &mut Ctx<'_>,
    file: &str,
    ptr: &str,
    r: &ast::Rule,
    producer: &Producer,
    segment: Option<&str>,
    item_value: bool,
) -> Vec<Src> {
    let takes = matches!(producer, Producer::Fn(f) if f.takes_with());
    if !r.with.is_empty() && !takes {
        ctx.err(
            file,
            &format!("{ptr}/with"),
            "`with` gives a function further inputs: it needs `fn: end_after` or `fn: start_before`",
        );
        return Vec::new();
    }
    if takes && !(1..=2).contains(&r.with.len()) {
        let f = r.func.as_deref().unwrap_or("");
        ctx.err(
            file,
            &format!("{ptr}/fn"),
            format!("fn {f} needs `with`: the duration (a CQ), or its number and its unit"),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (k, text) in r.with.iter().enumerate() {
        let p = format!("{ptr}/with/{k}");
        match parse_src(text) {
            Ok(src) => {
                check_src(ctx, file, &p, &src, segment, item_value);
                out.push(src);
            }
            Err(e) => ctx.err(file, &p, e),
        }
    }
    out
}

/// The `consumes` paths of rule `r`: fields (`SEG-n`, or `SEG[*]-n` of the segment a
/// `SEG[*]-f` `from` reads), since they are read in the occurrence of each accepted item.
fn compile_consumes(
    ctx: &mut Ctx<'_>,
    file: &str,
    ptr: &str,
    r: &ast::Rule,
    from: Option<&Src>,
    (segment, item_value): (Option<&str>, bool),
    in_value: bool,
) -> Vec<Src> {
    let mut out = Vec::new();
    if !r.consumes.is_empty() && from.is_none() {
        ctx.err(
            file,
            &format!("{ptr}/consumes"),
            "`consumes` names fields consumed with the items `from` selects: it needs a `from`",
        );
        return out;
    }
    let from_seg = match from {
        Some(Src::Field {
            seg, seg_all: true, ..
        }) => Some(*seg),
        _ => None,
    };
    for (k, text) in r.consumes.iter().enumerate() {
        let p = format!("{ptr}/consumes/{k}");
        let src = match parse_src(text) {
            Ok(s) => s,
            Err(e) => {
                ctx.err(file, &p, e);
                continue;
            }
        };
        let fits = match (&src, from_seg) {
            (Src::Field { seg, seg_all, .. }, Some(fs)) => *seg_all && *seg == fs,
            (Src::Field { seg_all, .. }, None) => !*seg_all,
            // Where rules read a value (a datatype map, the rules of a building rule): a
            // component of that value (the `.3` type of the `.2` id a rule converts), accounted
            // for with it.
            (Src::Rel(parts), None) => in_value && !parts.is_empty(),
            _ => false,
        };
        if !fits {
            let want = match from_seg {
                Some(fs) => format!(
                    "a field of every {0} that `from` reads ({0}[*]-n)",
                    String::from_utf8_lossy(&fs)
                ),
                None if in_value => {
                    "a field path (SEG-n) or a component of the value (.n)".to_string()
                }
                None => "a field path (SEG-n)".to_string(),
            };
            ctx.err(file, &p, format!("'{text}': `consumes` takes {want}"));
            continue;
        }
        check_src(ctx, file, &p, &src, segment, item_value);
        out.push(src);
    }
    out
}

fn check_src(
    ctx: &mut Ctx<'_>,
    file: &str,
    ptr: &str,
    s: &Src,
    segment: Option<&str>,
    has_value: bool,
) {
    fn groups<'s>(s: &'s Src, out: &mut Vec<&'s str>) {
        match s {
            Src::InGroup(g, x) => {
                out.push(g);
                groups(x, out);
            }
            Src::Alt(a) => a.iter().for_each(|x| groups(x, out)),
            _ => {}
        }
    }
    let mut named = vec![];
    groups(s, &mut named);
    for g in named {
        if !Structures::builtin().has_group(g) {
            ctx.err(
                file,
                ptr,
                format!("no message structure has a group named {g}"),
            );
        }
    }
    let mut fields = vec![];
    src_fields(s, &mut fields);
    for (seg, field) in fields {
        let id = String::from_utf8_lossy(&seg).into_owned();
        if segment.is_none() && id != "MSH" {
            // Datatype maps address relative paths; segment paths there would bypass the value.
            ctx.err(
                file,
                ptr,
                format!("datatype maps use relative paths (.1); {id}-{field} is a segment path"),
            );
            continue;
        }
        if let Some((_, max)) = SEGMENT_FIELDS.iter().find(|(s, _)| *s == id)
            && field > *max
        {
            ctx.err(
                file,
                ptr,
                format!("{id} has {max} fields; {id}-{field} does not exist"),
            );
        }
    }
    let mut rel = false;
    fn any_rel(s: &Src, out: &mut bool) {
        match s {
            Src::Rel(_) => *out = true,
            Src::Alt(a) => a.iter().for_each(|x| any_rel(x, out)),
            _ => {}
        }
    }
    any_rel(s, &mut rel);
    if rel && !has_value {
        ctx.err(file, ptr, "a relative path (.1) needs a value: use it in a datatype map, or in rules nested under a rule whose 'from' selects a field");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_paths() {
        let ok = [
            (
                "PID-3",
                Src::Field {
                    seg: *b"PID",
                    seg_all: false,
                    field: 3,
                    rep: Rep::First,
                    comp: None,
                    sub: None,
                },
            ),
            (
                "PID-3[*].4.1",
                Src::Field {
                    seg: *b"PID",
                    seg_all: false,
                    field: 3,
                    rep: Rep::All,
                    comp: Some(4),
                    sub: Some(1),
                },
            ),
            (
                "OBX-5[2]",
                Src::Field {
                    seg: *b"OBX",
                    seg_all: false,
                    field: 5,
                    rep: Rep::Nth(2),
                    comp: None,
                    sub: None,
                },
            ),
            (
                "NTE[*]-3",
                Src::Field {
                    seg: *b"NTE",
                    seg_all: true,
                    field: 3,
                    rep: Rep::First,
                    comp: None,
                    sub: None,
                },
            ),
            (
                "OBX[*]",
                Src::Seg {
                    seg: *b"OBX",
                    which: SegScope::All,
                },
            ),
            (
                "PRT[.]",
                Src::Seg {
                    seg: *b"PRT",
                    which: SegScope::Direct,
                },
            ),
            (
                "NTE[**]",
                Src::Seg {
                    seg: *b"NTE",
                    which: SegScope::Deep,
                },
            ),
            (
                "MRG",
                Src::Seg {
                    seg: *b"MRG",
                    which: SegScope::First,
                },
            ),
            (".", Src::Rel(vec![])),
            (".4.2", Src::Rel(vec![4, 2])),
        ];
        for (s, want) in ok {
            assert_eq!(parse_src(s), Ok(want), "{s}");
        }
        assert!(matches!(parse_src("PID-5.1 | PID-5.2"), Ok(Src::Alt(v)) if v.len() == 2));
        assert!(matches!(
            parse_src("TIMING_ENCODED/TQ1-7"),
            Ok(Src::InGroup(g, f)) if &*g == "TIMING_ENCODED" && matches!(*f, Src::Field { field: 7, .. })
        ));
        assert_eq!(
            parse_src("TIMING/TQ1-3.1 | TQ1-3.1").map(|s| s.to_string()),
            Ok("TIMING/TQ1-3.1 | TQ1-3.1".to_string())
        );
        for bad in [
            "timing/TQ1-7",
            "/TQ1-7",
            "TIMING/TQ1",
            "TIMING/.1",
            "TIMING/TQ1[*]",
        ] {
            assert!(parse_src(bad).is_err(), "{bad}");
        }
        for bad in [
            "PI",
            "PRT[.]-5",
            "NTE[**]-3",
            "pid-3",
            "PID-",
            "PID[2]-3",
            "PID-0",
            "PID-3[0]",
            "PID-3.0",
            "PID-3.1.2.3",
            ".0",
            "PID-3x",
            ".1.2.3",
        ] {
            assert!(parse_src(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_paths() {
        let t = parse_target("identifier[+].type.coding[=].code").expect("parse");
        assert_eq!(t.len(), 4);
        assert_eq!(t[0].mode, Mode::Append);
        assert_eq!(t[2].mode, Mode::Last);
        assert_eq!(parse_target("value[x]").expect("x")[0].mode, Mode::Choice);
        assert!(parse_target("a[?]").is_err());
        assert!(parse_target("a..b").is_err());
    }
}
