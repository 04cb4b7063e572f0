//! FHIR search: the supported search parameters (R4 definitions), the index rows a resource
//! contributes to them, and the parsing of search requests into a [`query::SearchQuery`].
//!
//! Pure: no I/O. The store writes the rows of [`index`] next to each resource version and turns a
//! `SearchQuery` into SQL.

pub mod query;

use serde_json::Value;

/// Search parameter types supported here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `system|code` against Coding, CodeableConcept, Identifier, ContactPoint, code.
    Token,
    /// Case-insensitive prefix (default), `:exact`, `:contains`.
    String,
    /// Ranges with `eq ne lt gt le ge`.
    Date,
    /// `Type/id` or a bare id.
    Reference,
    /// `[prefix]number[|system|code]`.
    Quantity,
}

impl Kind {
    /// The R4 name of the type (CapabilityStatement).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Token => "token",
            Kind::String => "string",
            Kind::Date => "date",
            Kind::Reference => "reference",
            Kind::Quantity => "quantity",
        }
    }
}

/// One search parameter of one resource type.
#[derive(Debug)]
pub struct Param {
    /// Resource type.
    pub resource: &'static str,
    /// Parameter name (`birthdate`).
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Elements searched (top-level element, then sub-elements), alternatives for choice types.
    pub paths: &'static [&'static str],
    /// Reference parameters: only references to this type.
    pub target: Option<&'static str>,
    /// The index key its rows are stored under. Reference parameters use the key of the element
    /// (`Observation.subject`): every reference of a resource is indexed by its element, so
    /// `_include`, `_revinclude` and `$everything` see them all.
    pub key: &'static str,
}

macro_rules! p {
    ($res:literal, $name:literal, $kind:ident, [$($path:literal),+]) => {
        Param { resource: $res, name: $name, kind: Kind::$kind, paths: &[$($path),+], target: None,
                key: concat!($res, ".", $name) }
    };
    ($res:literal, $name:literal, Reference, $elem:literal, $target:expr) => {
        Param { resource: $res, name: $name, kind: Kind::Reference, paths: &[$elem], target: $target,
                key: concat!($res, ".", $elem) }
    };
}

