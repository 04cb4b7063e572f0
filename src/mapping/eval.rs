//! Evaluation: a compiled [`Plan`] applied to a parsed message → FHIR resources, a Bundle, and a
//! loss report. Two phases: first every resource instance is located and given its deterministic
//! id (so references can point forward), then each is built by its segment map.

use super::functions::{self, Produced};
use super::plan::*;
use crate::fhir::{ids, validate};
use crate::v2::structure::{GroupInstance, GroupItem, Grouping};
use crate::v2::{Level, Message, Severity, Structures, Value as V2};
use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::{Map, Value, json};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Segment indexes a path selects (rarely more than a few: no allocation for those).
type Segs = SmallVec<[usize; 4]>;
/// Values a path selects.
type Vals<'a> = SmallVec<[V2<'a>; 2]>;

/// Bundle types we can emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleType {
    /// PUT by id (default).
    Transaction,
    /// PUT by id, independent entries.
    Batch,
    /// No requests.
    Collection,
    /// MessageHeader first, no requests.
    Message,
}

impl BundleType {
    /// Parse `transaction|batch|collection|message`.
    pub fn from_name(s: &str) -> Option<BundleType> {
        Some(match s {
            "transaction" => BundleType::Transaction,
            "batch" => BundleType::Batch,
            "collection" => BundleType::Collection,
            "message" => BundleType::Message,
            _ => return None,
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            BundleType::Transaction => "transaction",
            BundleType::Batch => "batch",
            BundleType::Collection => "collection",
            BundleType::Message => "message",
        }
    }
}

/// Conversion settings.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Bundle type.
    pub bundle_type: BundleType,
    /// Zone for date-times without an offset.
    pub default_zone: TimeZone,
    /// Validate every resource against R4 before it leaves (default on).
    pub validate: bool,
    /// Record which rule wrote each element ([`Conversion::trace`]; default off: it costs a
    /// string per element).
    pub trace: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            bundle_type: BundleType::Transaction,
            default_zone: TimeZone::UTC,
            validate: true,
            trace: false,
        }
    }
}

/// One element of the output and the rule that wrote it (`v2fhir convert --trace`): what an
/// analyst patching a map needs to find the rule behind a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceRow {
    /// The resource: `Patient/<id>` (`MessageHeader/<id>` for the header's mapped elements).
    pub resource: String,
    /// Where in the resource, FHIRPath-like: `name[0].family`.
    pub path: String,
    /// What the rules read, outermost first: `PID-5[*] (segment #3) → .1`.
    pub source: String,
    /// The rule that wrote the element: `family (mappings/datatypes/XPN-HumanName.yaml:6:5)`.
    pub rule: String,
}

/// Trace rows being collected: one frame per object under construction, its rows' paths
/// relative to that object until its parent writes it.
#[derive(Default)]
struct Tracer {
    frames: Vec<Vec<(String, String, String)>>,
    /// The rows of the object `build_object` just returned, for the write that places it.
    pending: Option<Vec<(String, String, String)>>,
    /// What the enclosing building rules read, outermost first.
    sources: Vec<String>,
    rows: Vec<TraceRow>,
}

/// One finding of a conversion, reported as an OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// `information`, `warning`, `error`.
    pub severity: Severity,
    /// FHIR issue type (`informational`, `not-supported`, `value`, `required`, `invalid`, `processing`).
    pub code: &'static str,
    /// What happened (never a field value).
    pub text: String,
    /// Where: a v2 location (`PID-9`) or a FHIR path (`Patient/…/gender`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// The result of converting one message.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The Bundle (present unless no message map applies).
    pub bundle: Option<Value>,
    /// Alias of every resource built from the message map, with its index in `bundle.entry`.
    pub by_alias: Vec<(String, usize)>,
    /// Findings, including the loss report.
    pub issues: Vec<Issue>,
    /// The message map used.
    pub map: Option<String>,
    /// Findings of grouping the message by its structure (for the ACK's ERR segments, with
    /// locations), so callers need not group it again.
    pub structure: Vec<crate::v2::Diagnostic>,
    /// What the loss report lists, as addresses: a whole segment (`EVN`) or a field (`PID-33`),
    /// once per occurrence (for summaries over many messages).
    pub unmapped: Vec<String>,
    /// Codes a vocabulary had no entry for, as `Vocabulary 'code'` (the code cut at 40
    /// characters), once per occurrence: what a sender's vocabulary files still lack.
    pub untranslated: Vec<String>,
    /// With `ConvertOptions::trace`: every element of the emitted resources that a rule wrote,
    /// with that rule and what it read. Empty otherwise.
    pub trace: Vec<TraceRow>,
}

impl Conversion {
    /// The conversion's errors as v2 diagnostics for the ACK's ERR segments: an unsupported
    /// message (no map) is HL7 table 0357 code 200, any other error code 207. Structure findings
    /// are left out (grouping reports them already).
    pub fn ack_diagnostics(&self) -> Vec<crate::v2::Diagnostic> {
        use crate::v2::{Code, Diagnostic, Location};
        self.issues
            .iter()
            .filter(|i| i.severity == Severity::Error && i.code != "structure")
            .map(|issue| {
                let code = if issue.code == "not-supported" {
                    Code::UnknownStructure
                } else {
                    Code::Conversion
                };
                let text = match &issue.location {
                    Some(l) => format!("{} [{l}]", issue.text),
                    None => issue.text.clone(),
                };
                Diagnostic::new(Severity::Error, code, Location::default(), text)
            })
            .collect()
    }

    /// The resources built for `alias`, in order.
    pub fn resources_of(&self, alias: &str) -> Vec<&Value> {
        let Some(entries) = self
            .bundle
            .as_ref()
            .and_then(|b| b.get("entry"))
            .and_then(Value::as_array)
        else {
            return vec![];
        };
        self.by_alias
            .iter()
            .filter(|(a, _)| a == alias)
            .filter_map(|(_, i)| entries.get(*i).and_then(|e| e.get("resource")))
            .collect()
    }

    /// True when any error-severity issue was recorded (the message should be acknowledged AE).
    pub fn failed(&self) -> bool {
        self.bundle.is_none() || self.issues.iter().any(|i| i.severity == Severity::Error)
    }

    /// The issues as an OperationOutcome.
    pub fn outcome(&self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![
                json!({"severity": "information", "code": "informational", "diagnostics": "converted without findings"}),
            ]
        } else {
            self.issues
                .iter()
                .map(|i| {
                    let sev = match i.severity {
                        Severity::Info => "information",
                        Severity::Warning => "warning",
                        Severity::Error => "error",
                    };
                    let mut o = json!({"severity": sev, "code": i.code, "diagnostics": i.text});
                    if let Some(l) = &i.location {
                        o["expression"] = json!([l]);
                    }
                    o
                })
                .collect()
        };
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

/// A located resource instance (phase 1).
struct Inst<'g> {
    plan: usize,
    alias: AliasId,
    rtype: String,
    seg: usize,
    chain: Rc<[&'g GroupInstance]>,
    scope: Vec<usize>,
    id: String,
}

/// Counters that number records within a message, like Set IDs, and are not data: RXA-1 and
/// RXA-2 (give and administration sub-ID counters, `0` and `1` in every immunization message).
const COUNTERS: &[(&str, usize)] = &[("RXA", 1), ("RXA", 2)];

/// Is field `n` of segment `seg` a counter (a Set ID or one of [`COUNTERS`]), never reported lost?
fn is_counter(seg: &str, n: usize) -> bool {
    (n == 1 && SET_ID_FIRST.contains(&seg)) || COUNTERS.iter().any(|&(s, f)| s == seg && f == n)
}

/// Segments whose field 1 is a Set ID (HL7 v2.5.1–2.9): a counter within the message, not data.
const SET_ID_FIRST: &[&str] = &[
    "AFF", "AIG", "AIL", "AIP", "AIS", "AL1", "ARV", "CER", "CON", "DB1", "DG1", "EDU", "FT1",
    "GT1", "IAM", "IN1", "IN3", "LAN", "NK1", "NTE", "OBR", "OBX", "ORG", "PID", "PR1", "PV1",
    "RGS", "SPM", "TQ1", "TQ2", "TXA", "UB1", "UB2",
];

struct Ev<'p, 'm, 'a, 'g> {
    plan: &'p Plan,
    msg: &'m Message<'a>,
    opts: &'p ConvertOptions,
    insts: Vec<Inst<'g>>,
    /// Index into `insts` by id (ids are UUIDv5 over the type, so one map serves every type).
    inst_ids: HashMap<String, usize>,
    /// Per segment and field: the repetitions a rule consumed, a bit each (see [`rep_bits`]).
    consumed: Vec<Vec<u32>>,
    /// (segment, the earlier identical segment it repeats): one resource for both, and the
    /// repeat counts as consumed wherever the first is.
    repeats: Vec<(usize, usize)>,
    /// The loss report's addresses (see [`Conversion::unmapped`]).
    unmapped: Vec<String>,
    /// Codes no vocabulary entry translated (see [`Conversion::untranslated`]).
    untranslated: Vec<String>,
    issues: Vec<Issue>,
    extra: Vec<Value>,
    /// Index into `extra` by `Type/id`.
    extra_ids: HashMap<String, usize>,
    sender: String,
    /// Segment map of each resource definition of the routed message map.
    res_maps: Vec<MapId>,
    /// The sender overlay that applies to this message, if any.
    overlay: Option<&'p SenderPlan>,
    /// `ConvertOptions::trace`: which rule wrote what.
    trace: Option<Tracer>,
    /// The message's bytes that some rule turned into an output value (a bit per byte of
    /// `Message::input`): the loss report names the valued components and subcomponents of a
    /// mapped field that no rule produced anything from (see [`Ev::mark_produced`]).
    produced: Vec<u64>,
    /// While a rule's `when` is evaluated: the byte ranges (start, length) of the values it read,
    /// so that a qualifier inside the value the rule writes from (CX.4.3 saying how to read
    /// CX.4.2) counts as produced when the rule writes.
    cond_reads: Vec<(usize, usize)>,
    /// `cond_reads` is being collected.
    collecting: bool,
    /// The value whose children were last split (`(bytes, length, level)`) and where they end:
    /// the rules of a datatype map read one component after another of the same value, and
    /// each would otherwise scan it from its start.
    split_of: Option<(usize, usize, Level)>,
    split_ends: SmallVec<[u32; 32]>,
    /// Where the codes a vocabulary translated start (byte offsets): the coding-system name
    /// beside such a code (CWE.3 beside CWE.1, CWE.6 beside CWE.4: `HL70002`) is accounted for
    /// by the translation.
    coded: Vec<usize>,
}

#[derive(Clone)]
struct Frame<'g, 'a> {
    seg: Option<usize>,
    chain: Rc<[&'g GroupInstance]>,
    value: Option<V2<'a>>,
    /// Index of the resource instance being built.
    inst: usize,
}

/// One thing a rule's `from` selected.
#[derive(Clone, Copy)]
enum Item<'a> {
    /// No `from`: the rule runs once on the current frame.
    None,
    /// A value (and the segment it came from, for `SEG[*]-f`).
    Value(V2<'a>, Option<usize>),
    /// A segment (`SEG` / `SEG[*]`), which becomes the current segment.
    Segment(usize),
}

/// What running a rule for one item did.
struct Ran {
    /// The rule's condition (if any) accepted the item.
    accepted: bool,
    /// Something was written.
    wrote: bool,
}

/// Record that a condition accepted `item` (once per segment it came from).
fn note_accepted(accepted: &mut SmallVec<[Option<usize>; 2]>, item: Item<'_>) {
    let seg = match item {
        Item::Value(_, seg) => seg,
        Item::Segment(_) | Item::None => None,
    };
    if !accepted.contains(&seg) {
        accepted.push(seg);
    }
}

/// The frame a rule runs in for one selected item, and whether the item is empty (which gates
/// the producer off).
fn item_frame<'g, 'a>(frame: &Frame<'g, 'a>, item: Item<'a>) -> (Frame<'g, 'a>, bool) {
    let mut sub = frame.clone();
    let gated_out = match item {
        Item::Value(v, seg) => {
            sub.value = Some(v);
            if let Some(si) = seg {
                sub.seg = Some(si);
                enter_group_of(&mut sub, si);
            }
            !v.is_valued()
        }
        Item::Segment(si) => {
            sub.seg = Some(si);
            sub.value = None;
            enter_group_of(&mut sub, si);
            false
        }
        Item::None => false,
    };
    (sub, gated_out)
}

/// A segment selected in a subgroup (`IN2[*]` from PID: each INSURANCE's) becomes current with
/// its own group: what the rule then looks up (`IN1-17` of that insurance) is found there first.
fn enter_group_of<'g>(frame: &mut Frame<'g, '_>, seg: usize) {
    fn path<'g>(g: &'g GroupInstance, seg: usize, out: &mut Vec<&'g GroupInstance>) -> bool {
        for item in &g.items {
            if let GroupItem::Group(sub) = item {
                if sub.segments().any(|s| s == seg) {
                    out.push(sub);
                    return true;
                }
                out.push(sub);
                if path(sub, seg, out) {
                    return true;
                }
                out.pop();
            }
        }
        false
    }
    let Some(last) = frame.chain.last() else {
        return;
    };
    if last.segments().any(|s| s == seg) {
        return;
    }
    let mut below = Vec::new();
    if path(last, seg, &mut below) {
        let chain: Vec<&'g GroupInstance> = frame.chain.iter().copied().chain(below).collect();
        frame.chain = chain.into();
    }
}

