//! Conformance against Microsoft FHIR-Converter's expected output for the 121 message pairs in
//! `tests/corpus/fhir-converter/`: compares *facts* (identifiers, names, dates as instants, codes,
//! values, statuses…), not ids or formatting. Prints agreement per message type and resource type
//! and fails under the floors below (raise them as the maps improve). Differences that remain, and
//! why, are listed in `docs/conformance.md`.

mod common;

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use v2fhir::mapping::eval::{self, ConvertOptions};

/// Minimum agreement per resource type (fraction of expected facts we reproduce).
/// Measured 2026-11-30: Patient 93.5%, Encounter 95.8%, Observation 85.8% (ACC and PDA since
/// 2026-11-30; 73.8% before), Immunization 88.2%, DiagnosticReport 50.7% (the results of DFT
/// orders, REF documents and ORU's patient observations since 2026-11-30; 38.5% before) (see docs/conformance.md for what remains; target:
/// 95%), and of the
/// companions RelatedPerson 90.9% (the mother from PID-21 since 2026-11-30; 82.2% before),
/// Condition 90.8% and ServiceRequest 53.6% (every order of an OMG/OML message since the
/// grouping lookahead of 2026-11-30; 86.2% and 51.0% before), Procedure 54.5% (PDA's death
/// certification and autopsy; 44.3% before).
const FLOORS: &[(&str, f64)] = &[
    ("Patient", 0.93),
    ("Encounter", 0.95),
    ("Observation", 0.86),
    ("Immunization", 0.85),
    ("DiagnosticReport", 0.50),
    ("RelatedPerson", 0.98),
    ("Condition", 0.93),
    ("ServiceRequest", 0.68),
    ("Procedure", 0.65),
    ("Coverage", 0.99),
    ("Account", 0.96),
    ("AllergyIntolerance", 0.99),
];

/// Minimum agreement on the facts no deviation rule explains (see `Deviation`): keeps the rules
/// honest — a map that regresses cannot hide behind them, and a rule that explained too much
/// would show as a jump here. Measured 2026-11-30: Patient 99.8%, Encounter 99.9%, Observation
/// 100% (components compared since the repeating OBX-5 of 2026-11-30; 99.4% before),
/// Immunization 100%, DiagnosticReport 96.9%; 2026-12-01: Procedure 100% (charges' procedure
/// codes explained; 70.7% before), ServiceRequest 86.6% (status by the IG's order control map,
/// parent orders, scheduled services and filler-order intents explained; 67.5% before),
/// Condition 100% (the cause of death explained; 93.1% before).
const FLOORS_REST: &[(&str, f64)] = &[
    ("Patient", 0.99),
    ("Encounter", 0.99),
    ("Observation", 0.995),
    ("Immunization", 1.0),
    ("DiagnosticReport", 0.96),
    ("Procedure", 0.99),
    ("ServiceRequest", 0.86),
    ("Condition", 0.99),
];

/// Which elements are facts, per resource type (dotted paths, arrays flattened).
const FACT_PATHS: &[(&str, &[&str])] = &[
    (
        "Account",
        &["identifier.value", "identifier.type.coding", "status"],
    ),
    (
        "Patient",
        &[
            "identifier.value",
            "name.family",
            "name.given",
            "birthDate",
            "gender",
            "address.line",
            "address.city",
            "address.state",
            "address.postalCode",
            "address.country",
            "telecom.value",
            "maritalStatus.coding",
            "communication.language.coding",
            "deceasedDateTime",
            "deceasedBoolean",
            "multipleBirthBoolean",
            "multipleBirthInteger",
        ],
    ),
    (
        "Encounter",
        &[
            "status",
            "class",
            "type.coding",
            "period.start",
            "period.end",
            "identifier.value",
            "hospitalization.admitSource.coding",
            "hospitalization.dischargeDisposition.coding",
            "hospitalization.reAdmission.coding",
            "participant.type.coding",
            "reasonCode.coding",
        ],
    ),
    (
        "Observation",
        &[
            "status",
            "code.coding",
            "valueQuantity.value",
            "valueQuantity.unit",
            "valueString",
            "valueCodeableConcept.coding",
            "valueDateTime",
            "component.valueQuantity.value",
            "component.valueQuantity.unit",
            "component.valueString",
            "effectiveDateTime",
            "interpretation.coding",
            "method.coding",
            "issued",
        ],
    ),
    (
        "Immunization",
        &[
            "status",
            "vaccineCode.coding",
            "occurrenceDateTime",
            "doseQuantity.value",
            "doseQuantity.unit",
            "lotNumber",
            "expirationDate",
            "route.coding",
            "site.coding",
            "statusReason.coding",
            "reportOrigin.coding",
            "primarySource",
        ],
    ),
    (
        "DiagnosticReport",
        &[
            "status",
            "code.coding",
            "effectiveDateTime",
            "issued",
            "identifier.value",
            "category.coding",
            "conclusion",
        ],
    ),
    (
        "AllergyIntolerance",
        &[
            "code.coding",
            "category",
            "criticality",
            "onsetDateTime",
            "reaction.manifestation.text",
        ],
    ),
    (
        "Condition",
        &["code.coding", "onsetDateTime", "recordedDate"],
    ),
    ("Procedure", &["status", "code.coding", "performedDateTime"]),
    (
        "Coverage",
        &["status", "subscriberId", "period.start", "period.end"],
    ),
    (
        "RelatedPerson",
        &[
            "name.family",
            "name.given",
            "relationship.coding",
            "telecom.value",
            "gender",
            "birthDate",
        ],
    ),
    (
        "ServiceRequest",
        &[
            "status",
            "intent",
            "code.coding",
            "identifier.value",
            "authoredOn",
        ],
    ),
    (
        "Specimen",
        &[
            "type.coding",
            "collection.collectedDateTime",
            "receivedTime",
        ],
    ),
];