/// Every supported search parameter besides `_id` and `_lastUpdated` (which every type has).
pub static PARAMS: &[Param] = &[
    p!("Patient", "identifier", Token, ["identifier"]),
    p!("Patient", "name", String, ["name"]),
    p!("Patient", "family", String, ["name.family"]),
    p!("Patient", "given", String, ["name.given"]),
    p!("Patient", "birthdate", Date, ["birthDate"]),
    p!("Patient", "gender", Token, ["gender"]),
    p!(
        "Patient",
        "address-postalcode",
        String,
        ["address.postalCode"]
    ),
    p!("Patient", "telecom", Token, ["telecom"]),
    p!(
        "Encounter",
        "patient",
        Reference,
        "subject",
        Some("Patient")
    ),
    p!("Encounter", "subject", Reference, "subject", None),
    p!("Encounter", "date", Date, ["period"]),
    p!("Encounter", "status", Token, ["status"]),
    p!("Encounter", "class", Token, ["class"]),
    p!("Encounter", "identifier", Token, ["identifier"]),
    p!(
        "Observation",
        "patient",
        Reference,
        "subject",
        Some("Patient")
    ),
    p!("Observation", "subject", Reference, "subject", None),
    p!("Observation", "code", Token, ["code"]),
    p!("Observation", "category", Token, ["category"]),
    p!(
        "Observation",
        "date",
        Date,
        ["effectiveDateTime", "effectivePeriod", "effectiveInstant"]
    ),
    p!("Observation", "status", Token, ["status"]),
    p!("Observation", "value-quantity", Quantity, ["valueQuantity"]),
    p!("Observation", "encounter", Reference, "encounter", None),
    p!(
        "Immunization",
        "patient",
        Reference,
        "patient",
        Some("Patient")
    ),
    p!("Immunization", "date", Date, ["occurrenceDateTime"]),
    p!("Immunization", "vaccine-code", Token, ["vaccineCode"]),
    p!("Immunization", "status", Token, ["status"]),
    p!(
        "DiagnosticReport",
        "patient",
        Reference,
        "subject",
        Some("Patient")
    ),
    p!("DiagnosticReport", "subject", Reference, "subject", None),
    p!("DiagnosticReport", "code", Token, ["code"]),
    p!(
        "DiagnosticReport",
        "date",
        Date,
        ["effectiveDateTime", "effectivePeriod"]
    ),
    p!(
        "DocumentReference",
        "patient",
        Reference,
        "subject",
        Some("Patient")
    ),
    p!("DocumentReference", "subject", Reference, "subject", None),
    p!("DocumentReference", "type", Token, ["type"]),
    p!("DocumentReference", "date", Date, ["date"]),
    p!("DocumentReference", "status", Token, ["status"]),
    p!(
        "DocumentReference",
        "identifier",
        Token,
        ["masterIdentifier", "identifier"]
    ),
    p!(
        "Appointment",
        "patient",
        Reference,
        "participant",
        Some("Patient")
    ),
    p!("Appointment", "actor", Reference, "participant", None),
    p!("Appointment", "date", Date, ["start"]),
    p!("Appointment", "status", Token, ["status"]),
    p!("Appointment", "identifier", Token, ["identifier"]),
    p!("Appointment", "service-type", Token, ["serviceType"]),
    p!(
        "MedicationRequest",
        "patient",
        Reference,
        "subject",
        Some("Patient")
    ),
    p!("MedicationRequest", "subject", Reference, "subject", None),
    p!(
        "MedicationRequest",
        "code",
        Token,
        ["medicationCodeableConcept"]
    ),
    // A compound order names a Medication (its code is then searched through the chain
    // `medication.code`; R4's `code` reads only medicationCodeableConcept).
    p!(
        "MedicationRequest",
        "medication",
        Reference,
        "medicationReference",
        Some("Medication")
    ),
    p!("Medication", "code", Token, ["code"]),
    p!("Medication", "form", Token, ["form"]),
    p!("MedicationRequest", "status", Token, ["status"]),
    p!("MedicationRequest", "intent", Token, ["intent"]),
    p!("MedicationRequest", "authoredon", Date, ["authoredOn"]),
    p!("MedicationRequest", "identifier", Token, ["identifier"]),
    p!(
        "MedicationDispense",
        "patient",
        Reference,
        "subject",
        Some("Patient")
    ),
    p!("MedicationDispense", "subject", Reference, "subject", None),
    p!(
        "MedicationDispense",
        "prescription",
        Reference,
        "authorizingPrescription",
        None
    ),
    p!(
        "MedicationDispense",
        "code",
        Token,
        ["medicationCodeableConcept"]
    ),
    p!("MedicationDispense", "status", Token, ["status"]),
    p!(
        "MedicationDispense",
        "whenhandedover",
        Date,
        ["whenHandedOver"]
    ),
    p!("MedicationDispense", "identifier", Token, ["identifier"]),
    p!(
        "ChargeItem",
        "patient",
        Reference,
        "subject",
        Some("Patient")
    ),
    p!("ChargeItem", "subject", Reference, "subject", None),
    p!("ChargeItem", "code", Token, ["code"]),
    p!("ChargeItem", "identifier", Token, ["identifier"]),
    p!(
        "ChargeItem",
        "occurrence",
        Date,
        ["occurrenceDateTime", "occurrencePeriod"]
    ),
    p!("ChargeItem", "entered-date", Date, ["enteredDate"]),
    p!("ChargeItem", "account", Reference, "account", None),
];

/// The parameter `name` of `resource`.
pub fn param(resource: &str, name: &str) -> Option<&'static Param> {
    PARAMS
        .iter()
        .find(|p| p.resource == resource && p.name == name)
}

