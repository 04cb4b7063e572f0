//! The mapping language as written in files (after JSON Schema validation). See
//! `mappings/README.md` for the language reference.

use serde::Deserialize;
use serde_json::Value;

/// One mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum File {
    /// Which resources a message yields.
    Message(MessageMap),
    /// Rules from one segment to one FHIR resource type.
    Segment(RuleMap),
    /// Rules from one v2 datatype to one FHIR datatype (or resource).
    Datatype(RuleMap),
    /// Per-sender patches to other maps.
    Sender(SenderMap),
}

/// `kind: sender`: patches applied when MSH fields match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderMap {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// `MSH-3: [LAB1, LAB2]`: every listed field must hold one of its values.
    #[serde(rename = "match")]
    pub matches: std::collections::BTreeMap<String, Vec<String>>,
    /// Patches, applied in order.
    pub patch: Vec<Patch>,
}

/// One patch of a sender overlay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// The map patched (`PID[Patient]`).
    pub map: String,
    /// Rule replaced by `with`.
    #[serde(default)]
    pub replace: Option<String>,
    /// The replacement rule.
    #[serde(default)]
    pub with: Option<Rule>,
    /// Rule removed.
    #[serde(default)]
    pub remove: Option<String>,
    /// Insert `rules` before this rule.
    #[serde(default)]
    pub add_before: Option<String>,
    /// Insert `rules` after this rule.
    #[serde(default)]
    pub add_after: Option<String>,
    /// Rules inserted (appended when neither add_before nor add_after is given).
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
}

/// `kind: message`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageMap {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Message structures handled (`ADT_A01`).
    pub structures: Vec<String>,
    /// Events (`ADT^A04`); empty = every event of the structures.
    #[serde(default)]
    pub events: Vec<String>,
    /// Resources produced, in order.
    pub resources: Vec<ResourceDef>,
    /// Tests run by `v2fhir mappings test`.
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// A resource a message yields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDef {
    /// Alias used by `ref:`.
    #[serde(rename = "as")]
    pub alias: String,
    /// FHIR resource type.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Group path and segment: `PATIENT_RESULT[*]/ORDER_OBSERVATION[*]/OBR`, `AL1[*]`, `PID`.
    pub source: String,
    /// Segment map to apply (`PID[Patient]`).
    pub map: String,
    /// How the id is formed.
    #[serde(default)]
    pub id: IdSpec,
    /// No diagnostic when the source segment is absent.
    #[serde(default)]
    pub optional: bool,
    /// Only when this holds.
    #[serde(default)]
    pub when: Option<Value>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Id formation: UUIDv5 over type, scope, base resource id and key values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdSpec {
    /// Source paths of the business keys.
    #[serde(default)]
    pub key: Vec<String>,
    /// `sender` (default), `message` or `global`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Alias of the resource whose id is part of this one's.
    #[serde(default)]
    pub base: Option<String>,
}

/// A `tests:` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Input file, relative to the repository (or mapping set's parent) directory.
    pub input: String,
    /// Expectations.
    pub expect: Vec<Expectation>,
}

/// One expectation about a produced resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Resource alias.
    pub resource: String,
    /// Path inside the resource, e.g. `identifier[0].value`.
    pub path: String,
    /// Expected value.
    #[serde(default)]
    pub equals: Option<Value>,
    /// The path must not exist.
    #[serde(default)]
    pub absent: Option<bool>,
    /// Number of resources with this alias (path ignored).
    #[serde(default)]
    pub count: Option<usize>,
}

/// `kind: segment` and `kind: datatype`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMap {
    /// `PID[Patient]`, `CX[Identifier]`.
    pub map: String,
    /// Another map of the same kind and FHIR type whose rules this one starts from: a rule of
    /// this map with the name of one of those replaces it in place, the others follow them.
    #[serde(default)]
    pub extends: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// A rule (or a switch case, which has `is` and may omit `name`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within its map (required on rules, optional on cases).
    #[serde(default)]
    pub name: Option<String>,
    /// Case values (cases only).
    #[serde(default)]
    pub is: Option<Vec<String>>,
    /// Source path.
    #[serde(default)]
    pub from: Option<String>,
    /// Target path.
    #[serde(default)]
    pub to: Option<String>,
    /// Condition.
    #[serde(default)]
    pub when: Option<Value>,
    /// Constant.
    #[serde(default)]
    pub value: Option<Value>,
    /// Datatype map.
    #[serde(default)]
    pub via: Option<String>,
    /// Conversion function.
    #[serde(default, rename = "fn")]
    pub func: Option<String>,
    /// Vocabulary (`Name`, `Name.display`, `Name.system`).
    #[serde(default)]
    pub vocab: Option<String>,
    /// Used when nothing else produced a value.
    #[serde(default)]
    pub default: Option<Value>,
    /// Missing → the resource is not emitted, with an error.
    #[serde(default)]
    pub required: bool,
    /// What a value the condition rejects counts as: `reported` (the default: it stays in the
    /// loss report unless another rule consumes it) or `consumed` (a deliberate choice).
    #[serde(default)]
    pub rejected: Option<String>,
    /// Fields that describe the selected value (its type, its status): consumed with every item
    /// the rule accepts, read in the same segment occurrence.
    #[serde(default)]
    pub consumes: Vec<String>,
    /// A function's further inputs (`fn: end_after, with: [AIP-9, AIP-10]`): paths read in the
    /// rule's context, consumed when the function produces a value.
    #[serde(default)]
    pub with: Vec<String>,
    /// Reference to a resource of this message by alias.
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    /// References to every resource with this alias inside this resource's group instance.
    #[serde(default)]
    pub refs: Option<String>,
    /// Emit a resource from the source value and write a reference to it.
    #[serde(default)]
    pub resource: Option<NestedResource>,
    /// Inline sub-rules building an object at `to`.
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
    /// With `rules`: items whose value at this path is equal build one object together.
    #[serde(default)]
    pub group_by: Option<String>,
    /// With a `from` that selects several items: their texts joined by this separator, written once.
    #[serde(default)]
    pub join: Option<String>,
    /// Switch source.
    #[serde(default)]
    pub switch: Option<String>,
    /// Switch cases.
    #[serde(default)]
    pub cases: Option<Vec<Rule>>,
    /// Free text.
    #[serde(default)]
    pub note: Option<String>,
    /// Set by the loader for a rule that failed schema validation (already reported); skipped.
    #[serde(skip)]
    pub invalid: bool,
}

/// `resource:` inside a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NestedResource {
    /// FHIR type.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Datatype map building it.
    pub map: String,
    /// Relative key paths for its id (default: the whole value).
    #[serde(default)]
    pub key: Vec<String>,
    /// Rules run after the map's, in the rule's context: they may read other fields of the
    /// segment (OBX-24, the address of the OBX-23 organization).
    #[serde(default)]
    pub rules: Vec<Rule>,
}