#[derive(Debug, Clone, PartialEq)]
struct Fact {
    key: String,
    value: String,
    /// Coding system, when the fact is a coding.
    system: Option<String>,
}

/// Date-times with a time part become UTC instants (the expected files shift offsets to +05:30).
fn file_name(p: &std::path::Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn normalize(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let s = s.trim();
            if s.len() >= 16 && s.as_bytes().get(10) == Some(&b'T') {
                if let Ok(ts) = s.parse::<jiff::Timestamp>() {
                    return ts.to_string();
                }
                // No offset (FHIR-Converter sometimes omits it): compare the wall time.
                if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
                    return dt.to_string();
                }
            }
            s.to_string()
        }
        Value::Number(n) => n
            .as_f64()
            .map(|f| format!("{f}"))
            .unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn collect(v: &Value, path: &[&str], key: &str, out: &mut Vec<Fact>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| collect(x, path, key, out)),
        _ if path.is_empty() => {
            if let Some(code) = v.get("code").filter(|_| v.is_object()) {
                // A Coding.
                let system = v.get("system").and_then(Value::as_str).map(str::to_string);
                out.push(Fact {
                    key: key.to_string(),
                    value: normalize(code),
                    system,
                });
            } else if !v.is_object() {
                out.push(Fact {
                    key: key.to_string(),
                    value: normalize(v),
                    system: None,
                });
            }
        }
        Value::Object(m) => {
            if let Some(next) = m.get(path[0]) {
                collect(next, &path[1..], key, out);
            }
        }
        _ => {}
    }
}

fn facts(resource: &Value) -> Vec<Fact> {
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = Vec::new();
    if let Some((_, paths)) = FACT_PATHS.iter().find(|(t, _)| *t == rt) {
        for p in *paths {
            let parts: Vec<&str> = p.split('.').collect();
            collect(resource, &parts, p, &mut out);
        }
    }
    out
}

fn placeholder_system(s: &Option<String>) -> bool {
    s.as_deref()
        .is_none_or(|s| s.starts_with("http://example.com/"))
}

/// The expected facts not found among ours, and ours not among the expected (each fact used at
/// most once).
fn unmatched<'a, 'b>(expected: &'a [Fact], ours: &'b [Fact]) -> (Vec<&'a Fact>, Vec<&'b Fact>) {
    let mut used = vec![false; ours.len()];
    let mut missing = Vec::new();
    for e in expected {
        let hit = ours.iter().enumerate().position(|(i, o)| {
            !used[i]
                && o.key == e.key
                && o.value == e.value
                && (placeholder_system(&e.system) || o.system == e.system)
        });
        match hit {
            Some(i) => used[i] = true,
            None => missing.push(e),
        }
    }
    let extra = ours
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(o, _)| o)
        .collect();
    (missing, extra)
}

/// How many expected facts are found among ours (each of ours used at most once).
fn matched(expected: &[Fact], ours: &[Fact]) -> usize {
    expected.len() - unmatched(expected, ours).0.len()
}

