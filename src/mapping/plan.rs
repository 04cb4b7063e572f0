//! The compiled mapping plan: every path parsed, every name resolved to an index. Evaluation
//! does no YAML, no parsing and no name lookups.

use serde_json::Value;
use std::collections::HashMap;

/// Index of a rule map in [`Plan::maps`].
pub type MapId = usize;
/// Index of a vocabulary in [`Plan::vocabs`].
pub type VocabId = usize;
/// Index of an alias in [`Plan::aliases`].
pub type AliasId = usize;

/// Which repetitions a source path selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rep {
    /// The first (default).
    First,
    /// Every repetition (`[*]`): the rule runs once per repetition.
    All,
    /// The n-th (1-based).
    Nth(usize),
}

/// A compiled source path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Src {
    /// `SEG-f[rep].c.s` — a segment field, relative to the current segment or group.
    Field {
        /// Segment id.
        seg: [u8; 3],
        /// `SEG[*]-f`: every occurrence of the segment in scope, not just the first.
        seg_all: bool,
        /// Field number.
        field: usize,
        /// Repetition selector.
        rep: Rep,
        /// Component.
        comp: Option<usize>,
        /// Subcomponent.
        sub: Option<usize>,
    },
    /// `SEG`, `SEG[*]` or `SEG[.]` alone — the segment(s) themselves: sub-rules then read that
    /// segment.
    Seg {
        /// Segment id.
        seg: [u8; 3],
        /// Which occurrences.
        which: SegScope,
    },
    /// `.c.s` — relative to the current datatype value; empty = the value itself.
    Rel(Vec<usize>),
    /// `a | b` — the first that is valued.
    Alt(Vec<Src>),
    /// `GROUP/SEG-f…` — a field path read inside the first instance of group GROUP found in
    /// the current group or below it, else below an enclosing group (innermost first): RXE's
    /// encoded timing (`TIMING_ENCODED/TQ1-3`) rather than the order's first TQ1.
    InGroup(std::sync::Arc<str>, Box<Src>),
}

/// Which occurrences of a segment `SEG`, `SEG[*]` and `SEG[.]` select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegScope {
    /// `SEG`: the first in scope.
    First,
    /// `SEG[*]`: every occurrence in the current group instance (else in its subgroups).
    All,
    /// `SEG[.]`: every occurrence directly in the current group, never in its subgroups.
    Direct,
    /// `SEG[**]`: every occurrence in the current group and in all its subgroups, at any depth,
    /// in message order (a scheduling message's notes: SCH's own and each booked resource's).
    Deep,
}

impl Src {
    /// `SEG[*]-f…` read in one occurrence of the segment (the current one): the same path
    /// without the `[*]` on the segment. `None` for any other path.
    pub fn in_one_occurrence(&self) -> Option<Src> {
        match self {
            Src::Field {
                seg,
                seg_all: true,
                field,
                rep,
                comp,
                sub,
            } => Some(Src::Field {
                seg: *seg,
                seg_all: false,
                field: *field,
                rep: *rep,
                comp: *comp,
                sub: *sub,
            }),
            _ => None,
        }
    }

    /// Does this path iterate (`[*]`)?
    pub fn iterates(&self) -> bool {
        match self {
            Src::Field { rep, seg_all, .. } => *rep == Rep::All || *seg_all,
            Src::Seg { which, .. } => *which != SegScope::First,
            Src::Rel(_) => false,
            Src::Alt(a) => a.iter().any(Src::iterates),
            Src::InGroup(_, s) => s.iterates(),
        }
    }
}

/// How a target step addresses a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A single element.
    Plain,
    /// `[+]`: append a new element.
    Append,
    /// `[=]`: the element last appended.
    Last,
    /// `[n]`: 0-based index.
    Index(usize),
    /// `[x]`: choice type; the function supplies the type suffix.
    Choice,
}