/// Required element missing: the resource is not emitted.
struct Missing(String);

impl std::fmt::Display for Src {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Src::Seg { seg, which } => write!(
                f,
                "{}{}",
                String::from_utf8_lossy(seg),
                match which {
                    SegScope::First => "",
                    SegScope::All => "[*]",
                    SegScope::Direct => "[.]",
                    SegScope::Deep => "[**]",
                }
            ),
            Src::Field {
                seg,
                seg_all,
                field,
                rep,
                comp,
                sub,
            } => {
                write!(
                    f,
                    "{}{}-{field}",
                    String::from_utf8_lossy(seg),
                    if *seg_all { "[*]" } else { "" }
                )?;
                match rep {
                    Rep::All => write!(f, "[*]")?,
                    Rep::Nth(n) => write!(f, "[{n}]")?,
                    Rep::First => {}
                }
                if let Some(c) = comp {
                    write!(f, ".{c}")?;
                }
                if let Some(s) = sub {
                    write!(f, ".{s}")?;
                }
                Ok(())
            }
            Src::Rel(p) => {
                if p.is_empty() {
                    return write!(f, ".");
                }
                for x in p {
                    write!(f, ".{x}")?;
                }
                Ok(())
            }
            Src::Alt(a) => {
                let parts: Vec<String> = a.iter().map(|x| x.to_string()).collect();
                write!(f, "{}", parts.join(" | "))
            }
            Src::InGroup(g, s) => write!(f, "{g}/{s}"),
        }
    }
}

fn common_prefix(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Route a message to its message map: structure (MSH-9.3 or trigger table) and event.
pub fn route<'p>(
    plan: &'p Plan,
    msg: &Message<'_>,
    grouping: &Grouping,
) -> Option<&'p MessagePlan> {
    let structure = grouping.structure.as_deref()?;
    let event = msg.header().message_type();
    let candidates: Vec<&MessagePlan> = plan
        .messages
        .iter()
        .filter(|m| m.structures.iter().any(|s| s == structure))
        .collect();
    candidates
        .iter()
        .find(|m| m.events.contains(&event))
        .or_else(|| candidates.iter().find(|m| m.events.is_empty()))
        .copied()
}

/// Convert one parsed message.
pub fn convert(plan: &Plan, msg: &Message<'_>, opts: &ConvertOptions) -> Conversion {
    let grouping = Structures::builtin().group(msg);
    let mut issues: Vec<Issue> = msg
        .diagnostics()
        .iter()
        .chain(grouping.diagnostics.iter())
        .filter(|d| d.severity >= Severity::Warning)
        .map(|d| Issue {
            severity: d.severity,
            code: "structure",
            text: d.message.clone(),
            location: Some(d.location.to_string()),
        })
        .collect();
    let Some(mp) = route(plan, msg, &grouping) else {
        let h = msg.header();
        issues.push(Issue {
            severity: Severity::Error,
            code: "not-supported",
            text: format!(
                "no mapping for message type {} (structure {})",
                h.message_type(),
                grouping.structure.as_deref().unwrap_or("unknown")
            ),
            location: Some("MSH-9".into()),
        });
        return Conversion {
            structure: grouping.diagnostics.clone(),
            bundle: None,
            by_alias: vec![],
            issues,
            map: None,
            unmapped: Vec::new(),
            untranslated: Vec::new(),
            trace: Vec::new(),
        };
    };
    let h = msg.header();
    let sender = format!(
        "{}|{}",
        h.sending_application.to_key(),
        h.sending_facility.to_key()
    );
    let mut ev = Ev {
        plan,
        msg,
        opts,
        insts: Vec::new(),
        inst_ids: HashMap::new(),
        consumed: msg
            .segments()
            .map(|s| vec![0; s.field_count() + 1])
            .collect(),
        repeats: Vec::new(),
        unmapped: Vec::new(),
        untranslated: Vec::new(),
        issues,
        extra: Vec::new(),
        extra_ids: HashMap::new(),
        sender,
        res_maps: Vec::new(),
        overlay: None,
        trace: opts.trace.then(Tracer::default),
        produced: vec![0; msg.input.len() / 64 + 1],
        cond_reads: Vec::new(),
        collecting: false,
        split_of: None,
        split_ends: SmallVec::new(),
        coded: Vec::new(),
    };
    ev.overlay = plan.senders.iter().find(|sp| ev.sender_matches(sp));
    if let Some(sp) = ev.overlay {
        ev.issues.push(Issue {
            severity: Severity::Info,
            code: "informational",
            text: format!("sender overlay '{}' applied", sp.name),
            location: Some("MSH-3/MSH-4".into()),
        });
    }
    ev.locate(mp, &grouping.root);
    let mut built: Vec<(usize, Value)> = Vec::new();
    let mut dropped: HashSet<String> = HashSet::new();
    for i in 0..ev.insts.len() {
        match ev.build(i) {
            Ok(v) => built.push((i, v)),
            Err(Missing(what)) => {
                let inst = &ev.insts[i];
                dropped.insert(format!("{}/{}", inst.rtype, inst.id));
                ev.issues.push(Issue {
                    severity: Severity::Error,
                    code: "required",
                    text: format!("{} not emitted: required {what} is missing", inst.rtype),
                    location: Some(ev.seg_label(inst.seg)),
                });
            }
        }
    }
    let header = ev.header_fields(&grouping.root);
    ev.mark_header_fields();
    ev.loss_report();
    // Validation before anything leaves.
    let mut resources: Vec<(Option<usize>, Value)> =
        built.into_iter().map(|(i, v)| (Some(i), v)).collect();
    resources.extend(std::mem::take(&mut ev.extra).into_iter().map(|v| (None, v)));
    // Validate; drop what is invalid; prune references to dropped resources (which can make the
    // referring resource invalid in turn), and repeat until nothing more is dropped.
    let mut pruned_since_check = true;
    while pruned_since_check {
        pruned_since_check = false;
        if opts.validate {
            let issues = &mut ev.issues;
            resources.retain(|(_, r)| {
                let problems = validate::validate(r);
                if problems.is_empty() {
                    return true;
                }
                let rt = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
                let id = r.get("id").and_then(Value::as_str).unwrap_or("");
                dropped.insert(format!("{rt}/{id}"));
                for p in problems {
                    issues.push(Issue {
                        severity: Severity::Error,
                        code: "invalid",
                        text: format!(
                            "{rt} not emitted: not valid R4 at {}: {}",
                            if p.path.is_empty() { "/" } else { &p.path },
                            p.message
                        ),
                        location: Some(format!("{rt}{}", p.path)),
                    });
                }
                false
            });
        }
        if !dropped.is_empty() {
            for (_, r) in resources.iter_mut() {
                pruned_since_check |= prune_refs(r, &dropped);
            }
        }
        // A resource changed by pruning is validated again; stop when pruning changed nothing.
        if !opts.validate {
            break;
        }
    }
    // Entry 0 is the MessageHeader; resources follow in order.
    let by_alias: Vec<(String, usize)> = resources
        .iter()
        .enumerate()
        .filter_map(|(pos, (i, _))| i.map(|i| (plan.aliases[ev.insts[i].alias].clone(), pos + 1)))
        .collect();
    let focus_count = resources.iter().filter(|(i, _)| i.is_some()).count();
    let software = ev.software_entities(&resources);
    let bundle = ev.bundle(
        mp,
        resources.into_iter().map(|(_, v)| v).collect(),
        focus_count,
        header,
        software,
    );
    let trace = ev
        .trace
        .take()
        .map(|t| emitted_rows(t.rows, &bundle))
        .unwrap_or_default();
    Conversion {
        structure: grouping.diagnostics.clone(),
        bundle: Some(bundle),
        by_alias,
        issues: ev.issues,
        map: Some(mp.name.clone()),
        unmapped: ev.unmapped,
        untranslated: ev.untranslated,
        trace,
    }
}

/// The trace rows of the resources the Bundle holds (not of those validation dropped); the
/// header's rows, recorded before its id existed, get the MessageHeader's id.
fn emitted_rows(rows: Vec<TraceRow>, bundle: &Value) -> Vec<TraceRow> {
    let entries = bundle.get("entry").and_then(Value::as_array);
    let names: HashSet<String> = entries
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let r = e.get("resource")?;
            Some(format!(
                "{}/{}",
                r.get("resourceType")?.as_str()?,
                r.get("id")?.as_str()?
            ))
        })
        .collect();
    let header = names
        .iter()
        .find(|n| n.starts_with("MessageHeader/"))
        .cloned();
    rows.into_iter()
        .filter_map(|mut row| {
            if row.resource == "MessageHeader" {
                row.resource = header.clone()?;
            }
            names.contains(&row.resource).then_some(row)
        })
        .collect()
}

/// Every repetition of a field.
const ALL_REPS: u32 = u32::MAX;

/// Call `f(word, mask)` for each 64-bit word of a bit set that bits `start..end` touch, with the
/// mask of those bits in it.
#[inline]
fn for_words(start: usize, end: usize, mut f: impl FnMut(usize, u64)) {
    let mut b = start;
    while b < end {
        let word = b / 64;
        let lo = b % 64;
        let hi = (end - word * 64).min(64);
        let mask = if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        };
        f(word, mask);
        b = (word + 1) * 64;
    }
}

/// The repetitions of a field a path with this selector reads, as bits (repetition n is bit
/// n - 1); one beyond the 32nd counts as all of them (never reported as lost).
fn rep_bits(rep: &Rep) -> u32 {
    match rep {
        Rep::First => 1,
        Rep::Nth(n @ 1..=32) => 1 << (n - 1),
        Rep::Nth(_) | Rep::All => ALL_REPS,
    }
}

/// Remove references to resources that were not emitted. A list element whose own direct child
/// is such a reference (`link[i].other`, `participant[i].individual`) goes as a whole: it existed
/// to carry that reference. Returns whether anything was removed.
fn prune_refs(v: &mut Value, dropped: &HashSet<String>) -> bool {
    let is_dropped_ref = |x: &Value| {
        x.get("reference")
            .and_then(Value::as_str)
            .is_some_and(|r| dropped.contains(r))
    };
    let carries_dropped_ref = |x: &Value| {
        x.as_object()
            .is_some_and(|o| o.values().any(is_dropped_ref))
    };
    let mut changed = false;
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if m.get(&k).is_some_and(is_dropped_ref) {
                    m.remove(&k);
                    changed = true;
                } else if let Some(c) = m.get_mut(&k) {
                    changed |= prune_refs(c, dropped);
                }
            }
            let empty: Vec<String> = m
                .iter()
                .filter(|(_, v)| is_empty_json(v))
                .map(|(k, _)| k.clone())
                .collect();
            for k in empty {
                m.remove(&k);
            }
        }
        Value::Array(a) => {
            let n = a.len();
            a.retain(|x| !is_dropped_ref(x) && !carries_dropped_ref(x));
            changed |= a.len() != n;
            for x in a.iter_mut() {
                changed |= prune_refs(x, dropped);
            }
        }
        _ => {}
    }
    changed
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