/// A missing fact that FHIR-Converter should not have produced, by a rule checked against the
/// message itself. Each reason is a section of docs/conformance.md; what no rule explains stays
/// "unexplained" in the report.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Deviation {
    /// A code found nowhere in the message, under FHIR-Converter's own `example.com` system.
    InventedCode,
    /// A value that still holds v2 delimiters (`&`, `^`): undecoded components.
    RawDelimiters,
    /// The insured's IN2 data on the patient, where IN1-17 says the insured is someone else.
    InsuredOnPatient,
    /// A guarantor's (GT1) or consenter's (CON) data merged into the patient.
    OtherPersonOnPatient,
    /// `unknown` for OBX-11 `S`/`I`, which the IG maps to preliminary/registered.
    PartialStatus,
    /// A report's status `unknown` where the message states one (OBR-25, or OBX-11 of a
    /// document OBX).
    StatedReportStatus,
    /// RXA-9 `00` (new record): primarySource, no reportOrigin (IG RXA[Immunization]).
    NewRecordOrigin,
    /// RXA-6 `999`: amount unknown (CDC IIS guide), not a dose of 999.
    UnknownDose,
    /// A DiagnosticReport from an order message (IG: ServiceRequest).
    OrderAsReport,
    /// A DiagnosticReport from a document message (IG MDM_T02: DocumentReference).
    DocumentAsReport,
    /// `in-progress` for a pre-admitted patient (PV1-2 `P`), where we write `planned`.
    PreAdmit,
    /// A status other than `finished` for a visit whose discharge date (PV1-45) is sent.
    Discharged,
    /// The visit of a prior result (OMG/OML PRIOR_RESULT), which the IG maps nowhere.
    PriorResultVisit,
    /// An observation of a prior result (OMG/OML PRIOR_RESULT), which the IG maps nowhere.
    PriorResultObservation,
    /// PDA-3 (death certified) as an Observation; we record the certification as a Procedure.
    DeathCertification,
    /// An ED/RP OBX sent with an order as an Observation; it is a DocumentReference.
    OrderDocument,
    /// A Procedure made of a charge's procedure code (FT1-25): a charge bills a procedure, it
    /// does not record one (we write a ChargeItem; PR1 segments are our Procedures).
    ChargeAsProcedure,
    /// The placer group number (ORC-4) as an identifier of the order; the IG makes it the
    /// ServiceRequest's `requisition`, as we do.
    GroupNumberAsIdentifier,
    /// The parent order (ORC-8) as a ServiceRequest of its own; the IG's ORC[ServiceRequest] makes
    /// it the order's `basedOn`, a reference by identifier, as we do.
    ParentOrder,
    /// Intent `filler-order` for the orders of results and schedules; the IG's ORC[ServiceRequest]
    /// and OBR[ServiceRequest] give every order the intent `order`, as we do.
    FillerOrderIntent,
    /// A ServiceRequest of a scheduled service (AIS); we make the service the Appointment's
    /// `serviceType` (IG SCH/AIS[Appointment]), the IG's AIS[ServiceRequest] giving such a
    /// request neither the status nor the intent R4 requires.
    ServiceAsRequest,
    /// The cause of death (PDA-1) as a Condition; we record it as VRDR does, an Observation of
    /// the cause of death (LOINC 69453-9) whose value is the cause.
    DeathCauseAsCondition,
}

impl Deviation {
    fn label(self) -> &'static str {
        match self {
            Deviation::InventedCode => "code invented by FHIR-Converter",
            Deviation::RawDelimiters => "value with undecoded v2 delimiters",
            Deviation::InsuredOnPatient => "insured person's IN2 data on the patient",
            Deviation::OtherPersonOnPatient => "guarantor's or consenter's data on the patient",
            Deviation::PartialStatus => "OBX-11 S/I as unknown (IG: preliminary/registered)",
            Deviation::StatedReportStatus => "report status unknown though OBR-25/OBX-11 states it",
            Deviation::NewRecordOrigin => "reportOrigin for RXA-9 00 (IG: primarySource)",
            Deviation::UnknownDose => "dose 999 (RXA-6 999 = amount unknown)",
            Deviation::OrderAsReport => "DiagnosticReport from an order message",
            Deviation::DocumentAsReport => "DiagnosticReport from a document (MDM) message",
            Deviation::PreAdmit => "in-progress for a pre-admit (PV1-2 P)",
            Deviation::Discharged => "not finished though PV1-45 (discharge) is sent",
            Deviation::PriorResultVisit => "the visit of a prior result (PRIOR_RESULT)",
            Deviation::PriorResultObservation => "an observation of a prior result (PRIOR_RESULT)",
            Deviation::DeathCertification => "PDA-3 as an Observation (ours: a Procedure)",
            Deviation::OrderDocument => {
                "an order's ED/RP OBX as an Observation (ours: a DocumentReference)"
            }
            Deviation::ChargeAsProcedure => {
                "a charge's procedure code (FT1-25) as a Procedure (ours: a ChargeItem)"
            }
            Deviation::GroupNumberAsIdentifier => {
                "the placer group number (ORC-4) as an identifier (IG: requisition)"
            }
            Deviation::ParentOrder => "the parent order (ORC-8) as a resource (IG: basedOn)",
            Deviation::FillerOrderIntent => "intent filler-order (IG: order)",
            Deviation::DeathCauseAsCondition => {
                "the cause of death (PDA-1) as a Condition (ours: Observation 69453-9)"
            }
            Deviation::ServiceAsRequest => {
                "a scheduled service (AIS) as a ServiceRequest (ours: Appointment.serviceType)"
            }
        }
    }
}