/// One step of a target path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Element name.
    pub key: String,
    /// List addressing.
    pub mode: Mode,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Cond {
    /// Value (decoded text) is one of these.
    In(Src, Vec<String>),
    /// Valued (not empty, not null).
    Valued(Src),
    /// Not valued.
    NotValued(Src),
    /// The value (decoded text; empty when not valued) matches this regular expression.
    Matches(Src, regex::Regex),
    /// The value (decoded text) is a source code of this vocabulary: a rule can keep a code the
    /// vocabulary does not translate as the sender's own.
    InVocab(Src, VocabId),
    /// The value is one this function converts (`compared_decimal`: a number, possibly after a
    /// comparator): the rule that applies the function and the one that keeps the text otherwise
    /// agree by construction.
    Converts(Src, Func),
    /// All hold.
    All(Vec<Cond>),
    /// Any holds.
    Any(Vec<Cond>),
    /// Does not hold.
    Not(Box<Cond>),
}

/// Conversion functions (`fn:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// Decoded text.
    Text,
    /// FHIR date.
    Date,
    /// FHIR dateTime.
    DateTime,
    /// FHIR instant.
    Instant,
    /// FHIR time.
    Time,
    /// JSON number with the digits as sent.
    Decimal,
    /// The comparator (`<`, `<=`, `>`, `>=`) before a number (`<5` → `<`); nothing for a plain
    /// number. A Quantity's `comparator`, beside `compared_decimal` for its value.
    Comparator,
    /// The number of a value that may start with a comparator (`<5` → 5, `7.0` → 7.0).
    ComparedDecimal,
    /// Text → a Narrative (`status` additional, the text escaped in an XHTML `div`).
    Narrative,
    /// Integer.
    Integer,
    /// Integer > 0.
    PositiveInt,
    /// Integer ≥ 0.
    UnsignedInt,
    /// Y/N/T/F/1/0 → true/false.
    Boolean,
    /// OIDs become `urn:oid:…`; URIs pass through.
    Uri,
    /// Structured numeric → Quantity / Range / Ratio (for `value[x]`).
    Sn,
    /// Upper-case.
    Upper,
    /// Lower-case.
    Lower,
    /// ED/RP → Attachment.
    Attachment,
    /// XTN → one phone number or e-mail address (`.1`, or `.4`, or country/area/local/extension).
    Phone,
    /// A composite value as text: its components' decoded texts, empty ones skipped, joined by
    /// spaces (`Smith^John^^Dr` → `Smith John Dr`), never the raw delimiters.
    Words,
    /// XPN → the name as one string (IG XPN[string]): prefix (XPN.5), given (.2), middle (.3),
    /// family (.1.1), suffix (.4), degree (.6), or family first when XPN.11 is `F`.
    PersonName,
    /// RPT → the event offset (RPT.9 with its unit RPT.10: s, min, h, d, wk) in whole minutes,
    /// as `Timing.repeat.offset` takes it.
    OffsetMinutes,
    /// Text → an Attachment holding it: `contentType` `text/plain; charset=utf-8` and `data` its
    /// UTF-8 bytes in base64 (a TX or FT document body).
    TextAttachment,
    /// A date/time plus a duration given by `with`: a CQ (`50^min`), or a number and its unit
    /// (`AIP-9`, `AIP-10`), in s, min, h, d, wk, mo or a. The end of a period whose start and
    /// duration are sent (IG AIx[Appointment], TQ1[ServiceRequest]).
    EndAfter,
    /// A date/time minus a duration given by `with` (as [`Func::EndAfter`]): the start of a period
    /// whose end and duration are sent.
    StartBefore,
}

impl Func {
    /// Parse a function name.
    pub fn from_name(s: &str) -> Option<Func> {
        Some(match s {
            "text" => Func::Text,
            "date" => Func::Date,
            "datetime" => Func::DateTime,
            "instant" => Func::Instant,
            "time" => Func::Time,
            "decimal" => Func::Decimal,
            "integer" => Func::Integer,
            "positive_int" => Func::PositiveInt,
            "unsigned_int" => Func::UnsignedInt,
            "boolean" => Func::Boolean,
            "uri" => Func::Uri,
            "sn" => Func::Sn,
            "upper" => Func::Upper,
            "lower" => Func::Lower,
            "attachment" => Func::Attachment,
            "phone" => Func::Phone,
            "words" => Func::Words,
            "person_name" => Func::PersonName,
            "offset_minutes" => Func::OffsetMinutes,
            "text_attachment" => Func::TextAttachment,
            "comparator" => Func::Comparator,
            "compared_decimal" => Func::ComparedDecimal,
            "narrative" => Func::Narrative,
            "end_after" => Func::EndAfter,
            "start_before" => Func::StartBefore,
            _ => return None,
        })
    }