impl<'p, 'm, 'a, 'g> Ev<'p, 'm, 'a, 'g> {
    /// A map by id, as patched by the sender overlay when one applies.
    fn map_plan(&self, id: MapId) -> &'p MapPlan {
        let plan: &'p Plan = self.plan;
        match self.overlay.and_then(|o| o.maps.get(&id)) {
            Some(m) => m,
            None => &plan.maps[id],
        }
    }

    /// Does every matcher of `sp` hold for this message? A field path without a component also
    /// matches on its first component (`MSH-3: [LAB]` matches `LAB^1.2.3^ISO`).
    fn sender_matches(&mut self, sp: &SenderPlan) -> bool {
        let frame = Frame {
            seg: Some(0),
            chain: Rc::from(Vec::new()),
            value: None,
            inst: usize::MAX,
        };
        sp.matches.iter().all(|(src, values)| {
            let whole = self.first_text(src, &frame, false);
            let first = match src {
                Src::Field {
                    seg,
                    seg_all,
                    field,
                    rep,
                    comp: None,
                    ..
                } => {
                    let c = Src::Field {
                        seg: *seg,
                        seg_all: *seg_all,
                        field: *field,
                        rep: *rep,
                        comp: Some(1),
                        sub: None,
                    };
                    self.first_text(&c, &frame, false)
                }
                _ => whole.clone(),
            };
            values.iter().any(|v| *v == whole || *v == first)
        })
    }

    /// Where `v` lies in the message: its first byte's offset in `Message::input` and its length
    /// (an offset past the input's end for a value that is not in it).
    #[inline]
    fn span(&self, v: &V2<'a>) -> (usize, usize) {
        let raw = v.raw();
        let start = (raw.as_ptr() as usize).wrapping_sub(self.msg.input.as_ptr() as usize);
        (start, raw.len())
    }

    /// Record that `v`'s bytes became (part of) an output value.
    fn mark_produced(&mut self, v: &V2<'a>) {
        let (start, len) = self.span(v);
        self.mark_range(start, len);
    }

    /// Bytes `start..start + len` as a range within the message; `None` when empty or outside it.
    #[inline]
    fn in_message(&self, start: usize, len: usize) -> Option<(usize, usize)> {
        let n = self.msg.input.len();
        (len > 0 && start < n).then(|| (start, start.saturating_add(len).min(n)))
    }

    /// Record bytes `start..start + len` of the message as produced (ignored outside it).
    fn mark_range(&mut self, start: usize, len: usize) {
        let Some((start, end)) = self.in_message(start, len) else {
            return;
        };
        for_words(start, end, |word, mask| {
            if let Some(w) = self.produced.get_mut(word) {
                *w |= mask;
            }
        });
    }

    /// Did any byte of `v` become part of an output value?
    fn was_produced(&self, v: &V2<'a>) -> bool {
        let (start, len) = self.span(v);
        let Some((start, end)) = self.in_message(start, len) else {
            return false;
        };
        let mut any = false;
        for_words(start, end, |word, mask| {
            any |= self.produced.get(word).is_some_and(|w| w & mask != 0);
        });
        any
    }

    /// The valued leaves (components, or subcomponents where a component has them) of field
    /// repetition `rv` that no rule produced anything from, as `.c` / `.c.s` suffixes, when some
    /// other part of it was produced (a repetition only read by conditions, used as a key or
    /// consumed whole by `consumes` is judged at the field level alone).
    fn unproduced_leaves(&self, rv: &V2<'a>) -> Vec<String> {
        if !self.was_produced(rv) {
            return Vec::new();
        }
        let mut out = Vec::new();
        // The text and coding-system name beside a code a vocabulary translated
        // (`F^Female^HL70001`: the translation has its own display): CWE.2/.3 beside CWE.1,
        // CWE.5/.6 beside CWE.4 (the code comes first, so one pass knows it).
        let mut translated = [false; 2];
        for (c, comp) in rv.children().enumerate() {
            if c == 0 || c == 3 {
                translated[c / 3] = comp.is_valued() && self.coded.contains(&self.span(&comp).0);
            }
            let beside = matches!(c, 1 | 2) && translated[0] || matches!(c, 4 | 5) && translated[1];
            if !comp.is_valued() || beside {
                continue;
            }
            if comp.has_children() {
                for (sidx, sub) in comp.children().enumerate() {
                    if sub.is_valued() && !self.was_produced(&sub) {
                        out.push(format!(".{}.{}", c + 1, sidx + 1));
                    }
                }
            } else if !self.was_produced(&comp) {
                out.push(format!(".{}", c + 1));
            }
        }
        out
    }

    fn seg_label(&self, i: usize) -> String {
        self.msg
            .segment(i)
            .map(|s| format!("{} (segment #{})", s.id(), i + 1))
            .unwrap_or_default()
    }

    /// Phase 1: find every resource instance and compute its id.
    fn locate(&mut self, mp: &MessagePlan, root: &'g GroupInstance) {
        for (pi, rp) in mp.resources.iter().enumerate() {
            // Expand group steps.
            let mut levels: Vec<(Vec<&'g GroupInstance>, Vec<usize>)> = vec![(vec![root], vec![])];
            for step in &rp.groups {
                let mut next = Vec::new();
                for (chain, scope) in &levels {
                    let Some(g) = chain.last() else { continue };
                    for (idx, item) in g.items.iter().enumerate() {
                        if let GroupItem::Group(sub) = item
                            && *sub.name == *step.name
                        {
                            let mut c = chain.clone();
                            c.push(sub);
                            let mut s = scope.clone();
                            s.push(idx);
                            next.push((c, s));
                            if !step.all {
                                break;
                            }
                        }
                    }
                }
                levels = next;
            }
            let mut count = 0;
            for (chain, scope) in levels {
                let Some(g) = chain.last().copied() else {
                    continue;
                };
                let chain: Rc<[&'g GroupInstance]> = chain.into();
                let segs: Vec<usize> = g
                    .items
                    .iter()
                    .filter_map(|it| match it {
                        GroupItem::Segment(s)
                            if self.msg.segment_id(*s) == rp.segment.name.as_bytes() =>
                        {
                            Some(*s)
                        }
                        _ => None,
                    })
                    .collect();
                let segs = if rp.segment.all {
                    segs
                } else {
                    segs.into_iter().take(1).collect()
                };
                for s in segs {
                    let frame = Frame {
                        seg: Some(s),
                        chain: chain.clone(),
                        value: None,
                        inst: usize::MAX,
                    };
                    if let Some(c) = &rp.when
                        && !self.cond(c, &frame)
                    {
                        continue;
                    }
                    let mut keys: Vec<String> = rp
                        .key
                        .iter()
                        .map(|k| match k {
                            IdKey::Path(k) => self.first_text(k, &frame, false).into_owned(),
                            IdKey::Literal(l) => l.clone(),
                        })
                        .collect();
                    let mut scope_str = match rp.scope {
                        IdScope::Sender => self.sender.clone(),
                        IdScope::Message => self.message_scope(),
                        IdScope::Global => String::new(),
                    };
                    if keys.iter().all(String::is_empty) {
                        // No business key: unique within this message, stable on replay.
                        scope_str = self.message_scope();
                        keys = vec![format!("{}#{count}", self.plan.aliases[rp.alias])];
                    }
                    let base = match rp.base.map(|b| self.best_inst(b, &scope, None)) {
                        Some(Some(i)) => self.insts[i].id.clone(),
                        // The base resource is missing (e.g. no OBR for an order's OBX): keys
                        // meant to be unique under it are only unique within this message.
                        Some(None) => {
                            scope_str = self.message_scope();
                            String::new()
                        }
                        None => String::new(),
                    };
                    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    let mut id = ids::resource_id(&rp.rtype, &scope_str, &base, &key_refs);
                    if let Some(first) = self.same_id(&id) {
                        let (a, b) = (self.insts[first].seg, s);
                        if self.insts[first].alias == rp.alias
                            && self.msg.segment(a).map(|x| x.raw())
                                == self.msg.segment(b).map(|x| x.raw())
                        {
                            // The same segment sent twice: one resource, which both scopes reference.
                            self.issues.push(Issue {
                                severity: Severity::Info,
                                code: "duplicate",
                                text: format!(
                                    "{} repeats {} exactly: one {} made for both",
                                    self.seg_label(b),
                                    self.seg_label(a),
                                    rp.rtype
                                ),
                                location: Some(self.seg_label(b)),
                            });
                            self.repeats.push((b, a));
                            count += 1;
                            continue;
                        }
                        // Different segments with the same business key (e.g. two OBX of one
                        // code without a time in one visit): one would overwrite the other, and a transaction may
                        // not hold one id twice. The later one gets the key plus its occurrence,
                        // which is stable on replay.
                        let mut n = 2;
                        while self.same_id(&id).is_some() {
                            let occurrence = format!("#{n}");
                            let mut refs = key_refs.clone();
                            refs.push(&occurrence);
                            id = ids::resource_id(&rp.rtype, &scope_str, &base, &refs);
                            n += 1;
                        }
                        self.issues.push(Issue {
                            severity: Severity::Warning,
                            code: "duplicate",
                            text: format!(
                                "{} has the same {} id keys as {}: kept as a separate {}",
                                self.seg_label(b),
                                self.plan.aliases[rp.alias],
                                self.seg_label(a),
                                rp.rtype
                            ),
                            location: Some(self.seg_label(b)),
                        });
                    }
                    self.inst_ids.insert(id.clone(), self.insts.len());
                    self.insts.push(Inst {
                        plan: pi,
                        alias: rp.alias,
                        rtype: rp.rtype.clone(),
                        seg: s,
                        chain: chain.clone(),
                        scope: scope.clone(),
                        id,
                    });
                    count += 1;
                }
            }
            if count == 0 && !rp.optional {
                self.issues.push(Issue {
                    severity: Severity::Warning,
                    code: "incomplete",
                    text: format!(
                        "no {} segment for resource '{}' ({})",
                        rp.segment.name, self.plan.aliases[rp.alias], rp.rtype
                    ),
                    location: Some(rp.origin.clone()),
                });
            }
        }
        self.res_maps = mp.resources.iter().map(|r| r.map).collect();
    }

    /// Id scope of keys unique within this message only: sender and control id.
    fn message_scope(&self) -> String {
        format!(
            "{}|{}",
            self.sender,
            self.msg.header().control_id.as_deref().unwrap_or("")
        )
    }

    /// An instance already located with this id (ids are UUIDv5 over the type as well).
    fn same_id(&self, id: &str) -> Option<usize> {
        self.inst_ids.get(id).copied()
    }

    /// The instance with `alias` whose scope shares the longest prefix with `scope`.
    /// The instance of `alias` built from segment `seg` if there is one (the Condition of the
    /// DG1 a rule iterates over), else the one whose group scope shares the longest prefix with
    /// `scope`. One pass.
    fn best_inst(&self, alias: AliasId, scope: &[usize], seg: Option<usize>) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, inst) in self.insts.iter().enumerate() {
            if inst.alias != alias {
                continue;
            }
            if seg == Some(inst.seg) {
                return Some(i);
            }
            let l = common_prefix(&inst.scope, scope);
            if best.is_none_or(|(_, bl)| l > bl) {
                best = Some((i, l));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Segments with id `seg` in scope.
    /// - `all` (`SEG[*]`): every occurrence in the current (innermost) group instance — its
    ///   direct segments, or if it has none, those in its subgroups. Never a sibling's.
    /// - first occurrence: the current segment; else, from the innermost group outwards, the
    ///   first group holding one directly (the innermost may also look into its subgroups).
    fn segments_for(&self, seg: &[u8; 3], all: bool, frame: &Frame<'g, 'a>) -> Segs {
        if let Some(cur) = frame.seg
            && !all
            && self.msg.segment_id(cur) == seg
        {
            return smallvec::smallvec![cur];
        }
        if seg == b"MSH" {
            return smallvec::smallvec![0];
        }
        let direct = |g: &GroupInstance| -> Segs {
            g.segments()
                .filter(|&s| self.msg.segment_id(s) == seg)
                .collect()
        };
        for (depth, g) in frame.chain.iter().rev().enumerate() {
            let mut found = direct(g);
            if found.is_empty() && depth == 0 {
                collect_segments(self.msg, g, seg, all, &mut found);
            }
            if all || !found.is_empty() {
                if !all {
                    found.truncate(1);
                }
                return found;
            }
        }
        Segs::new()
    }

    /// The first segment with id `seg` in scope (same rules as `segments_for` without `all`),
    /// without allocating.
    fn segment_first(&self, seg: &[u8; 3], frame: &Frame<'g, 'a>) -> Option<usize> {
        if let Some(cur) = frame.seg
            && self.msg.segment_id(cur) == seg
        {
            return Some(cur);
        }
        if seg == b"MSH" {
            return Some(0);
        }
        for (depth, g) in frame.chain.iter().rev().enumerate() {
            if let Some(s) = g.segments().find(|&s| self.msg.segment_id(s) == seg) {
                return Some(s);
            }
            if depth == 0
                && let Some(s) = find_segment(self.msg, g, seg)
            {
                return Some(s);
            }
        }
        None
    }

    /// The one value a non-iterating path selects (absent when nothing), without allocating.
    fn resolve_one(&mut self, src: &Src, frame: &Frame<'g, 'a>, mark: bool) -> Option<V2<'a>> {
        match src {
            Src::Field {
                seg,
                seg_all: false,
                field,
                rep,
                comp,
                sub,
            } if *rep != Rep::All => {
                let si = self.segment_first(seg, frame)?;
                let segment = self.msg.segment(si)?;
                let f = segment.field(*field);
                if mark
                    && f.is_valued()
                    && let Some(c) = self.consumed.get_mut(si).and_then(|v| v.get_mut(*field))
                {
                    *c |= rep_bits(rep);
                }
                let r = match rep {
                    Rep::Nth(n) => f.rep(*n),
                    _ => f.rep(1),
                };
                Some(match (comp, sub) {
                    (Some(c), Some(s)) => r.component(*c).sub(*s),
                    (Some(c), None) => r.component(*c),
                    _ => r,
                })
            }
            Src::Rel(parts) => Some(self.relative(frame.value?, parts)),
            Src::Alt(alts) if !src.iterates() => {
                for (i, a) in alts.iter().enumerate() {
                    if let Some(v) = self.resolve_one(a, frame, mark)
                        && v.is_valued()
                    {
                        if mark {
                            self.mark_same_alternatives(&alts[i + 1..], frame, &[v]);
                        }
                        return Some(v);
                    }
                }
                None
            }
            Src::InGroup(group, inner) => {
                let f2 = self.group_frame(group, frame)?;
                self.resolve_one(inner, &f2, mark)
            }
            _ => self.resolve(src, frame, mark).into_iter().next(),
        }
    }

    /// The part of `v` a relative path (`.9.1`) names: its first step through [`Ev::child_memo`].
    fn relative(&mut self, v: V2<'a>, parts: &[usize]) -> V2<'a> {
        let Some((&first, rest)) = parts.split_first() else {
            return v;
        };
        rest.iter()
            .fold(self.child_memo(v, first), |v, &p| v.child(p))
    }

    /// Record that the value a vocabulary translated (or its fallback converted) starts at its
    /// span: the code, display and system rules of one coding read the same value, so once
    /// (`coded` is searched per component by the loss report).
    fn note_coded(&mut self, value: &Option<V2<'a>>) {
        if let Some(v) = value {
            let at = self.span(v).0;
            if self.coded.last() != Some(&at) {
                self.coded.push(at);
            }
        }
    }

    /// Child `n` of `v`, through the split of the last value split when `v` is that value.
    fn child_memo(&mut self, v: V2<'a>, n: usize) -> V2<'a> {
        let key = (v.raw().as_ptr() as usize, v.raw().len(), v.level());
        if self.split_of != Some(key) {
            if !v.child_ends(&mut self.split_ends) {
                self.split_of = None;
                return v.child(n);
            }
            self.split_of = Some(key);
        }
        v.child_at(&self.split_ends, n)
    }

    /// The frame for reading inside the first instance of group `name`: the current group or
    /// one anywhere below it; else an enclosing group (innermost first) of that name or one of
    /// its direct subgroups — never a group inside another instance of a repeating group (the
    /// TIMING of another ORDER). No current segment: the path reads that group's segments.
    fn group_frame(&self, name: &str, frame: &Frame<'g, 'a>) -> Option<Frame<'g, 'a>> {
        fn below<'x>(g: &'x GroupInstance, name: &str) -> Option<&'x GroupInstance> {
            if &*g.name == name {
                return Some(g);
            }
            g.items.iter().find_map(|i| match i {
                GroupItem::Group(sub) => below(sub, name),
                GroupItem::Segment(_) => None,
            })
        }
        let direct = |g: &'g GroupInstance| -> Option<&'g GroupInstance> {
            if &*g.name == name {
                return Some(g);
            }
            g.items.iter().find_map(|i| match i {
                GroupItem::Group(sub) if &*sub.name == name => Some(sub),
                _ => None,
            })
        };
        let mut levels = frame.chain.iter().rev();
        let found = levels
            .next()
            .and_then(|g| below(g, name))
            .or_else(|| levels.find_map(|g| direct(g)))?;
        Some(Frame {
            seg: None,
            chain: Rc::from(vec![found]),
            value: frame.value,
            inst: frame.inst,
        })
    }

    /// All values a source path selects (one unless it iterates). `mark` records consumption.
    fn resolve(&mut self, src: &Src, frame: &Frame<'g, 'a>, mark: bool) -> Vals<'a> {
        match src {
            Src::Seg { .. } => Vals::new(),
            Src::Field {
                seg,
                seg_all,
                field,
                rep,
                comp,
                sub,
            } => {
                let mut out = Vals::new();
                for si in self.segments_for(seg, *seg_all, frame) {
                    let Some(segment) = self.msg.segment(si) else {
                        continue;
                    };
                    let f = segment.field(*field);
                    if mark
                        && f.is_valued()
                        && let Some(c) = self.consumed.get_mut(si).and_then(|v| v.get_mut(*field))
                    {
                        *c |= rep_bits(rep);
                    }
                    let pick = |r: V2<'a>| match (comp, sub) {
                        (Some(c), Some(s)) => r.component(*c).sub(*s),
                        (Some(c), None) => r.component(*c),
                        _ => r,
                    };
                    match rep {
                        Rep::First => out.push(pick(f.rep(1))),
                        Rep::Nth(n) => out.push(pick(f.rep(*n))),
                        Rep::All => out.extend(f.children().filter(|r| !r.is_empty()).map(pick)),
                    }
                }
                out
            }
            Src::Rel(parts) => {
                let Some(v) = frame.value else {
                    return Vals::new();
                };
                smallvec::smallvec![self.relative(v, parts)]
            }
            Src::InGroup(group, inner) => match self.group_frame(group, frame) {
                Some(f2) => self.resolve(inner, &f2, mark),
                None => Vals::new(),
            },
            Src::Alt(alts) => {
                for (i, a) in alts.iter().enumerate() {
                    let vals = self.resolve(a, frame, mark);
                    if vals.iter().any(|v| v.is_valued()) {
                        if mark {
                            self.mark_same_alternatives(&alts[i + 1..], frame, &vals);
                        }
                        return vals;
                    }
                }
                Vals::new()
            }
        }
    }

    /// `A | B` took A: B is consumed too when it holds the same value (e.g. ORC-12 and OBR-16
    /// naming the same provider), so the loss report does not list a value the output has.
    fn mark_same_alternatives(&mut self, rest: &[Src], frame: &Frame<'g, 'a>, chosen: &[V2<'a>]) {
        let valued = |vals: &[V2<'a>]| -> Vec<&'a [u8]> {
            vals.iter()
                .filter(|v| v.is_valued())
                .map(|v| v.raw())
                .collect()
        };
        let chosen = valued(chosen);
        for b in rest {
            if valued(&self.resolve(b, frame, false)) == chosen {
                self.resolve(b, frame, true);
            }
        }
    }

    /// The value `src` selects: of an iterating path its first valued one, else the one it names
    /// (which may be empty). Noted as read while a condition is collected.
    fn first_value(&mut self, src: &Src, frame: &Frame<'g, 'a>, mark: bool) -> Option<V2<'a>> {
        let v = if src.iterates() {
            self.resolve(src, frame, mark)
                .into_iter()
                .find(|v| v.is_valued())
        } else {
            self.resolve_one(src, frame, mark)
        };
        if let Some(v) = &v {
            self.note_read(v);
        }
        v
    }

    /// The trimmed decoded text of the first valued value `src` selects; `""` when none.
    fn first_text(&mut self, src: &Src, frame: &Frame<'g, 'a>, mark: bool) -> Cow<'a, str> {
        let v = self.first_value(src, frame, mark);
        match v.filter(|v| v.is_valued()).and_then(|v| v.text()) {
            Some(Cow::Borrowed(t)) => Cow::Borrowed(t.trim()),
            Some(Cow::Owned(t)) if t.trim().len() == t.len() => Cow::Owned(t),
            Some(Cow::Owned(t)) => Cow::Owned(t.trim().to_string()),
            None => Cow::Borrowed(""),
        }
    }

    fn valued(&mut self, src: &Src, frame: &Frame<'g, 'a>) -> bool {
        if src.iterates() {
            let vals = self.resolve(src, frame, false);
            let valued = vals.iter().any(|v| v.is_valued());
            for v in &vals {
                self.note_read(v);
            }
            valued
        } else {
            let v = self.resolve_one(src, frame, false);
            if let Some(v) = &v {
                self.note_read(v);
            }
            v.is_some_and(|v| v.is_valued())
        }
    }

    /// While a condition is evaluated for a rule (`collecting`), remember what it read.
    #[inline]
    fn note_read(&mut self, v: &V2<'a>) {
        if self.collecting {
            let (start, len) = self.span(v);
            if len > 0 {
                self.cond_reads.push((start, len));
            }
        }
    }

    fn cond(&mut self, c: &Cond, frame: &Frame<'g, 'a>) -> bool {
        match c {
            Cond::In(src, values) => {
                let t = self.first_text(src, frame, false);
                values.iter().any(|v| *v == t)
            }
            Cond::Valued(src) => self.valued(src, frame),
            Cond::Matches(src, re) => re.is_match(&self.first_text(src, frame, false)),
            Cond::Converts(src, f) => {
                let v = self.first_value(src, frame, false);
                v.is_some_and(|v| {
                    matches!(
                        functions::apply(*f, &v, &self.opts.default_zone),
                        Ok(Some(_))
                    )
                })
            }
            Cond::InVocab(src, vid) => {
                let t = self.first_text(src, frame, false);
                let code = functions::fhir_string(&t);
                self.plan.vocabs[*vid].entries.contains_key(code.as_ref())
            }
            Cond::NotValued(src) => !self.valued(src, frame),
            Cond::All(cs) => cs.iter().all(|c| self.cond(c, frame)),
            Cond::Any(cs) => cs.iter().any(|c| self.cond(c, frame)),
            Cond::Not(c) => !self.cond(c, frame),
        }
    }

    /// Phase 2: build resource instance `i`.
    fn build(&mut self, i: usize) -> Result<Value, Missing> {
        let inst = &self.insts[i];
        let map = self.res_maps.get(inst.plan).copied().unwrap_or(0);
        let frame = Frame {
            seg: Some(inst.seg),
            chain: inst.chain.clone(),
            value: None,
            inst: i,
        };
        let rules = &self.map_plan(map).rules;
        let mut obj = Map::with_capacity(2 + rules.len().min(24));
        obj.insert("resourceType".into(), Value::String(inst.rtype.clone()));
        obj.insert("id".into(), Value::String(inst.id.clone()));
        if self.trace.is_none() {
            self.run_rules(rules, &frame, &mut obj)?;
            return Ok(Value::Object(obj));
        }
        let name = format!("{}/{}", inst.rtype, inst.id);
        self.trace_open();
        let built = self.run_rules(rules, &frame, &mut obj);
        self.trace_close(&name);
        built?;
        Ok(Value::Object(obj))
    }

    fn run_rules(
        &mut self,
        rules: &'p [RulePlan],
        frame: &Frame<'g, 'a>,
        out: &mut Map<String, Value>,
    ) -> Result<(), Missing> {
        for r in rules {
            self.run_rule(r, frame, out)?;
        }
        Ok(())
    }

    fn run_rule(
        &mut self,
        r: &'p RulePlan,
        frame: &Frame<'g, 'a>,
        out: &mut Map<String, Value>,
    ) -> Result<(), Missing> {
        if let Producer::Switch { on, cases, default } = &r.producer {
            if let Some(c) = &r.when
                && !self.cond(c, frame)
            {
                return Ok(());
            }
            let key = self.first_text(on, frame, true);
            let case = cases
                .iter()
                .find(|(vals, _)| vals.iter().any(|v| *v == key))
                .map(|(_, c)| c)
                .or(default.as_deref());
            return match case {
                Some(c) => self.run_rule(c, frame, out),
                None if r.required => {
                    Err(Missing(format!("{} (no case for this {on} value)", r.name)))
                }
                None => Ok(()),
            };
        }
        // Collect what `from` selects. A rule with a condition consumes what it selects only
        // for the items its condition accepts (marked below): a value every rule passed over
        // stays in the loss report, unless the rule says a rejected value is consumed too
        // (`rejected: consumed`, a deliberate choice such as PID-30 beside PID-29's date).
        // Builders (`via`, `rules`, `resource`) consume only what they built something from.
        let builds = matches!(
            r.producer,
            Producer::Via(_) | Producer::Rules(_) | Producer::Resource { .. }
        );
        let mark = (r.when.is_none() && !builds) || r.rejected_consumed;
        let mut items: SmallVec<[Item<'a>; 2]> = SmallVec::new();
        match &r.from {
            Some(Src::Seg {
                seg,
                which: SegScope::Direct,
            }) => {
                // The current group's own segments only: a PRT following PV1 in ORU_R01's VISIT
                // group, never one of an OBSERVATION subgroup when PV1 sits at the top (ADT).
                if let Some(g) = frame.chain.last() {
                    items.extend(
                        g.segments()
                            .filter(|&s| self.msg.segment_id(s) == seg)
                            .map(Item::Segment),
                    );
                }
            }
            Some(Src::Seg {
                seg,
                which: SegScope::Deep,
            }) => {
                if let Some(g) = frame.chain.last() {
                    let mut found = Segs::new();
                    collect_segments(self.msg, g, seg, true, &mut found);
                    items.extend(found.into_iter().map(Item::Segment));
                }
            }
            Some(Src::Seg { seg, which }) => {
                items.extend(
                    self.segments_for(seg, *which == SegScope::All, frame)
                        .into_iter()
                        .map(Item::Segment),
                );
            }
            Some(
                src @ Src::Field {
                    seg, seg_all: true, ..
                },
            ) => {
                // Every occurrence of the segment: each item is read (and `when` is evaluated)
                // with that occurrence as the current segment.
                let Some(one) = src.in_one_occurrence() else {
                    return Ok(());
                };
                for si in self.segments_for(seg, true, frame) {
                    let mut f2 = frame.clone();
                    f2.seg = Some(si);
                    let vals = if one.iterates() {
                        self.resolve(&one, &f2, mark)
                    } else {
                        self.resolve_one(&one, &f2, mark).into_iter().collect()
                    };
                    if vals.is_empty() && r.join.is_some() {
                        // An empty segment is an empty line of a joined text.
                        items.push(Item::Value(empty_value(), Some(si)));
                    }
                    items.extend(vals.into_iter().map(|v| Item::Value(v, Some(si))));
                }
            }
            Some(src) if src.iterates() => {
                items.extend(
                    self.resolve(src, frame, mark)
                        .into_iter()
                        .map(|v| Item::Value(v, None)),
                );
            }
            Some(src) => {
                let v = self
                    .resolve_one(src, frame, mark)
                    .unwrap_or_else(empty_value);
                if !v.is_valued() && r.default.is_none() && !r.required && r.join.is_none() {
                    // Nothing to produce and no fallback: the common case of a datatype rule
                    // whose component is not sent. (`when` reads without side effects, so not
                    // evaluating it changes nothing.)
                    return Ok(());
                }
                items.push(Item::Value(v, None));
            }
            None => items.push(Item::None),
        }
        let mut wrote = false;
        // Segments (for `SEG[*]-f`; `None`: the rule's own frame) whose items the condition
        // accepted, to be marked consumed now.
        let mut accepted: SmallVec<[Option<usize>; 2]> = SmallVec::new();
        if let Some(sep) = &r.join {
            wrote = self.run_join(r, sep, frame, items, out, &mut accepted);
        } else {
            match (&r.group_by, &r.producer) {
                (Some(key), Producer::Rules(rules)) => {
                    // One object per distinct key, in first-seen order, built by every item of the group.
                    let mut groups: Vec<(String, Vec<Item<'a>>)> = Vec::new();
                    for item in items {
                        let (sub, _) = item_frame(frame, item);
                        if let Some(c) = &r.when
                            && !self.cond(c, &sub)
                        {
                            continue;
                        }
                        let k = self.first_text(key, &sub, false);
                        match groups.iter_mut().find(|(g, _)| *g == k) {
                            Some((_, members)) => members.push(item),
                            None => groups.push((k.into_owned(), vec![item])),
                        }
                    }
                    for (_, members) in groups {
                        let mut obj = Map::new();
                        self.trace_open();
                        self.trace_enter(r, frame);
                        let mut built = Ok(());
                        for &item in &members {
                            let (sub, gated_out) = item_frame(frame, item);
                            if !gated_out && built.is_ok() {
                                built = self.run_rules(rules, &sub, &mut obj);
                            }
                        }
                        if let Some(t) = self.trace.as_mut() {
                            t.pending = t.frames.pop();
                        }
                        self.trace_leave();
                        built?;
                        // A builder consumes the items of the objects it built.
                        if !obj.is_empty() {
                            self.emit(out, r, frame, Value::Object(obj), None, true);
                            wrote = true;
                            for item in members {
                                note_accepted(&mut accepted, item);
                            }
                        }
                    }
                }
                _ => {
                    for item in items {
                        let ran = self.run_item(r, frame, item, out)?;
                        wrote |= ran.wrote;
                        if ran.accepted && (ran.wrote || !builds || r.rejected_consumed) {
                            note_accepted(&mut accepted, item);
                        }
                    }
                }
            }
        }
        if let Some(src) = &r.from {
            if !mark {
                self.mark_accepted(src, frame, &accepted);
            }
            for c in &r.consumes {
                self.mark_accepted(c, frame, &accepted);
                // `consumes: [".9.3"]` in a datatype map: that component is accounted for too.
                if matches!(c, Src::Rel(_)) && !accepted.is_empty() {
                    let vals = self.resolve(c, frame, false);
                    for v in &vals {
                        self.mark_produced(v);
                    }
                }
            }
        }
        if r.required && !wrote {
            return Err(Missing(format!(
                "{} ({})",
                r.name,
                r.from.as_ref().map(|s| s.to_string()).unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// A `join` rule: the decoded texts of the items `when` accepts, joined by `sep`, go through
    /// the rule's function once. True when something was written.
    fn run_join(
        &mut self,
        r: &'p RulePlan,
        sep: &str,
        frame: &Frame<'g, 'a>,
        items: SmallVec<[Item<'a>; 2]>,
        out: &mut Map<String, Value>,
        accepted: &mut SmallVec<[Option<usize>; 2]>,
    ) -> bool {
        // An empty item the condition accepts is an empty line (a blank TX repetition or OBX).
        let mut joined = String::new();
        let mut first = true;
        let mut any = false;
        for item in items {
            let (sub, _) = item_frame(frame, item);
            if let Some(c) = &r.when
                && !self.cond(c, &sub)
            {
                continue;
            }
            note_accepted(accepted, item);
            if !first {
                joined.push_str(sep);
            }
            first = false;
            if let Some(v) = sub.value {
                self.mark_produced(&v);
            }
            if let Some(text) = sub.value.and_then(|v| v.text()) {
                joined.push_str(&text);
                any = true;
            }
        }
        if !any {
            return false;
        }
        let f = match &r.producer {
            Producer::Fn(f) => *f,
            _ => Func::Text,
        };
        let produced = functions::apply_str(f, &joined);
        match self.function_result(r, produced) {
            Some(p) => {
                self.emit(out, r, frame, p.value, p.choice, false);
                true
            }
            None => false,
        }
    }

    /// A function's result; a value it cannot convert is reported (a warning naming the rule)
    /// and not written.
    fn function_result(
        &mut self,
        r: &RulePlan,
        produced: Result<Option<Produced>, String>,
    ) -> Option<Produced> {
        match produced {
            Ok(p) => p,
            Err(why) => {
                self.issues.push(Issue {
                    severity: Severity::Warning,
                    code: "value",
                    text: format!("{why}; value not mapped (rule {})", r.name),
                    location: Some(self.loc_of(r)),
                });
                None
            }
        }
    }

    /// Run a rule for one selected item: whether its condition accepted it, and whether
    /// something was written.
    fn run_item(
        &mut self,
        r: &'p RulePlan,
        frame: &Frame<'g, 'a>,
        item: Item<'a>,
        out: &mut Map<String, Value>,
    ) -> Result<Ran, Missing> {
        let rejected = Ran {
            accepted: false,
            wrote: false,
        };
        if let Item::Value(v, _) = item
            && !v.is_valued()
            && r.default.is_none()
        {
            // An empty value produces nothing unless there is a fallback (and there is nothing
            // to consume); `when` has no side effects, so it need not be evaluated.
            return Ok(rejected);
        }
        let (sub, gated_out) = item_frame(frame, item);
        // Relative paths in `when` address the same base as a relative `from` (the datatype
        // value); when `from` selected a segment field, they address that field's value.
        let relative_from = matches!(&r.from, Some(src) if is_relative(src));
        let cond_frame = if relative_from { frame } else { &sub };
        // What the condition read inside the value it judged (a qualifier such as CX.4.3).
        if let Some(c) = &r.when {
            // Conditions run no rules, so the reads collected here are this condition's alone.
            self.cond_reads.clear();
            self.collecting = true;
            let accepted = self.cond(c, cond_frame);
            self.collecting = false;
            if !accepted {
                return Ok(rejected);
            }
            if let Some(container) = cond_frame.value {
                let (start, len) = self.span(&container);
                let end = start.saturating_add(len);
                for i in 0..self.cond_reads.len() {
                    let (s, l) = self.cond_reads[i];
                    if s >= start && s.saturating_add(l) <= end {
                        self.mark_range(s, l);
                    }
                }
            }
        }
        let written = |wrote| {
            Ok(Ran {
                accepted: true,
                wrote,
            })
        };
        let mut produced = if gated_out {
            None
        } else if self.trace.is_some() {
            self.produce_traced(r, &sub)?
        } else {
            self.produce(r, &sub)?
        };
        if produced.is_none()
            && let Some(d) = &r.default
        {
            produced = Some(Produced {
                value: d.clone(),
                choice: None,
            });
        }
        let Some(p) = produced else {
            return written(false);
        };
        let built = matches!(r.producer, Producer::Via(_) | Producer::Rules(_));
        if let Value::Array(list) = p.value {
            if matches!(r.producer, Producer::Refs(_)) {
                let any = !list.is_empty();
                for v in list {
                    self.emit(out, r, &sub, v, None, false);
                }
                return written(any);
            }
            self.emit(out, r, &sub, Value::Array(list), p.choice, built);
            return written(true);
        }
        self.emit(out, r, &sub, p.value, p.choice, built);
        written(true)
    }

    /// [`Ev::produce`] when tracing: what a building rule read starts its rules' sources.
    #[cold]
    #[inline(never)]
    fn produce_traced(
        &mut self,
        r: &'p RulePlan,
        frame: &Frame<'g, 'a>,
    ) -> Result<Option<Produced>, Missing> {
        if !matches!(
            r.producer,
            Producer::Via(_) | Producer::Rules(_) | Producer::Resource { .. }
        ) {
            return self.produce(r, frame);
        }
        self.trace_enter(r, frame);
        let p = self.produce(r, frame);
        self.trace_leave();
        p
    }

    /// When tracing: what building rule `r` read starts the sources of its rules' rows.
    fn trace_enter(&mut self, r: &RulePlan, frame: &Frame<'g, 'a>) {
        if self.trace.is_some() {
            let own = self.source_of(r, frame);
            if let Some(t) = self.trace.as_mut() {
                t.sources.push(own);
            }
        }
    }

    /// The end of [`Ev::trace_enter`]'s building rule.
    fn trace_leave(&mut self) {
        if let Some(t) = self.trace.as_mut() {
            t.sources.pop();
        }
    }

    /// Write rule `r`'s value at its target; when tracing, record where it went and why. `built`:
    /// the value is the object `build_object` (or a `group_by`) just made, whose own rows are
    /// re-based under the path it is written at.
    #[inline]
    fn emit(
        &mut self,
        out: &mut Map<String, Value>,
        r: &RulePlan,
        frame: &Frame<'g, 'a>,
        v: Value,
        choice: Option<&str>,
        built: bool,
    ) {
        if self.trace.is_none() {
            write(out, &r.to, v, choice);
            return;
        }
        self.emit_traced(out, r, frame, v, choice, built);
    }

    #[cold]
    #[inline(never)]
    fn emit_traced(
        &mut self,
        out: &mut Map<String, Value>,
        r: &RulePlan,
        frame: &Frame<'g, 'a>,
        v: Value,
        choice: Option<&str>,
        built: bool,
    ) {
        let mut path = String::new();
        write_rec(out, &r.to, v, choice, &mut path);
        let own = self.source_of(r, frame);
        let Some(t) = self.trace.as_mut() else {
            return;
        };
        let source = t
            .sources
            .iter()
            .chain(std::iter::once(&own))
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" → ");
        let children = if built { t.pending.take() } else { None };
        let Some(top) = t.frames.last_mut() else {
            return;
        };
        match children {
            Some(rows) if !rows.is_empty() => {
                for (p, s, rule) in rows {
                    let at = if p.starts_with('[') || p.is_empty() {
                        format!("{path}{p}")
                    } else {
                        format!("{path}.{p}")
                    };
                    top.push((at, s, rule));
                }
            }
            _ => top.push((path, source, format!("{} ({})", r.name, r.origin))),
        }
    }

    /// What rule `r` read, for the trace: its `from` (with the segment occurrence when the path
    /// names a segment), or what it produced without one (nothing for a builder without
    /// `from`: its rules read what the enclosing rule selected).
    fn source_of(&self, r: &RulePlan, frame: &Frame<'g, 'a>) -> String {
        let from = match &r.from {
            Some(src) if is_relative(src) => return src.to_string(),
            Some(src) => src.to_string(),
            None => {
                return match &r.producer {
                    Producer::Const(_) => "constant".to_string(),
                    Producer::Ref(a) | Producer::Refs(a) => {
                        format!("reference to {}", self.plan.aliases[*a])
                    }
                    _ => String::new(),
                };
            }
        };
        match frame.seg {
            Some(si) => format!("{from} (segment #{})", si + 1),
            None => from,
        }
    }

    /// Start collecting the trace rows of a new object.
    #[inline]
    fn trace_open(&mut self) {
        if let Some(t) = self.trace.as_mut() {
            t.frames.push(Vec::new());
        }
    }

    /// The rows of the object being finished belong to resource `name`.
    fn trace_close(&mut self, name: &str) {
        if let Some(t) = self.trace.as_mut()
            && let Some(rows) = t.frames.pop()
        {
            t.rows
                .extend(rows.into_iter().map(|(path, source, rule)| TraceRow {
                    resource: name.to_string(),
                    path,
                    source,
                    rule,
                }));
        }
    }

    /// Mark consumed what `src` selects for the items a condition accepted (`accepted`: their
    /// segments for `SEG[*]-f`, `None` for the rule's own frame).
    fn mark_accepted(&mut self, src: &Src, frame: &Frame<'g, 'a>, accepted: &[Option<usize>]) {
        for &seg in accepted {
            match (seg, src.in_one_occurrence()) {
                (Some(si), Some(one)) => {
                    let mut f2 = frame.clone();
                    f2.seg = Some(si);
                    self.resolve(&one, &f2, true);
                }
                _ => {
                    self.resolve(src, frame, true);
                }
            }
        }
    }

    /// Run `rules` into a new object; `None` when they wrote nothing.
    fn build_object(
        &mut self,
        rules: &'p [RulePlan],
        frame: &Frame<'g, 'a>,
    ) -> Result<Option<Produced>, Missing> {
        // Sized for every rule writing a key of its own: no regrowth (and rehash) while filling.
        let mut obj = Map::with_capacity(rules.len().min(16));
        if self.trace.is_none() {
            self.run_rules(rules, frame, &mut obj)?;
        } else {
            self.trace_open();
            let built = self.run_rules(rules, frame, &mut obj);
            if let Some(t) = self.trace.as_mut() {
                t.pending = t.frames.pop();
            }
            built?;
        }
        Ok((!obj.is_empty()).then(|| Produced {
            value: Value::Object(obj),
            choice: None,
        }))
    }

    /// The group scope of the resource being built.
    fn scope_of(&self, frame: &Frame<'g, 'a>) -> &[usize] {
        self.insts
            .get(frame.inst)
            .map(|i| i.scope.as_slice())
            .unwrap_or(&[])
    }

    /// `{"reference": "Type/id"}` for resource instance `i`.
    fn reference_to(&self, i: usize) -> Value {
        let t = &self.insts[i];
        json!({"reference": format!("{}/{}", t.rtype, t.id)})
    }

    /// Produce a rule's value for one item. Switches write their case directly and report `Some(Null)`.
    fn produce(
        &mut self,
        r: &'p RulePlan,
        frame: &Frame<'g, 'a>,
    ) -> Result<Option<Produced>, Missing> {
        let text_of = |v: &Option<V2<'a>>| {
            v.and_then(|v| v.text().map(|t| functions::fhir_string(&t).into_owned()))
                .filter(|t| !t.is_empty())
        };
        let p = match &r.producer {
            Producer::Text => {
                if let Some(v) = &frame.value {
                    self.mark_produced(v);
                }
                text_of(&frame.value).map(|t| Produced {
                    value: Value::String(t),
                    choice: Some("String"),
                })
            }
            Producer::Const(v) => {
                // A constant chosen by a value (`from: PV1-2.1, value: planned`) uses that value;
                // without `from` the frame's value is the datatype's, which it does not use.
                if r.from.is_some()
                    && let Some(read) = &frame.value
                {
                    self.mark_produced(read);
                }
                Some(Produced {
                    value: v.clone(),
                    choice: None,
                })
            }
            Producer::Fn(f) => {
                let Some(v) = frame.value else {
                    return Ok(None);
                };
                if let Some(parts) = functions::reads(*f) {
                    // Only the parts the function reads: a name's type or validity, an RPT's
                    // other components, stay listed unless another rule uses them.
                    for &at in parts {
                        self.mark_produced(&functions::part(&v, at));
                    }
                } else {
                    self.mark_produced(&v);
                }
                let produced = if r.with.is_empty() {
                    functions::apply(*f, &v, &self.opts.default_zone)
                } else {
                    // Further inputs (`with`), read in the rule's context; consumed only when
                    // the function made something of them.
                    let args: SmallVec<[V2<'a>; 2]> = r
                        .with
                        .iter()
                        .map(|s| {
                            self.resolve_one(s, frame, false)
                                .unwrap_or_else(empty_value)
                        })
                        .collect();
                    let out = functions::apply_with(*f, &v, &args, &self.opts.default_zone);
                    if matches!(out, Ok(Some(_))) {
                        for s in &r.with {
                            if let Some(a) = self.resolve_one(s, frame, true) {
                                self.mark_produced(&a);
                            }
                        }
                    }
                    out
                };
                self.function_result(r, produced)
            }
            Producer::Via(map) => self.build_object(&self.map_plan(*map).rules, frame)?,
            Producer::Rules(rules) => self.build_object(rules, frame)?,
            Producer::Ref(alias) => {
                let scope = self.scope_of(frame);
                self.best_inst(*alias, scope, frame.seg).map(|i| Produced {
                    value: self.reference_to(i),
                    choice: None,
                })
            }
            Producer::Refs(alias) => {
                let scope = self.scope_of(frame);
                let mut refs: Vec<Value> = (0..self.insts.len())
                    .filter(|&i| {
                        self.insts[i].alias == *alias && self.insts[i].scope.starts_with(scope)
                    })
                    .map(|i| self.reference_to(i))
                    .collect();
                if refs.is_empty() && scope.len() > 1 {
                    // A segment in a group of its own (DFT's COMMON_ORDER: [ORC] [ORDER: OBR]
                    // [{OBSERVATION: OBX}]): the enclosing group's resources that no other
                    // resource like this one encloses (never another order's results).
                    let parent = &scope[..scope.len() - 1];
                    let me = self.insts.get(frame.inst);
                    let owners: Vec<&[usize]> = self
                        .insts
                        .iter()
                        .enumerate()
                        .filter(|&(i, t)| {
                            i != frame.inst
                                && me.is_some_and(|m| m.alias == t.alias)
                                && t.scope.starts_with(parent)
                        })
                        .map(|(_, t)| t.scope.as_slice())
                        .collect();
                    refs = (0..self.insts.len())
                        .filter(|&i| {
                            let s = &self.insts[i].scope;
                            self.insts[i].alias == *alias
                                && s.starts_with(parent)
                                && !owners.iter().any(|o| s.starts_with(o))
                        })
                        .map(|i| self.reference_to(i))
                        .collect();
                }
                (!refs.is_empty()).then(|| Produced {
                    value: Value::Array(refs),
                    choice: None,
                })
            }
            Producer::Resource {
                rtype,
                map,
                key,
                rules,
            } => {
                let mut obj = Map::new();
                obj.insert("resourceType".into(), Value::String(rtype.clone()));
                let mut body = Map::new();
                self.trace_open();
                let built = self
                    .run_rules(&self.map_plan(*map).rules, frame, &mut body)
                    .and_then(|()| self.run_rules(rules, frame, &mut body));
                let rows = self.trace.as_mut().and_then(|t| t.frames.pop());
                built?;
                if body.is_empty() {
                    return Ok(None);
                }
                let keys: Vec<String> = if key.is_empty() {
                    vec![
                        frame
                            .value
                            .map(|v| String::from_utf8_lossy(v.raw()).into_owned())
                            .unwrap_or_default(),
                    ]
                } else {
                    key.iter()
                        .map(|k| self.first_text(k, frame, false).into_owned())
                        .collect()
                };
                let keys = if keys.iter().all(String::is_empty) {
                    vec![Value::Object(body.clone()).to_string()]
                } else {
                    keys
                };
                let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                let id = ids::resource_id(rtype, &self.sender, "", &key_refs);
                obj.insert("id".into(), Value::String(id.clone()));
                obj.extend(body);
                let full = format!("{rtype}/{id}");
                if let (Some(t), Some(rows)) = (self.trace.as_mut(), rows) {
                    t.rows
                        .extend(rows.into_iter().map(|(path, source, rule)| TraceRow {
                            resource: full.clone(),
                            path,
                            source,
                            rule,
                        }));
                }
                match self.extra_ids.get(&full) {
                    None => {
                        self.extra_ids.insert(full.clone(), self.extra.len());
                        self.extra.push(Value::Object(obj));
                    }
                    Some(&i) => self.merge_extra(i, obj, r, &full),
                }
                Some(Produced {
                    value: json!({"reference": full}),
                    choice: None,
                })
            }
            // Switches are dispatched in run_rule.
            Producer::Switch { .. } => None,
        };
        let p = match (p, r.vocab) {
            (
                Some(Produced {
                    value: Value::String(s),
                    choice,
                }),
                Some((vid, field)),
            ) => {
                let vocab = &self.plan.vocabs[vid];
                match vocab.entries.get(&s) {
                    Some(e) => {
                        self.note_coded(&frame.value);
                        let v = match field {
                            VocabField::Code => &e.code,
                            VocabField::Display => &e.display,
                            VocabField::System => &e.system,
                        };
                        (!v.is_empty()).then(|| Produced {
                            value: Value::String(v.clone()),
                            choice,
                        })
                    }
                    None => {
                        // The vocabulary's fallback for codes it lacks (an OID or URI sent in
                        // place of a table 0396 name is already a code system).
                        let fallback = match (field, vocab.unmatched) {
                            (VocabField::Code, Some(f)) => {
                                functions::apply_str(f, &s).ok().flatten()
                            }
                            _ => None,
                        };
                        if let Some(p) = fallback {
                            self.note_coded(&frame.value);
                            return Ok(Some(Produced {
                                value: p.value,
                                choice,
                            }));
                        }
                        if field == VocabField::Code {
                            let code: String = s.chars().take(40).collect();
                            self.untranslated.push(format!("{} '{}'", vocab.name, code));
                            self.issues.push(Issue {
                                severity: Severity::Warning,
                                code: "code-invalid",
                                text: format!(
                                    "code '{}' has no entry in vocabulary {} (rule {})",
                                    code, vocab.name, r.name
                                ),
                                location: Some(self.loc_of(r)),
                            });
                        }
                        None
                    }
                }
            }
            (p, _) => p,
        };
        Ok(p)
    }

    /// The same nested resource built again (same id) in this message: elements the first
    /// build lacked are added (a provider named in PV1-7 and sent by number alone in OBX-16);
    /// an element both have with different values keeps the first and says so.
    fn merge_extra(&mut self, i: usize, later: Map<String, Value>, r: &RulePlan, what: &str) {
        let Some(Value::Object(first)) = self.extra.get_mut(i) else {
            return;
        };
        let mut differs: Vec<String> = Vec::new();
        for (k, v) in later {
            match first.get(&k) {
                None => {
                    first.insert(k, v);
                }
                Some(old) if *old != v => differs.push(k),
                Some(_) => {}
            }
        }
        if !differs.is_empty() {
            self.issues.push(Issue {
                severity: Severity::Warning,
                code: "conflict",
                text: format!(
                    "{what} is built again with different {} (rule {}); the first is kept",
                    differs.join(", "),
                    r.name
                ),
                location: Some(self.loc_of(r)),
            });
        }
    }

    fn loc_of(&self, r: &RulePlan) -> String {
        match &r.from {
            Some(s) => format!("{s} ({})", r.origin),
            None => r.origin.clone(),
        }
    }

    /// The message's first SFT (the sending software; `bundle` maps [`SFT_SOURCE`] of it).
    fn first_sft(&self) -> Option<usize> {
        (0..self.msg.len()).find(|&i| self.msg.segment_id(i) == b"SFT")
    }

    fn mark_header_fields(&mut self) {
        if let Some(msh) = self.consumed.get_mut(0) {
            for f in [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 15, 16, 18] {
                if let Some(c) = msh.get_mut(f) {
                    *c = ALL_REPS;
                }
            }
        }
        // The first SFT's product name and version become MessageHeader.source (`bundle`).
        if let Some(si) = self.first_sft()
            && let Some(used) = self.consumed.get_mut(si)
        {
            for (f, _) in SFT_SOURCE {
                if let Some(c) = used.get_mut(f) {
                    *c = ALL_REPS;
                }
            }
        }
    }

    /// Segments and fields no rule consumed. A Set ID (field 1 of the segments in
    /// [`SET_ID_FIRST`]) only numbers the segment within its message and is not reported, nor
    /// are the other [`COUNTERS`] ([`is_counter`]).
    fn loss_report(&mut self) {
        for &(dup, first) in &self.repeats {
            if let Some(used) = self.consumed.get(first).cloned()
                && let Some(slot) = self.consumed.get_mut(dup)
            {
                *slot = used;
            }
        }
        for seg in self.msg.segments() {
            let i = seg.index();
            let used = &self.consumed[i];
            let valued: Vec<usize> = seg
                .fields()
                .filter(|(n, v)| v.is_valued() && !is_counter(seg.id(), *n))
                .map(|(n, _)| n)
                .collect();
            if valued.is_empty() {
                continue;
            }
            if !used.iter().any(|u| *u != 0) {
                self.unmapped.push(seg.id().to_string());
                self.issues.push(Issue {
                    severity: Severity::Warning,
                    code: "not-supported",
                    text: format!(
                        "segment {} was not mapped ({} valued field(s))",
                        seg.id(),
                        valued.len()
                    ),
                    location: Some(format!("{} (segment #{})", seg.id(), i + 1)),
                });
                continue;
            }
            // A field no rule read is lost whole; of a field read in part (its first repetition),
            // the valued repetitions no rule read: `OBX-5[2]`.
            let mut lost: Vec<String> = Vec::new();
            // Parts of mapped fields: `PID-5.1.5`, `PID-11[2].8`.
            let mut parts: Vec<String> = Vec::new();
            for &n in &valued {
                let bits = used.get(n).copied().unwrap_or(0);
                if bits == 0 {
                    lost.push(format!("{}-{n}", seg.id()));
                    continue;
                }
                for (r, rv) in seg.field(n).children().enumerate() {
                    if !rv.is_valued() {
                        continue;
                    }
                    if bits != ALL_REPS && r < 32 && bits & (1 << r) == 0 {
                        lost.push(format!("{}-{n}[{}]", seg.id(), r + 1));
                        continue;
                    }
                    let rep = if r == 0 {
                        String::new()
                    } else {
                        format!("[{}]", r + 1)
                    };
                    parts.extend(
                        self.unproduced_leaves(&rv)
                            .into_iter()
                            .map(|leaf| format!("{}-{n}{rep}{leaf}", seg.id())),
                    );
                }
            }
            let location = format!("{} (segment #{})", seg.id(), i + 1);
            self.report_unmapped("field(s)", lost, &location);
            self.report_unmapped("component(s)", parts, &location);
        }
    }

    /// One informational issue listing `addresses` (`what` not mapped) in the segment at
    /// `location`, and the addresses for [`Conversion::unmapped`]; nothing when there are none.
    fn report_unmapped(&mut self, what: &str, addresses: Vec<String>, location: &str) {
        if addresses.is_empty() {
            return;
        }
        self.issues.push(Issue {
            severity: Severity::Info,
            code: "informational",
            text: format!("{what} not mapped: {}", addresses.join(", ")),
            location: Some(location.to_string()),
        });
        self.unmapped.extend(addresses);
    }

    /// The elements `MSH[MessageHeader]` builds from the MSH (nothing without that map). Nested
    /// resources it makes (the sending facility's Organization…) join the message's extras.
    fn header_fields(&mut self, root: &'g GroupInstance) -> Map<String, Value> {
        let mut obj = Map::new();
        let Some(id) = self.plan.header else {
            return obj;
        };
        let frame = Frame {
            seg: Some(0),
            chain: Rc::from(vec![root]),
            value: None,
            // No resource instance: references resolve from the message's root.
            inst: usize::MAX,
        };
        let rules = &self.map_plan(id).rules;
        self.trace_open();
        let built = self.run_rules(rules, &frame, &mut obj);
        self.trace_close("MessageHeader");
        if let Err(Missing(what)) = built {
            self.issues.push(Issue {
                severity: Severity::Error,
                code: "required",
                text: format!("MessageHeader fields not mapped: required {what} is missing"),
                location: Some("MSH".into()),
            });
            obj.clear();
        }
        obj
    }

    /// The Provenance entities of the software that sent or handled the message: each Device a
    /// map built from an SFT segment (IG SFT[Device]) and emitted, the first SFT's the `source`,
    /// later ones (systems the message passed through) `derivation`s.
    fn software_entities(&self, resources: &[(Option<usize>, Value)]) -> Vec<Value> {
        // (segment, instance) of each, in message order.
        let mut devices: Vec<(usize, usize)> = resources
            .iter()
            .filter_map(|(i, _)| {
                let inst = self.insts.get((*i)?)?;
                (inst.rtype == "Device" && self.msg.segment_id(inst.seg) == b"SFT")
                    .then_some((inst.seg, (*i)?))
            })
            .collect();
        devices.sort_unstable();
        devices
            .into_iter()
            .enumerate()
            .map(|(n, (_, i))| {
                let role = if n == 0 { "source" } else { "derivation" };
                json!({"role": role, "what": self.reference_to(i)})
            })
            .collect()
    }

    fn bundle(
        &mut self,
        mp: &MessagePlan,
        resources: Vec<Value>,
        focus_count: usize,
        header: Map<String, Value>,
        software: Vec<Value>,
    ) -> Value {
        let h = self.msg.header();
        let zone = &self.opts.default_zone;
        let ts = h
            .datetime
            .as_deref()
            .and_then(|t| crate::fhir::datetime::parse_dtm(t).ok())
            .map(|d| d.to_instant(zone));
        let control = h.control_id.as_deref().unwrap_or("");
        // FHIR `code` forbids leading/trailing whitespace and runs of it; `url` forbids any.
        let code = |s: &str| {
            let c = s.split_whitespace().collect::<Vec<_>>().join(" ");
            if c.is_empty() {
                "unknown".to_string()
            } else {
                c
            }
        };
        let endpoint = |hd: &crate::v2::Hd<'_>| -> String {
            let token = |s: &str| s.split_whitespace().collect::<Vec<_>>().join("_");
            match (&hd.universal_id, &hd.namespace_id) {
                (Some(u), _)
                    if u.trim()
                        .split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
                {
                    format!("urn:oid:{}", u.trim())
                }
                (_, Some(n)) if !token(n).is_empty() => format!("urn:hl7v2:{}", token(n)),
                (Some(u), _) if !token(u).is_empty() => format!("urn:hl7v2:{}", token(u)),
                _ => "urn:hl7v2:unknown".to_string(),
            }
        };
        let focus: Vec<Value> = resources
            .iter()
            .take(focus_count)
            .filter_map(|r| Some(json!({"reference": format!("{}/{}", r.get("resourceType")?.as_str()?, r.get("id")?.as_str()?)})))
            .collect();
        let mh_id = ids::resource_id("MessageHeader", &self.sender, "", &[control]);
        let mut mh = json!({
            "resourceType": "MessageHeader",
            "id": mh_id,
            // Filled by MSH[MessageHeader] (MSH-11's tags) or removed below: here so that it
            // comes out after the id, where FHIR puts it.
            "meta": {},
            "eventCoding": {"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": code(h.trigger_event.as_deref().or(h.message_code.as_deref()).unwrap_or("unknown"))},
            "source": {"endpoint": endpoint(&h.sending_application)},
        });
        if let Some(n) = &h.sending_application.namespace_id {
            let n = functions::fhir_string(n);
            if !n.is_empty() {
                mh["source"]["name"] = json!(n);
            }
        }
        // The sending software (IG SFT[MessageHeader]): the first SFT's product name (SFT-3) and
        // certified version (SFT-2). R4 has one of each; the others stay in the loss report.
        if let Some(si) = self.first_sft()
            && let Some(sft) = self.msg.segment(si)
        {
            for (field, key) in SFT_SOURCE {
                let v = sft.field(field);
                let text = v
                    .is_valued()
                    .then(|| v.rep(1).text())
                    .flatten()
                    .map(|t| functions::fhir_string(&t).into_owned())
                    .unwrap_or_default();
                if !text.is_empty() {
                    mh["source"][key] = json!(text);
                }
            }
        }
        if !h.receiving_application.is_empty() {
            let mut d = json!({"endpoint": endpoint(&h.receiving_application)});
            if let Some(n) = &h.receiving_application.namespace_id {
                let n = functions::fhir_string(n);
                if !n.is_empty() {
                    d["name"] = json!(n);
                }
            }
            mh["destination"] = json!([d]);
        }
        // What MSH[MessageHeader] mapped goes over what is built above (MSH-24, the sending
        // network address, is a better endpoint than MSH-3); a destination it adds (MSH-6's
        // receiver without MSH-5) still needs the endpoint R4 requires.
        merge_into(&mut mh, Value::Object(header));
        if let Some(m) = mh.as_object_mut()
            && m.get("meta").is_some_and(is_empty_json)
        {
            m.shift_remove("meta");
        }
        if let Some(dests) = mh.get_mut("destination").and_then(Value::as_array_mut) {
            for d in dests.iter_mut() {
                if d.get("endpoint").is_none() {
                    d["endpoint"] = json!(endpoint(&h.receiving_application));
                }
            }
        }
        if !focus.is_empty() {
            mh["focus"] = Value::Array(focus.clone());
        }
        let prov_id = ids::resource_id("Provenance", &self.sender, "", &[control]);
        let mut prov = json!({
            "resourceType": "Provenance",
            "id": prov_id,
            "target": if focus.is_empty() { json!([{"reference": format!("MessageHeader/{mh_id}")}]) } else { Value::Array(focus) },
            "recorded": ts.clone().unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE", "display": "revise"}]},
            "agent": [{
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler", "display": "Assembler"}]},
                "who": {"display": "v2fhir"}
            }],
            "entity": [{"role": "source", "what": {"display": functions::fhir_string(&format!("HL7 v2 {} message {}", h.message_type(), mp.name)).into_owned()}}],
        });
        let control_text = functions::fhir_string(control);
        if !control_text.is_empty() {
            prov["entity"][0]["what"]["identifier"] = json!({"value": control_text});
        }
        if let Some(entities) = prov["entity"].as_array_mut() {
            entities.extend(software);
        }
        if ts.is_none() {
            prov["recorded"] = json!("1970-01-01T00:00:00Z");
            self.issues.push(Issue {
                severity: Severity::Warning,
                code: "incomplete",
                text: "MSH-7 is missing or invalid; Provenance.recorded set to the epoch".into(),
                location: Some("MSH-7".into()),
            });
        }
        if self.opts.validate {
            for r in [&mh, &prov] {
                for p in validate::validate(r) {
                    self.issues.push(Issue {
                        severity: Severity::Error,
                        code: "invalid",
                        text: format!(
                            "{} not valid R4 at {}: {}",
                            p.resource_type, p.path, p.message
                        ),
                        location: Some(format!("{}{}", p.resource_type, p.path)),
                    });
                }
            }
        }
        let bt = self.opts.bundle_type;
        let mut all = Vec::with_capacity(resources.len() + 2);
        all.push(mh);
        all.extend(resources);
        all.push(prov);
        // Build entries by moving each resource in: `json!` would deep-copy it through to_value.
        let entries: Vec<Value> = all
            .into_iter()
            .map(|r| {
                let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                let full_url = format!("urn:uuid:{}", text("id"));
                let url = matches!(bt, BundleType::Transaction | BundleType::Batch)
                    .then(|| format!("{}/{}", text("resourceType"), text("id")));
                let mut e = Map::with_capacity(3);
                e.insert("fullUrl".into(), Value::String(full_url));
                e.insert("resource".into(), r);
                if let Some(url) = url {
                    let mut req = Map::with_capacity(2);
                    req.insert("method".into(), Value::String("PUT".into()));
                    req.insert("url".into(), Value::String(url));
                    e.insert("request".into(), Value::Object(req));
                }
                Value::Object(e)
            })
            .collect();
        let mut b = json!({"resourceType": "Bundle", "id": ids::resource_id("Bundle", &self.sender, "", &[control]), "type": bt.as_str()});
        if let Some(t) = ts {
            b["timestamp"] = json!(t);
        }
        b["entry"] = Value::Array(entries);
        b
    }
}

/// Merge `src` into `dst`: objects key by key, lists element by element (same index), anything
/// else replaced.
fn merge_into(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(slot) => merge_into(slot, v),
                    None => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(d), Value::Array(s)) => {
            for (i, v) in s.into_iter().enumerate() {
                match d.get_mut(i) {
                    Some(slot) => merge_into(slot, v),
                    None => d.push(v),
                }
            }
        }
        (d, s) => *d = s,
    }
}

/// The first segment with id `seg` in `g`'s subtree (message order), without allocating.
fn find_segment(msg: &Message<'_>, g: &GroupInstance, seg: &[u8; 3]) -> Option<usize> {
    for item in &g.items {
        match item {
            GroupItem::Segment(s) => {
                if msg.segment_id(*s) == seg {
                    return Some(*s);
                }
            }
            GroupItem::Group(sub) => {
                if let Some(s) = find_segment(msg, sub, seg) {
                    return Some(s);
                }
            }
        }
    }
    None
}

/// Is `src` relative to the current value (`.1`, `.4.2 | .5`)?
fn is_relative(src: &Src) -> bool {
    match src {
        Src::Rel(_) => true,
        Src::Alt(a) => a.iter().all(is_relative),
        _ => false,
    }
}

fn collect_segments(
    msg: &Message<'_>,
    g: &GroupInstance,
    seg: &[u8; 3],
    all: bool,
    out: &mut Segs,
) {
    for item in &g.items {
        if !all && !out.is_empty() {
            return;
        }
        match item {
            GroupItem::Segment(s) => {
                if msg.segment_id(*s) == seg {
                    out.push(*s);
                }
            }
            GroupItem::Group(sub) => collect_segments(msg, sub, seg, all, out),
        }
    }
}

fn empty_value<'a>() -> V2<'a> {
    crate::v2::model::Value::empty()
}

/// Write `v` at `steps` inside `obj`. Empty values are never written; `[+]` elements that end
/// up empty are removed.
#[inline]
pub fn write(obj: &mut Map<String, Value>, steps: &[Step], v: Value, choice: Option<&str>) {
    write_rec(obj, steps, v, choice, &mut NoPath);
}

/// Where a write went, for the trace: `name[0].family`.
trait PathRec {
    fn key(&mut self, key: &str);
    fn index(&mut self, i: usize);
}

/// No path recorded (the usual case: not tracing).
struct NoPath;

impl PathRec for NoPath {
    #[inline(always)]
    fn key(&mut self, _: &str) {}
    #[inline(always)]
    fn index(&mut self, _: usize) {}
}

impl PathRec for String {
    fn key(&mut self, key: &str) {
        if !self.is_empty() {
            self.push('.');
        }
        self.push_str(key);
    }
    fn index(&mut self, i: usize) {
        use std::fmt::Write as _;
        let _ = write!(self, "[{i}]");
    }
}

/// [`write`], telling `path` where the value went.
fn write_rec<P: PathRec>(
    obj: &mut Map<String, Value>,
    steps: &[Step],
    v: Value,
    choice: Option<&str>,
    path: &mut P,
) {
    if is_empty_json(&v) {
        return;
    }
    let Some((step, rest)) = steps.split_first() else {
        return;
    };
    let key: Cow<'_, str> = match (step.mode, choice) {
        (Mode::Choice, Some(c)) => Cow::Owned(format!("{}{c}", step.key)),
        (Mode::Choice, None) => Cow::Owned(format!("{}String", step.key)),
        _ => Cow::Borrowed(&step.key),
    };
    path.key(&key);
    if rest.is_empty() && matches!(step.mode, Mode::Plain | Mode::Choice) {
        // One lookup: `insert` replaces a value in place (its position is kept).
        obj.insert(key.into_owned(), v);
        return;
    }
    let list = !matches!(step.mode, Mode::Plain | Mode::Choice);
    // One hash lookup, present or not.
    let slot = obj.entry(key.as_ref()).or_insert_with(|| {
        if list {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        }
    });
    let now_empty = match (slot, step.mode) {
        (Value::Object(c), Mode::Plain | Mode::Choice) => {
            write_rec(c, rest, v, choice, path);
            c.is_empty()
        }
        (Value::Array(a), Mode::Append | Mode::Last | Mode::Index(_)) => {
            write_list(a, step.mode, rest, v, choice, path);
            a.is_empty()
        }
        _ => false,
    };
    if now_empty {
        obj.remove(key.as_ref());
    }
}

/// The fields of the first SFT that become `MessageHeader.source` elements (IG SFT[MessageHeader]):
/// the product name and the certified version.
const SFT_SOURCE: [(usize, &str); 2] = [(3, "software"), (2, "version")];

/// A Reference, or an element holding one directly (`performer: {actor: {reference}}`).
fn holds_reference(v: &Value) -> bool {
    let is_ref = |v: &Value| v.as_object().is_some_and(|o| o.contains_key("reference"));
    is_ref(v) || v.as_object().is_some_and(|o| o.values().any(is_ref))
}

/// Write into list `a` as `mode` says; `rest` continues inside the addressed element.
fn write_list<P: PathRec>(
    a: &mut Vec<Value>,
    mode: Mode,
    rest: &[Step],
    v: Value,
    choice: Option<&str>,
    path: &mut P,
) {
    if rest.is_empty() {
        match mode {
            // The same resource named twice (a practitioner in two ROL segments) is one entry.
            Mode::Append if holds_reference(&v) && a.contains(&v) => {
                path.index(a.iter().position(|x| *x == v).unwrap_or(0));
            }
            Mode::Append => {
                path.index(a.len());
                a.push(v);
            }
            Mode::Last => match a.last_mut() {
                Some(last) => {
                    *last = v;
                    path.index(a.len() - 1);
                }
                None => {
                    path.index(0);
                    a.push(v);
                }
            },
            Mode::Index(n) if n < a.len() => {
                path.index(n);
                a[n] = v;
            }
            Mode::Index(n) if n == a.len() => {
                path.index(n);
                a.push(v);
            }
            _ => {}
        }
        return;
    }
    let idx = match mode {
        Mode::Append => {
            a.push(Value::Object(Map::new()));
            a.len() - 1
        }
        Mode::Last => {
            if a.is_empty() {
                a.push(Value::Object(Map::new()));
            }
            a.len() - 1
        }
        Mode::Index(n) => {
            if n == a.len() {
                a.push(Value::Object(Map::new()));
            }
            if n >= a.len() {
                return;
            }
            n
        }
        _ => return,
    };
    path.index(idx);
    if let Some(Value::Object(c)) = a.get_mut(idx) {
        write_rec(c, rest, v, choice, path);
    }
    if a.get(idx).is_some_and(is_empty_json) {
        a.remove(idx);
    }
}

#[cfg(test)]
mod bitset_tests {
    use super::for_words;

    /// Set bits `start..end` in a fresh bit set of `n` words through `for_words`.
    fn set(n: usize, start: usize, end: usize) -> Vec<u64> {
        let mut bits = vec![0u64; n];
        for_words(start, end, |w, m| bits[w] |= m);
        bits
    }

    #[test]
    fn ranges_set_exactly_their_bits() {
        for (start, end) in [
            (0, 1),
            (3, 9),
            (0, 64),
            (60, 70),
            (64, 128),
            (5, 200),
            (127, 129),
        ] {
            let bits = set(4, start, end);
            for b in 0..256 {
                let on = bits[b / 64] & (1 << (b % 64)) != 0;
                assert_eq!(on, (start..end).contains(&b), "{start}..{end} bit {b}");
            }
        }
        assert_eq!(set(2, 7, 7), vec![0, 0], "an empty range sets nothing");
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;
    use crate::mapping::plan::{Mode, Step};

    fn append(key: &str) -> Vec<Step> {
        vec![Step {
            key: key.into(),
            mode: Mode::Append,
        }]
    }

    #[test]
    fn a_list_takes_the_same_reference_once_and_other_values_as_often_as_written() {
        let mut obj = Map::new();
        let gp = json!({"reference": "PractitionerRole/1"});
        write(&mut obj, &append("generalPractitioner"), gp.clone(), None);
        write(&mut obj, &append("generalPractitioner"), gp.clone(), None);
        write(
            &mut obj,
            &append("generalPractitioner"),
            json!({"reference": "Organization/2"}),
            None,
        );
        assert_eq!(obj["generalPractitioner"].as_array().map(Vec::len), Some(2));
        // An element holding a reference (performer.actor) is one entry too …
        let performer =
            json!({"actor": {"reference": "Practitioner/3"}, "function": {"text": "AP"}});
        write(&mut obj, &append("performer"), performer.clone(), None);
        write(&mut obj, &append("performer"), performer, None);
        assert_eq!(obj["performer"].as_array().map(Vec::len), Some(1));
        // … but plain values repeat as sent (a given name twice is two given names).
        write(&mut obj, &append("given"), json!("ANN"), None);
        write(&mut obj, &append("given"), json!("ANN"), None);
        assert_eq!(obj["given"], json!(["ANN", "ANN"]));
    }
}