/// The message's segments as fields, for the deviation rules.
struct MessageFacts {
    mtype: String,
    segments: Vec<Vec<String>>,
    /// OBX segments whose OBX-11 is S or I, not yet used to explain a status.
    partial_statuses: usize,
    /// Report statuses the message states (OBR-25; OBX-11 of ED/RP OBX), not yet used.
    stated_report_statuses: usize,
    /// Observation facts (status, value) of an order's ED/RP OBX, not yet used.
    order_document_facts: usize,
    /// Procedure statuses of charges' procedure codes (FT1-25), not yet used.
    charge_procedures: usize,
    /// Status and intent facts of parent orders (ORC-8: two per ORC that sends one), not yet
    /// used.
    parent_order_facts: usize,
    /// Status and intent facts of scheduled services (AIS: two each), not yet used.
    service_request_facts: usize,
}

impl MessageFacts {
    fn new(text: &str, mtype: &str) -> Self {
        let segments: Vec<Vec<String>> = text
            .split(['\r', '\n'])
            .filter(|s| s.len() > 3)
            .map(|s| s.split('|').map(str::to_string).collect())
            .collect();
        let partial_statuses = segments
            .iter()
            .filter(|f| f[0] == "OBX" && matches!(f.get(11).map(String::as_str), Some("S" | "I")))
            .count();
        let stated_report_statuses = segments
            .iter()
            .filter(|f| {
                let valued = |n: usize| f.get(n).is_some_and(|v| !v.is_empty());
                (f[0] == "OBR" && valued(25))
                    || (f[0] == "OBX"
                        && matches!(f.get(2).map(String::as_str), Some("ED" | "RP"))
                        && valued(11))
            })
            .count();
        let order_message = ["OMG^O19", "OML^O21", "RDS^O13"].contains(&mtype);
        let order_document_facts = if order_message {
            2 * segments
                .iter()
                .filter(|f| {
                    f[0] == "OBX" && matches!(f.get(2).map(String::as_str), Some("ED" | "RP"))
                })
                .count()
        } else {
            0
        };
        let charge_procedures = segments
            .iter()
            .filter(|f| f[0] == "FT1" && f.get(25).is_some_and(|v| !v.is_empty()))
            .count();
        let parent_order_facts = 2 * segments
            .iter()
            .filter(|f| f[0] == "ORC" && f.get(8).is_some_and(|v| !v.is_empty()))
            .count();
        let service_request_facts = 2 * segments.iter().filter(|f| f[0] == "AIS").count();
        MessageFacts {
            charge_procedures,
            parent_order_facts,
            service_request_facts,
            mtype: mtype.to_string(),
            segments,
            partial_statuses,
            stated_report_statuses,
            order_document_facts,
        }
    }

    fn field(&self, seg: &str, n: usize) -> impl Iterator<Item = &str> {
        self.segments
            .iter()
            .filter(move |f| f[0] == seg)
            .filter_map(move |f| f.get(n).map(String::as_str))
    }

    /// Whether some `seg`'s field `n` has `value` as its first component (`71045^Xray…^C4`).
    fn first_component_is(&self, seg: &str, n: usize, value: &str) -> bool {
        self.field(seg, n)
            .any(|v| v.split('^').next() == Some(value))
    }