    /// Whether the function takes further inputs (`with`), which it then requires.
    pub fn takes_with(self) -> bool {
        matches!(self, Func::EndAfter | Func::StartBefore)
    }
}

/// Which column of a vocabulary entry a rule takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabField {
    /// target_code
    Code,
    /// target_display
    Display,
    /// target_system
    System,
}

/// What a rule produces.
#[derive(Debug, Clone)]
pub enum Producer {
    /// The decoded text of the source.
    Text,
    /// A constant.
    Const(Value),
    /// A datatype map applied to the source value.
    Via(MapId),
    /// Inline sub-rules building an object.
    Rules(Vec<RulePlan>),
    /// A conversion.
    Fn(Func),
    /// A reference to a resource of this message.
    Ref(AliasId),
    /// References to every resource with this alias inside the current resource's group instance.
    Refs(AliasId),
    /// A resource built from the source value; the rule writes a reference to it.
    Resource {
        /// FHIR type.
        rtype: String,
        /// Datatype map.
        map: MapId,
        /// Key paths (relative).
        key: Vec<Src>,
        /// Extra rules, run after the map's with the rule's frame.
        rules: Vec<RulePlan>,
    },
    /// First matching case.
    Switch {
        /// Value switched on.
        on: Src,
        /// (values, rule) pairs.
        cases: Vec<(Vec<String>, RulePlan)>,
        /// Case without `is`.
        default: Option<Box<RulePlan>>,
    },
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct RulePlan {
    /// Name (for messages and overlays).
    pub name: String,
    /// Source.
    pub from: Option<Src>,
    /// Target.
    pub to: Vec<Step>,
    /// Condition.
    pub when: Option<Cond>,
    /// What is produced.
    pub producer: Producer,
    /// Vocabulary applied to text.
    pub vocab: Option<(VocabId, VocabField)>,
    /// Fallback constant.
    pub default: Option<Value>,
    /// Missing → resource not emitted.
    pub required: bool,
    /// `rejected: consumed`: what `from` selects counts as consumed even for items the
    /// condition rejects (otherwise such items stay in the loss report).
    pub rejected_consumed: bool,
    /// `consumes`: field paths consumed with every item the rule accepts (read in that item's
    /// segment occurrence), though no rule writes them: OBX-2, the type of a report's text line.
    pub consumes: Vec<Src>,
    /// `with`: the function's further inputs, read in the rule's context.
    pub with: Vec<Src>,
    /// With `rules`: build one object per distinct value of this path among the selected items.
    pub group_by: Option<Src>,
    /// The selected items' texts joined by this separator into one value (`fn` applies to the
    /// whole): the lines of a text document sent as repetitions and as several OBX.
    pub join: Option<String>,
    /// `file:line:col` of the rule, for diagnostics.
    pub origin: String,
}

/// A compiled segment or datatype map.
#[derive(Debug, Clone)]
pub struct MapPlan {
    /// `PID[Patient]`.
    pub name: String,
    /// `Patient`.
    pub fhir_type: String,
    /// Rules.
    pub rules: Vec<RulePlan>,
}

/// One step of a resource source: a group (every instance or the first) or the final segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStep {
    /// Group name or segment id.
    pub name: String,
    /// `[*]`: every instance / occurrence.
    pub all: bool,
}

/// One business key of a resource id: a source path, or a literal (`'autopsy'`) that tells apart
/// resources of one type built from the same segment (PDA's autopsy and coroner Observations).
#[derive(Debug, Clone)]
pub enum IdKey {
    /// A value read from the message.
    Path(Src),
    /// A constant.
    Literal(String),
}