/// Parameters of one resource type.
pub fn params_of(resource: &str) -> impl Iterator<Item = &'static Param> + '_ {
    PARAMS.iter().filter(move |p| p.resource == resource)
}

/// Index rows of one resource (all keys; see [`Param::key`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexRows {
    /// `(key, system, code)`; a missing system is `""`.
    pub tokens: Vec<(&'static str, String, String)>,
    /// `(key, normalized, exact)`.
    pub strings: Vec<(&'static str, String, String)>,
    /// `(key, low, high)`: inclusive bounds in µs since the epoch.
    pub dates: Vec<(&'static str, i64, i64)>,
    /// `(key, "Type/id")`, every reference of the resource under `Type.element`.
    pub refs: Vec<(String, String)>,
    /// `(key, value, system, code)`.
    pub quantities: Vec<(&'static str, f64, String, String)>,
}

/// Normalization of string parameters: lower case (R4: "case- and accent-insensitive"; accents
/// are kept, see ARCHITECTURE.md).
pub fn normalize(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Values at a dotted path, arrays flattened at each step.
fn at<'a>(v: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let Some(next) = v.get(head) else { return };
    let mut visit = |item: &'a Value| match rest {
        Some(r) => at(item, r, out),
        None => out.push(item),
    };
    match next {
        Value::Array(a) => a.iter().for_each(&mut visit),
        other => visit(other),
    }
}

fn str_of(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("").to_string()
}

/// `Type/id` of a reference string: relative (`Patient/1`), absolute (`…/Patient/1`) or with a
/// version (`Patient/1/_history/2`). `None` for contained (`#x`), `urn:` and malformed ones.
pub fn reference_key(reference: &str) -> Option<String> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let r = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let mut parts = r.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    let type_ok = ty.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphanumeric());
    if id.is_empty() || !type_ok {
        return None;
    }
    // Usually the reference is already `Type/id`: its text is the key.
    if r.len() == ty.len() + 1 + id.len() {
        return Some(r.to_string());
    }
    Some(format!("{ty}/{id}"))
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        // One pass over the members (no lookup by key): a `reference` string is a target, any
        // other member may hold references deeper down.
        Value::Object(m) => {
            for (k, child) in m {
                if k == "reference" {
                    if let Some(key) = child.as_str().and_then(reference_key) {
                        out.push(key);
                    }
                } else {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// The index rows of a resource.
pub fn index(resource: &Value) -> IndexRows {
    let mut rows = IndexRows::default();
    let Some(ty) = resource.get("resourceType").and_then(Value::as_str) else {
        return rows;
    };
    // MessageHeader points at everything a message produced and Provenance at the same again:
    // indexing those would double the reference rows of every message for no search anyone
    // makes. A Provenance keeps its Patient targets (it is in the patient's compartment).
    let refs_wanted = |target: &str| match ty {
        "MessageHeader" => false,
        "Provenance" => target.starts_with("Patient/"),
        _ => true,
    };
    if let Some(obj) = resource.as_object() {
        for (elem, v) in obj {
            if matches!(
                elem.as_str(),
                "resourceType" | "id" | "meta" | "text" | "contained"
            ) {
                continue;
            }
            let mut found = Vec::new();
            collect_refs(v, &mut found);
            if found.is_empty() {
                continue;
            }
            found.sort();
            found.dedup();
            let key = [ty, ".", elem.as_str()].concat();
            for target in found.into_iter().filter(|t| refs_wanted(t)) {
                rows.refs.push((key.clone(), target));
            }
        }
    }
    for p in params_of(ty) {
        if p.kind == Kind::Reference {
            continue;
        }
        let mut values = Vec::new();
        for path in p.paths {
            at(resource, path, &mut values);
        }
        for v in values {
            match p.kind {
                Kind::Token => tokens(p.key, v, &mut rows.tokens),
                Kind::String => strings(p.key, v, &mut rows.strings),
                Kind::Date => {
                    if let Some((lo, hi)) = date_value(v) {
                        rows.dates.push((p.key, lo, hi));
                    }
                }
                Kind::Quantity => {
                    if let Some(n) = v.get("value").and_then(Value::as_f64) {
                        let code = v
                            .get("code")
                            .or_else(|| v.get("unit"))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        rows.quantities
                            .push((p.key, n, str_of(v.get("system")), code.to_string()));
                    }
                }
                Kind::Reference => {}
            }
        }
    }
    // The index tables' primary keys need each row once.
    rows.tokens.sort();
    rows.tokens.dedup();
    rows.strings.sort();
    rows.strings.dedup();
    rows.dates.sort();
    rows.dates.dedup();
    rows.quantities.sort_by(|a, b| {
        (a.0, &a.2, &a.3)
            .cmp(&(b.0, &b.2, &b.3))
            .then(a.1.total_cmp(&b.1))
    });
    rows.quantities
        .dedup_by(|a, b| a.0 == b.0 && a.1.to_bits() == b.1.to_bits() && a.2 == b.2 && a.3 == b.3);
    rows
}

fn tokens(key: &'static str, v: &Value, out: &mut Vec<(&'static str, String, String)>) {
    match v {
        Value::String(s) => out.push((key, String::new(), s.clone())),
        Value::Bool(b) => out.push((key, String::new(), b.to_string())),
        Value::Object(m) => {
            if let Some(Value::Array(codings)) = m.get("coding") {
                for c in codings {
                    if let Some(code) = c.get("code").and_then(Value::as_str) {
                        out.push((key, str_of(c.get("system")), code.to_string()));
                    }
                }
            } else if let Some(code) = m.get("code").and_then(Value::as_str) {
                out.push((key, str_of(m.get("system")), code.to_string()));
            } else if let Some(value) = m.get("value").and_then(Value::as_str) {
                // Identifier (system|value) and ContactPoint (phone|value).
                out.push((key, str_of(m.get("system")), value.to_string()));
            }
        }
        _ => {}
    }
}

fn strings(key: &'static str, v: &Value, out: &mut Vec<(&'static str, String, String)>) {
    let mut push = |s: &str| {
        if !s.trim().is_empty() {
            out.push((key, normalize(s), s.to_string()));
        }
    };
    match v {
        Value::String(s) => push(s),
        Value::Object(m) => {
            // HumanName and Address: every string part.
            for part in [
                "text",
                "family",
                "given",
                "prefix",
                "suffix",
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
            ] {
                match m.get(part) {
                    Some(Value::String(s)) => push(s),
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).for_each(&mut push),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn date_value(v: &Value) -> Option<(i64, i64)> {
    match v {
        Value::String(s) => parse_date_range(s).ok(),
        Value::Object(m) => {
            let lo = match m.get("start").and_then(Value::as_str) {
                Some(s) => parse_date_range(s).ok()?.0,
                None => i64::MIN,
            };
            let hi = match m.get("end").and_then(Value::as_str) {
                Some(s) => parse_date_range(s).ok()?.1,
                None => i64::MAX,
            };
            if lo == i64::MIN && hi == i64::MAX {
                None
            } else {
                Some((lo, hi))
            }
        }
        _ => None,
    }
}

/// The range a FHIR `date`, `dateTime` or `instant` (or a search value in the same syntax)
/// covers, as inclusive µs bounds: `2024` is the whole year, `2024-03-05T10:00:00+01:00` one
/// second. Values without an offset are taken as UTC.
pub fn parse_date_range(s: &str) -> Result<(i64, i64), String> {
    use jiff::civil::{Date, DateTime, Time};
    use jiff::tz::Offset;
    use jiff::{Span, ToSpan};
    let s = s.trim();
    let bad = || format!("'{s}' is not a FHIR date, dateTime or instant");
    if !s.is_ascii() || s.len() < 4 {
        return Err(bad());
    }
    let num = |a: usize, b: usize| -> Result<i32, String> {
        let t = s.get(a..b).ok_or_else(bad)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse::<i32>().map_err(|_| bad())
    };
    let year = num(0, 4)?;
    let (month, day, step): (i32, i32, Span) = match s.len() {
        4 => (1, 1, 1.year()),
        7 if &s[4..5] == "-" => (num(5, 7)?, 1, 1.month()),
        10 if &s[4..5] == "-" && &s[7..8] == "-" => (num(5, 7)?, num(8, 10)?, 1.day()),
        n if n > 10 && &s[4..5] == "-" && &s[7..8] == "-" && &s[10..11] == "T" => {
            (num(5, 7)?, num(8, 10)?, Span::new())
        }
        _ => return Err(bad()),
    };
    let date = Date::new(year as i16, month as i8, day as i8).map_err(|_| bad())?;
    if step.is_zero() {
        // Time part: hh:mm[:ss[.fff]] then Z or ±hh:mm.
        let rest = &s[11..];
        let (time_part, zone) = match rest.find(['Z', '+', '-']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let offset = match zone {
            "" | "Z" => Offset::UTC,
            z if z.len() == 6 && &z[3..4] == ":" => {
                let h: i8 = z[1..3].parse().map_err(|_| bad())?;
                let m: i8 = z[4..6].parse().map_err(|_| bad())?;
                let secs =
                    (h as i32 * 3600 + m as i32 * 60) * if z.starts_with('-') { -1 } else { 1 };
                Offset::from_seconds(secs).map_err(|_| bad())?
            }
            _ => return Err(bad()),
        };
        let (hms, frac) = match time_part.split_once('.') {
            Some((a, f)) => (a, Some(f)),
            None => (time_part, None),
        };
        let mut it = hms.split(':');
        let mut field = |max: i8| -> Result<Option<i8>, String> {
            match it.next() {
                None => Ok(None),
                Some(t) if t.len() == 2 && t.bytes().all(|c| c.is_ascii_digit()) => {
                    let n: i8 = t.parse().map_err(|_| bad())?;
                    if n > max { Err(bad()) } else { Ok(Some(n)) }
                }
                Some(_) => Err(bad()),
            }
        };
        let h = field(23)?.ok_or_else(bad)?;
        let m = field(59)?.ok_or_else(bad)?;
        let sec = field(60)?;
        let (nanos, len_ns): (i32, i64) = match frac {
            Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) => {
                let scale = 10i64.pow(9 - f.len() as u32);
                (f.parse::<i32>().map_err(|_| bad())? * scale as i32, scale)
            }
            Some(_) => return Err(bad()),
            None if sec.is_some() => (0, 1_000_000_000),
            None => (0, 60_000_000_000),
        };
        let dt = DateTime::from_parts(
            date,
            Time::new(h, m, sec.unwrap_or(0).min(59), nanos).map_err(|_| bad())?,
        );
        let ts = offset.to_timestamp(dt).map_err(|_| bad())?;
        let lo = ts.as_microsecond();
        let hi = lo + (len_ns / 1000).max(1) - 1;
        return Ok((lo, hi));
    }
    let start = date.to_datetime(Time::midnight());
    let end = start.checked_add(step).map_err(|_| bad())?;
    let lo = Offset::UTC.to_timestamp(start).map_err(|_| bad())?;
    let hi = Offset::UTC.to_timestamp(end).map_err(|_| bad())?;
    Ok((lo.as_microsecond(), hi.as_microsecond() - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn us(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>()
            .map(|t| t.as_microsecond())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn date_ranges() {
        let cases: &[(&str, &str, &str)] = &[
            ("2024", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            ("2024-02", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
            ("2024-02-29", "2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z"),
            (
                "2024-02-29T10:15+01:00",
                "2024-02-29T09:15:00Z",
                "2024-02-29T09:16:00Z",
            ),
            (
                "2024-02-29T10:15:30-05:00",
                "2024-02-29T15:15:30Z",
                "2024-02-29T15:15:31Z",
            ),
            (
                "2024-02-29T10:15:30.25Z",
                "2024-02-29T10:15:30.25Z",
                "2024-02-29T10:15:30.26Z",
            ),
            ("1890-07-04", "1890-07-04T00:00:00Z", "1890-07-05T00:00:00Z"),
        ];
        for (input, lo, hi_excl) in cases {
            assert_eq!(
                parse_date_range(input),
                Ok((us(lo), us(hi_excl) - 1)),
                "{input}"
            );
        }
        for bad in [
            "",
            "20",
            "2024-13",
            "2024-02-30",
            "24-01-01",
            "2024/01/01",
            "2024-01-01T25:00Z",
            "2024-01-01T10:00+0100",
            "2024-01-01Tx",
            "ünï",
        ] {
            assert!(parse_date_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references() {
        for (r, want) in [
            ("Patient/1", Some("Patient/1")),
            ("http://x/fhir/Patient/ab-1", Some("Patient/ab-1")),
            ("Patient/1/_history/3", Some("Patient/1")),
            ("#contained", None),
            ("urn:uuid:1234", None),
            ("1234", None),
            ("patient/1", None),
        ] {
            assert_eq!(reference_key(r).as_deref(), want, "{r}");
        }
    }

    #[test]
    fn patient_rows() {
        let p = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:mrn", "value": "M1"}, {"value": "X"}],
            "name": [{"family": "Doe", "given": ["Jane", "Q"]}],
            "gender": "female", "birthDate": "1980-05",
            "telecom": [{"system": "phone", "value": "555"}],
            "address": [{"postalCode": "12345", "city": "Town"}],
            "managingOrganization": {"reference": "Organization/o1"},
            "generalPractitioner": [{"reference": "Practitioner/d1"}, {"reference": "Practitioner/d1"}]});
        let rows = index(&p);
        assert!(
            rows.tokens
                .contains(&("Patient.identifier", "urn:mrn".into(), "M1".into()))
        );
        assert!(
            rows.tokens
                .contains(&("Patient.identifier", "".into(), "X".into()))
        );
        assert!(
            rows.tokens
                .contains(&("Patient.gender", "".into(), "female".into()))
        );
        assert!(
            rows.tokens
                .contains(&("Patient.telecom", "phone".into(), "555".into()))
        );
        assert!(
            rows.strings
                .contains(&("Patient.family", "doe".into(), "Doe".into()))
        );
        assert!(
            rows.strings
                .contains(&("Patient.name", "jane".into(), "Jane".into()))
        );
        assert!(
            rows.strings
                .contains(&("Patient.given", "q".into(), "Q".into()))
        );
        assert!(rows.strings.contains(&(
            "Patient.address-postalcode",
            "12345".into(),
            "12345".into()
        )));
        assert_eq!(
            rows.dates,
            vec![(
                "Patient.birthdate",
                us("1980-05-01T00:00:00Z"),
                us("1980-06-01T00:00:00Z") - 1
            )]
        );
        assert_eq!(
            rows.refs,
            vec![
                (
                    "Patient.managingOrganization".to_string(),
                    "Organization/o1".to_string()
                ),
                (
                    "Patient.generalPractitioner".to_string(),
                    "Practitioner/d1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn observation_rows() {
        let o = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": "2024-01-02T03:04:05Z"},
            "valueQuantity": {"value": 13.5, "system": "http://unitsofmeasure.org", "code": "g/dL"}});
        let rows = index(&o);
        assert!(rows.tokens.contains(&(
            "Observation.code",
            "http://loinc.org".into(),
            "718-7".into()
        )));
        assert_eq!(
            rows.dates,
            vec![("Observation.date", us("2024-01-02T03:04:05Z"), i64::MAX)]
        );
        assert_eq!(
            rows.quantities,
            vec![(
                "Observation.value-quantity",
                13.5,
                "http://unitsofmeasure.org".into(),
                "g/dL".into()
            )]
        );
        assert_eq!(
            rows.refs,
            vec![("Observation.subject".into(), "Patient/p1".into())]
        );
    }
}