    /// Whether `value` is a whole component or repetition of a field of an OBX in a prior result
    /// of an OMG^O19 or OML^O21: after the message's second PV1 (the first is the patient's
    /// visit; each PRIOR_RESULT starts with one).
    fn in_prior_result_obx(&self, value: &str) -> bool {
        if !["OMG^O19", "OML^O21"].contains(&self.mtype.as_str()) {
            return false;
        }
        let Some(start) = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, f)| f[0] == "PV1")
            .nth(1)
            .map(|(i, _)| i)
        else {
            return false;
        };
        self.segments[start..]
            .iter()
            .filter(|f| f[0] == "OBX")
            .flat_map(|f| f.iter().skip(1))
            .flat_map(|field| field.split(['~', '^', '&']))
            .any(|c| c == value)
    }

    /// Whether `value` is a whole component or subcomponent of some field of a `seg` segment
    /// (any segment when `seg` is empty).
    fn holds(&self, seg: &str, value: &str) -> bool {
        self.segments
            .iter()
            .filter(|f| seg.is_empty() || f[0] == seg)
            .flat_map(|f| f.iter().skip(1))
            .flat_map(|field| field.split(['^', '&', '~']))
            .any(|t| t.trim() == value)
    }

    /// Why FHIR-Converter's fact `f` is not ours. `extra` holds our facts of this resource type
    /// that match none of FHIR-Converter's: a status rule takes the status we wrote instead from
    /// it, so it explains no more facts than we have counterparts for.
    fn explain(
        &mut self,
        rt: &str,
        f: &Fact,
        ours: &[Fact],
        extra: &mut Vec<&Fact>,
    ) -> Option<Deviation> {
        let mut take = |values: &[&str]| -> bool {
            match extra
                .iter()
                .position(|o| o.key == f.key && values.contains(&o.value.as_str()))
            {
                Some(i) => {
                    extra.remove(i);
                    true
                }
                None => false,
            }
        };
        let invented = f
            .system
            .as_deref()
            .is_some_and(|s| s.starts_with("http://example.com/v2-to-fhir-converter/"));
        if f.key.ends_with("coding") && invented && !self.holds("", &f.value) {
            return Some(Deviation::InventedCode);
        }
        if f.value.contains(['&', '^']) {
            return Some(Deviation::RawDelimiters);
        }
        match rt {
            "Patient" => {
                let insured_elsewhere = !self.field("IN1", 17).any(|v| v.starts_with("SEL"));
                // A value PID also holds is the insured's only as a second copy (a second name
                // with the same given name): we have the patient's.
                let ours_too = ours.iter().any(|o| o.key == f.key && o.value == f.value);
                if insured_elsewhere
                    && self.holds("IN2", &f.value)
                    && (!self.holds("PID", &f.value) || ours_too)
                {
                    return Some(Deviation::InsuredOnPatient);
                }
                if (self.holds("GT1", &f.value) || self.holds("CON", &f.value))
                    && !self.holds("PID", &f.value)
                {
                    return Some(Deviation::OtherPersonOnPatient);
                }
                None
            }
            "Observation"
                if f.key == "valueCodeableConcept.coding"
                    && f.system.as_deref()
                        == Some("http://terminology.hl7.org/CodeSystem/v2-0136")
                    && self.field("PDA", 3).any(|v| v == f.value) =>
            {
                Some(Deviation::DeathCertification)
            }
            "Observation"
                if (f.key == "code.coding" || f.key.starts_with("component.value"))
                    && self.in_prior_result_obx(&f.value) =>
            {
                Some(Deviation::PriorResultObservation)
            }
            "Observation" if self.order_document_facts > 0 => {
                let document_code = f.key == "code.coding"
                    && self.segments.iter().any(|s| {
                        s[0] == "OBX"
                            && matches!(s.get(2).map(String::as_str), Some("ED" | "RP"))
                            && s.get(3)
                                .is_some_and(|c| c.split('^').next() == Some(f.value.as_str()))
                    });
                if document_code {
                    return Some(Deviation::OrderDocument);
                }
                if f.key == "status" || f.key.starts_with("value") {
                    self.order_document_facts -= 1;
                    return Some(Deviation::OrderDocument);
                }
                None
            }
            "Observation" if f.key == "status" && f.value == "unknown" => {
                if self.partial_statuses > 0 && take(&["preliminary", "registered"]) {
                    self.partial_statuses -= 1;
                    return Some(Deviation::PartialStatus);
                }
                None
            }
            "Procedure"
                if f.key == "code.coding" && self.first_component_is("FT1", 25, &f.value) =>
            {
                Some(Deviation::ChargeAsProcedure)
            }
            "Procedure"
                if f.key == "status" && f.value == "unknown" && self.charge_procedures > 0 =>
            {
                self.charge_procedures -= 1;
                Some(Deviation::ChargeAsProcedure)
            }
            "ServiceRequest"
                if f.key == "identifier.value" && self.first_component_is("ORC", 4, &f.value) =>
            {
                Some(Deviation::GroupNumberAsIdentifier)
            }
            "ServiceRequest"
                if f.key == "identifier.value"
                    && self
                        .field("ORC", 8)
                        .any(|v| v.split('^').any(|c| c.split('&').next() == Some(&f.value))) =>
            {
                Some(Deviation::ParentOrder)
            }
            "Condition"
                if f.key == "code.coding" && self.first_component_is("PDA", 1, &f.value) =>
            {
                Some(Deviation::DeathCauseAsCondition)
            }
            "ServiceRequest"
                if f.key == "code.coding" && self.first_component_is("AIS", 3, &f.value) =>
            {
                Some(Deviation::ServiceAsRequest)
            }
            "ServiceRequest"
                if (f.key == "status" || f.key == "intent") && self.service_request_facts > 0 =>
            {
                self.service_request_facts -= 1;
                Some(Deviation::ServiceAsRequest)
            }
            "ServiceRequest"
                if f.key == "intent" && f.value == "filler-order" && take(&["order"]) =>
            {
                Some(Deviation::FillerOrderIntent)
            }
            "ServiceRequest"
                if (f.key == "status" || f.key == "intent") && self.parent_order_facts > 0 =>
            {
                self.parent_order_facts -= 1;
                Some(Deviation::ParentOrder)
            }
            "Immunization" if f.key == "reportOrigin.coding" => self
                .field("RXA", 9)
                .any(|v| v.starts_with("00"))
                .then_some(Deviation::NewRecordOrigin),
            "Immunization" if f.key == "doseQuantity.value" && f.value == "999" => self
                .field("RXA", 6)
                .any(|v| v == "999")
                .then_some(Deviation::UnknownDose),
            "DiagnosticReport" if self.mtype.starts_with("MDM^") => {
                Some(Deviation::DocumentAsReport)
            }
            "DiagnosticReport"
                if ["OMG^O19", "OML^O21", "ORM^O01"].contains(&self.mtype.as_str()) =>
            {
                Some(Deviation::OrderAsReport)
            }
            "DiagnosticReport"
                if f.key == "status" && f.value == "unknown" && self.stated_report_statuses > 0 =>
            {
                if take(&[
                    "registered",
                    "partial",
                    "preliminary",
                    "final",
                    "amended",
                    "corrected",
                    "cancelled",
                    "entered-in-error",
                ]) {
                    self.stated_report_statuses -= 1;
                    return Some(Deviation::StatedReportStatus);
                }
                None
            }
            "Encounter"
                if ["OMG^O19", "OML^O21"].contains(&self.mtype.as_str())
                    && self.field("PV1", 1).count() > 1 =>
            {
                Some(Deviation::PriorResultVisit)
            }
            "Encounter"
                if f.key == "status"
                    && self.field("PV1", 45).any(|v| !v.is_empty())
                    && take(&["finished"]) =>
            {
                Some(Deviation::Discharged)
            }
            "Encounter" if f.key == "status" && f.value == "in-progress" => self
                .field("PV1", 2)
                .any(|v| v.starts_with('P'))
                .then_some(Deviation::PreAdmit),
            _ => None,
        }
    }
}

fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.get("resource")).collect())
        .unwrap_or_default()
}

#[derive(Default, Clone, Copy)]
struct Tally {
    expected: usize,
    matched: usize,
    /// Missing facts a deviation rule explains.
    explained: usize,
}

#[test]
fn agreement_with_fhir_converter() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = common::plan();
    let dir = root.join("tests/corpus/fhir-converter");
    let pairs = common::hl7_files(&dir);
    assert_eq!(pairs.len(), 121, "expected the 121 FHIR-Converter pairs");
    let opts = ConvertOptions::default();
    let mut by_type: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_message: BTreeMap<String, HashMap<String, Tally>> = BTreeMap::new();
    let mut unresolved = Vec::new();
    let mut missing: HashMap<String, usize> = HashMap::new();
    let mut deviations: BTreeMap<(String, Deviation), usize> = BTreeMap::new();
    for hl7 in &pairs {
        let json_path = hl7.with_extension("json");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).expect("expected json"))
                .expect("json");
        let bytes = std::fs::read(hl7).expect("hl7");
        let parsed = v2fhir::v2::parse(&bytes).expect("parses");
        let msg = &parsed.messages[0];
        let mtype = msg.header().message_type();
        let conv = eval::convert(&plan, msg, &opts);
        let ours: Vec<&Value> = conv.bundle.as_ref().map(resources).unwrap_or_default();
        // Every reference in our output resolves within the bundle.
        if let Some(b) = &conv.bundle {
            let ids: std::collections::HashSet<String> = ours
                .iter()
                .filter_map(|r| {
                    Some(format!(
                        "{}/{}",
                        r.get("resourceType")?.as_str()?,
                        r.get("id")?.as_str()?
                    ))
                })
                .collect();
            let text = b.to_string();
            for (i, _) in text.match_indices("\"reference\":\"") {
                let rest = &text[i + 13..];
                let end = rest.find('"').unwrap_or(0);
                let r = &rest[..end];
                if !ids.contains(r) {
                    unresolved.push(format!("{}: {r}", hl7.display()));
                }
            }
        }
        let exp_res = resources(&expected);
        let mut message_facts = MessageFacts::new(&String::from_utf8_lossy(&bytes), &mtype);
        for (rt, _) in FACT_PATHS {
            let e: Vec<Fact> = exp_res
                .iter()
                .filter(|r| r["resourceType"] == *rt)
                .flat_map(|r| facts(r))
                .collect();
            if e.is_empty() {
                continue;
            }
            let o: Vec<Fact> = ours
                .iter()
                .filter(|r| r["resourceType"] == *rt)
                .flat_map(|r| facts(r))
                .collect();
            let (missed, mut extra) = unmatched(&e, &o);
            let m = e.len() - missed.len();
            let mut explained = 0;
            for f in &missed {
                if let Some(d) = message_facts.explain(rt, f, &o, &mut extra) {
                    explained += 1;
                    *deviations.entry((rt.to_string(), d)).or_insert(0usize) += 1;
                } else if std::env::var("CONFORMANCE_UNEXPLAINED").is_ok_and(|t| t == *rt) {
                    println!(
                        "UNEXPLAINED {} {rt} {} = {} [{}]",
                        file_name(hl7),
                        f.key,
                        f.value,
                        f.system.as_deref().unwrap_or("")
                    );
                }
            }
            if std::env::var("CONFORMANCE_SUMMARY").is_ok() {
                for f in &e {
                    if matched(std::slice::from_ref(f), &o) == 0 {
                        *missing.entry(format!("{rt} {}", f.key)).or_insert(0usize) += 1;
                    }
                }
            }
            if std::env::var("CONFORMANCE_DEBUG")
                .is_ok_and(|f| hl7.display().to_string().contains(&f))
            {
                for f in &e {
                    if matched(std::slice::from_ref(f), &o) == 0 {
                        println!(
                            "MISSING {} {rt} {} = {} [{}]",
                            file_name(hl7),
                            f.key,
                            f.value,
                            f.system.as_deref().unwrap_or("")
                        );
                    }
                }
                for f in &o {
                    if matched(std::slice::from_ref(f), &e) == 0 {
                        println!(
                            "EXTRA   {} {rt} {} = {} [{}]",
                            file_name(hl7),
                            f.key,
                            f.value,
                            f.system.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            let t = by_type.entry(rt.to_string()).or_default();
            t.expected += e.len();
            t.matched += m;
            t.explained += explained;
            let mt = by_message
                .entry(mtype.clone())
                .or_default()
                .entry(rt.to_string())
                .or_default();
            mt.expected += e.len();
            mt.matched += m;
        }
    }
    println!(
        "\nAgreement with FHIR-Converter's expected output (facts reproduced / facts expected):"
    );
    println!(
        "{:<20} {:>8} {:>8} {:>7} {:>10} {:>11}",
        "resource type", "matched", "expected", "%", "explained", "% of rest"
    );
    for (rt, t) in &by_type {
        println!(
            "{rt:<20} {:>8} {:>8} {:>6.1}% {:>10} {:>10.1}%",
            t.matched,
            t.expected,
            100.0 * t.matched as f64 / t.expected.max(1) as f64,
            t.explained,
            100.0 * t.matched as f64 / (t.expected - t.explained).max(1) as f64
        );
    }
    println!(
        "\n\"explained\": missing facts that FHIR-Converter should not have produced, by a rule checked \
         against the message (docs/conformance.md); \"% of rest\": agreement on the other facts."
    );
    for ((rt, d), n) in &deviations {
        println!("{n:>6}  {rt}: {}", d.label());
    }
    println!("\nBy message type:");
    for (mt, types) in &by_message {
        let (m, e) = types
            .values()
            .fold((0, 0), |(m, e), t| (m + t.matched, e + t.expected));
        println!(
            "{mt:<12} {m:>6} / {e:<6} {:>6.1}%",
            100.0 * m as f64 / e.max(1) as f64
        );
    }
    if !missing.is_empty() {
        let mut v: Vec<_> = missing.into_iter().collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.1));
        println!("\nMost frequent missing facts:");
        for (k, n) in v.iter().take(40) {
            println!("{n:>6}  {k}");
        }
    }
    assert!(
        unresolved.is_empty(),
        "references that do not resolve:\n{}",
        unresolved.join("\n")
    );
    let mut below = Vec::new();
    for (rt, floor) in FLOORS {
        let t = by_type.get(*rt).copied().unwrap_or_default();
        let pct = t.matched as f64 / t.expected.max(1) as f64;
        if pct < *floor {
            below.push(format!(
                "{rt}: {:.1}% < floor {:.1}%",
                pct * 100.0,
                floor * 100.0
            ));
        }
    }
    for (rt, floor) in FLOORS_REST {
        let t = by_type.get(*rt).copied().unwrap_or_default();
        let pct = t.matched as f64 / (t.expected - t.explained).max(1) as f64;
        if pct < *floor {
            below.push(format!(
                "{rt}: {:.1}% of the facts no deviation explains < floor {:.1}%",
                pct * 100.0,
                floor * 100.0
            ));
        }
    }
    assert!(
        below.is_empty(),
        "agreement fell below the floor:\n{}",
        below.join("\n")
    );
}