/// A compiled resource definition of a message map.
#[derive(Debug, Clone)]
pub struct ResourcePlan {
    /// Alias.
    pub alias: AliasId,
    /// FHIR type.
    pub rtype: String,
    /// Group steps, then the segment step.
    pub groups: Vec<SourceStep>,
    /// The segment.
    pub segment: SourceStep,
    /// Segment map.
    pub map: MapId,
    /// Id keys.
    pub key: Vec<IdKey>,
    /// Id scope.
    pub scope: IdScope,
    /// Base alias.
    pub base: Option<AliasId>,
    /// Absent source is fine.
    pub optional: bool,
    /// Condition.
    pub when: Option<Cond>,
    /// Where it is defined.
    pub origin: String,
}

/// Id scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdScope {
    /// Sending application + facility.
    Sender,
    /// This message (control id).
    Message,
    /// Everywhere.
    Global,
}

/// A compiled message map.
#[derive(Debug, Clone)]
pub struct MessagePlan {
    /// Name.
    pub name: String,
    /// Structures.
    pub structures: Vec<String>,
    /// Events (`ADT^A04`); empty = all.
    pub events: Vec<String>,
    /// Resources in order.
    pub resources: Vec<ResourcePlan>,
    /// Tests.
    pub tests: Vec<super::ast::TestCase>,
    /// Source file.
    pub file: String,
}

/// A vocabulary entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabEntry {
    /// target_code
    pub code: String,
    /// target_display
    pub display: String,
    /// target_system
    pub system: String,
}

/// A vocabulary (concept map) loaded from CSV.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// Name (file stem).
    pub name: String,
    /// source_code → entry.
    pub entries: HashMap<String, VocabEntry>,
    /// Applied to a code with no entry (`#! unmatched: uri`): what it converts is the target
    /// code; what it refuses is reported as untranslated, as without it.
    pub unmatched: Option<Func>,
}

/// A compiled sender overlay: when every matcher holds, these maps replace the base ones.
#[derive(Debug, Clone)]
pub struct SenderPlan {
    /// Name.
    pub name: String,
    /// MSH paths and accepted values.
    pub matches: Vec<(Src, Vec<String>)>,
    /// Patched copies of the maps it changes.
    pub maps: HashMap<MapId, MapPlan>,
}

/// The whole compiled mapping set.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Message maps.
    pub messages: Vec<MessagePlan>,
    /// Segment and datatype maps.
    pub maps: Vec<MapPlan>,
    /// Vocabularies.
    pub vocabs: Vec<Vocab>,
    /// Alias names.
    pub aliases: Vec<String>,
    /// Sender overlays, in file order (the first that matches applies).
    pub senders: Vec<SenderPlan>,
    /// `MSH[MessageHeader]`, if the set has it: rules run on every message's MSH whose result
    /// is merged into the MessageHeader the evaluator builds (sender, receiver, language…).
    pub header: Option<MapId>,
}

impl Plan {
    /// Every FHIR resource type a conversion with this plan can emit: those of the message maps'
    /// resources, of resources built inside rules (`resource:`), and the MessageHeader and
    /// Provenance every conversion adds. Sorted.
    pub fn resource_types(&self) -> Vec<String> {
        fn walk(rules: &[RulePlan], out: &mut std::collections::BTreeSet<String>) {
            for r in rules {
                walk_producer(&r.producer, out);
            }
        }
        fn walk_producer(p: &Producer, out: &mut std::collections::BTreeSet<String>) {
            match p {
                Producer::Resource { rtype, rules, .. } => {
                    out.insert(rtype.clone());
                    walk(rules, out);
                }
                Producer::Rules(rules) => walk(rules, out),
                Producer::Switch { cases, default, .. } => {
                    for (_, r) in cases {
                        walk_producer(&r.producer, out);
                    }
                    if let Some(d) = default {
                        walk_producer(&d.producer, out);
                    }
                }
                _ => {}
            }
        }
        let mut out = std::collections::BTreeSet::new();
        out.insert("MessageHeader".to_string());
        out.insert("Provenance".to_string());
        for m in &self.messages {
            for r in &m.resources {
                out.insert(r.rtype.clone());
            }
        }
        for m in self
            .maps
            .iter()
            .chain(self.senders.iter().flat_map(|s| s.maps.values()))
        {
            walk(&m.rules, &mut out);
        }
        out.into_iter().collect()
    }
}