#[test]
fn every_corpus_message_converts_without_panic_and_every_resource_is_valid_r4() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = common::plan();
    let opts = ConvertOptions::default();
    let mut converted = 0;
    let mut files = Vec::new();
    for dir in std::fs::read_dir(root.join("tests/corpus"))
        .expect("corpus")
        .flatten()
    {
        if dir.path().is_dir() {
            for f in std::fs::read_dir(dir.path()).expect("dir").flatten() {
                let p = f.path();
                if p.extension().is_some_and(|x| x == "hl7" || x == "bad") {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    let mut invalid = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        let Ok(parsed) = v2fhir::v2::parse(&bytes) else {
            continue;
        };
        for m in &parsed.messages {
            let c = eval::convert(&plan, m, &opts);
            if let Some(b) = &c.bundle {
                converted += 1;
                for r in resources(b) {
                    let problems = v2fhir::fhir::validate::validate(r);
                    if !problems.is_empty() {
                        invalid.push(format!("{}: {problems:?}", f.display()));
                    }
                }
                let mut shell = b.clone();
                shell["entry"] = Value::Array(vec![]);
                let problems = v2fhir::fhir::validate::validate(&shell);
                assert!(
                    problems.is_empty(),
                    "{}: Bundle itself invalid: {problems:?}",
                    f.display()
                );
            }
        }
    }
    assert!(converted > 200, "only {converted} messages converted");
    assert!(invalid.is_empty(), "{}", invalid.join("\n"));
}

/// Every message of the FHIR-Converter corpus is accepted (AA): a contentless document OBX or a
/// segment outside the structure is reported (warnings), never a reason to refuse a whole result.
#[test]
fn every_fhir_converter_corpus_message_is_accepted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = common::plan();
    let cfg = v2fhir::ingest::IngestConfig::default();
    let mut refused = Vec::new();
    let mut n = 0;
    for f in common::hl7_files(&root.join("tests/corpus/fhir-converter")) {
        let bytes = std::fs::read(&f).expect("read");
        for p in v2fhir::ingest::prepare(&bytes, v2fhir::ingest::Source::Mllp, &plan, &cfg, 0) {
            n += 1;
            if p.row.status != v2fhir::store::Status::Converted {
                refused.push(format!(
                    "{}: {} {}",
                    f.display(),
                    p.row.status.as_str(),
                    p.row.diagnostics.as_deref().unwrap_or("")
                ));
            }
        }
    }
    assert_eq!(n, 121, "the corpus has 121 messages");
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

/// The deviation rules explain only what they name: each is checked here on a small message
/// against a fact it must explain and one it must not.
#[test]
fn deviation_rules_explain_only_what_they_name() {
    let fact = |key: &str, value: &str, system: Option<&str>| Fact {
        key: key.into(),
        value: value.into(),
        system: system.map(str::to_string),
    };
    let msg = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5.1\r\
               PID|1||MRN1^^^H^MR||DOE^JANE\r\
               PV1|1|P\r\
               OBX|1|NM|1234-5^X^LN||7||||||S\r\
               IN1|1|PLAN|||||||||||||||SPO\r\
               IN2||||||MEDICAID-9\r";
    let mut m = MessageFacts::new(msg, "ADT^A01");
    let fc = "http://example.com/v2-to-fhir-converter/CodeSystem/x";
    let none: Vec<Fact> = Vec::new();
    let mut extra: Vec<&Fact> = Vec::new();
    // A code found nowhere in the message, under FHIR-Converter's system: invented.
    assert_eq!(
        m.explain(
            "Observation",
            &fact("code.coding", "death-certificate", Some(fc)),
            &none,
            &mut extra
        ),
        Some(Deviation::InventedCode)
    );
    // A code the message sends is not invented, whatever the system.
    assert_eq!(
        m.explain(
            "Observation",
            &fact("code.coding", "1234-5", Some(fc)),
            &none,
            &mut extra
        ),
        None
    );
    // The insured's IN2 id on the patient while IN1-17 is SPO: explained; the patient's own MRN not.
    assert_eq!(
        m.explain(
            "Patient",
            &fact("identifier.value", "MEDICAID-9", None),
            &none,
            &mut extra
        ),
        Some(Deviation::InsuredOnPatient)
    );
    let self_insured = msg.replace("|SPO", "|SEL");
    assert_eq!(
        MessageFacts::new(&self_insured, "ADT^A01").explain(
            "Patient",
            &fact("identifier.value", "MEDICAID-9", None),
            &none,
            &mut extra
        ),
        None,
        "the patient is the insured (IN1-17 SEL): IN2 is the patient's"
    );
    assert_eq!(
        m.explain(
            "Patient",
            &fact("identifier.value", "MRN1", None),
            &none,
            &mut extra
        ),
        None
    );
    // OBX-11 S: one `unknown` status is explained, and only paired with our `preliminary`.
    let ours = fact("status", "preliminary", None);
    assert_eq!(
        m.explain(
            "Observation",
            &fact("status", "unknown", None),
            &none,
            &mut extra
        ),
        None,
        "no status of ours to pair with"
    );
    let mut extra = vec![&ours];
    assert_eq!(
        m.explain(
            "Observation",
            &fact("status", "unknown", None),
            &none,
            &mut extra
        ),
        Some(Deviation::PartialStatus)
    );
    assert!(extra.is_empty());
    let mut extra = vec![&ours];
    assert_eq!(
        m.explain(
            "Observation",
            &fact("status", "unknown", None),
            &none,
            &mut extra
        ),
        None,
        "the message has one OBX-11 S only"
    );
    // Pre-admit (PV1-2 P): in-progress explained, other statuses not.
    let mut extra: Vec<&Fact> = Vec::new();
    assert_eq!(
        m.explain(
            "Encounter",
            &fact("status", "in-progress", None),
            &none,
            &mut extra
        ),
        Some(Deviation::PreAdmit)
    );
    assert_eq!(
        m.explain(
            "Encounter",
            &fact("status", "finished", None),
            &none,
            &mut extra
        ),
        None
    );
    // A report in a result message is no order's.
    assert_eq!(
        MessageFacts::new(msg, "ORU^R01").explain(
            "DiagnosticReport",
            &fact("code.coding", "1234-5", None),
            &none,
            &mut extra
        ),
        None
    );
    assert_eq!(
        MessageFacts::new(msg, "ORM^O01").explain(
            "DiagnosticReport",
            &fact("code.coding", "1234-5", None),
            &none,
            &mut extra
        ),
        Some(Deviation::OrderAsReport)
    );
}
