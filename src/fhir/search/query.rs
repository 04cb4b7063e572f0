//! Search requests (`GET /fhir/Observation?patient=…&code=…`) parsed into a [`SearchQuery`]:
//! every parameter checked against the R4 definitions in [`super::PARAMS`], every value parsed.
//! Errors name the parameter and say what is wrong with it.

use super::{Kind, Param, param, parse_date_range, reference_key};

/// Comparison prefix of date and quantity values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// Within the range of the value.
    Eq,
    /// Not within.
    Ne,
    /// Before / less.
    Lt,
    /// After / greater.
    Gt,
    /// `lt` or `eq`.
    Le,
    /// `gt` or `eq`.
    Ge,
}

/// How a string parameter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrMode {
    /// Case-insensitive prefix (the default).
    Prefix,
    /// Exactly, case-sensitive (`:exact`).
    Exact,
    /// Case-insensitive substring (`:contains`).
    Contains,
}

/// One condition on a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `_id`.
    Id(String),
    /// `_lastUpdated` (inclusive µs bounds of the value).
    LastUpdated(Prefix, i64, i64),
    /// Token: `system` `None` = any system, `Some("")` = no system (`|code`); `code` `None` =
    /// any code of the system (`system|`).
    Token {
        /// Index key.
        key: &'static str,
        /// System constraint.
        system: Option<String>,
        /// Code constraint.
        code: Option<String>,
    },
    /// String.
    Str {
        /// Index key.
        key: &'static str,
        /// Match mode.
        mode: StrMode,
        /// Normalized (prefix, contains) or as given (exact).
        value: String,
    },
    /// Date range.
    Date {
        /// Index key.
        key: &'static str,
        /// Prefix.
        prefix: Prefix,
        /// Inclusive bounds of the search value.
        lo: i64,
        /// Inclusive bounds of the search value.
        hi: i64,
    },
    /// Reference to exactly `Type/id`, or to an id of any of `types` (bare ids).
    Ref {
        /// Index key (`Observation.subject`).
        key: &'static str,
        /// `Type/id` candidates.
        targets: Vec<String>,
    },
    /// Chained: the reference at `key` points to a `target_type` resource matching `inner`.
    Chain {
        /// Index key of the reference element.
        key: &'static str,
        /// Type of the referenced resource.
        target_type: String,
        /// Condition on the referenced resource.
        inner: Box<Cond>,
    },
    /// Quantity: the value within `[lo, hi]` per `prefix`, optionally unit system and code.
    Quantity {
        /// Index key.
        key: &'static str,
        /// Prefix.
        prefix: Prefix,
        /// Lower bound of the value's precision range.
        lo: f64,
        /// Upper bound (exclusive) of the value's precision range.
        hi: f64,
        /// Unit system.
        system: Option<String>,
        /// Unit code.
        code: Option<String>,
    },
}

/// Sort order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    /// Date parameter key, or `None` for `_lastUpdated`.
    pub date_key: Option<&'static str>,
    /// Descending.
    pub desc: bool,
}

/// `_include` / `_revinclude`: resources of `source` whose reference at `key` (all when
/// `None`, i.e. `*`) points to a resource of `target` type (any when `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// Resource type holding the reference.
    pub source: String,
    /// Index key of the reference element.
    pub key: Option<&'static str>,
    /// Target type constraint.
    pub target: Option<String>,
}

/// `_summary=text` or `_summary=data` (R4 search, "Summary").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// The narrative, `id`, `meta` and the mandatory elements.
    Text,
    /// Everything but the narrative.
    Data,
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// The resource type searched.
    pub resource: String,
    /// Conditions: all groups must hold; within a group, any (comma-separated values).
    pub and: Vec<Vec<Cond>>,
    /// Page size.
    pub count: u32,
    /// Order (default: insertion order).
    pub sort: Option<Sort>,
    /// `_include`.
    pub include: Vec<Include>,
    /// `_revinclude`.
    pub revinclude: Vec<Include>,
    /// `_summary=count`.
    pub summary_count: bool,
    /// `_summary=text` or `_summary=data`.
    pub summary: Option<Summary>,
    /// `_elements`.
    pub elements: Option<Vec<String>>,
    /// Position after which this page starts (`_page`, from a `next` link): sort value and rid.
    pub after: Option<(i64, i64)>,
    /// Parameters ignored (lenient handling).
    pub ignored: Vec<String>,
}

/// Default and largest page sizes.
pub const DEFAULT_COUNT: u32 = 50;
/// Largest `_count` honoured.
pub const MAX_COUNT: u32 = 1000;

/// Parameters that are not search conditions and are passed through to links.
const RESULT_PARAMS: &[&str] = &[
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_format",
    "_pretty",
    "_total",
    "_page",
];

fn prefix_of(v: &str) -> (Prefix, &str) {
    let p = match v.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("lt") => Prefix::Lt,
        Some("gt") => Prefix::Gt,
        Some("le") => Prefix::Le,
        Some("ge") => Prefix::Ge,
        _ => return (Prefix::Eq, v),
    };
    (p, &v[2..])
}

/// Split on commas not escaped with `\`, unescaping `\,` `\|` `\$` `\\`.
fn split_values(v: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(n);
                }
            }
            ',' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// Split `system|code` at the first unescaped `|`.
fn split_pipe(v: &str) -> Option<(&str, &str)> {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'|' => return Some((&v[..i], &v[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn quantity_range(num: &str) -> Option<(f64, f64)> {
    let v: f64 = num.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    // Precision: half a unit of the last digit given (`5.4` → [5.35, 5.45)).
    let mantissa = num.split(['e', 'E']).next().unwrap_or(num);
    let decimals = mantissa.split_once('.').map(|(_, d)| d.len()).unwrap_or(0);
    let exp: i32 = num
        .split_once(['e', 'E'])
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    let half = 0.5 * 10f64.powi(exp - decimals as i32);
    Some((v - half, v + half))
}

/// Parse one value of parameter `p` (with `modifier`) into a condition.
fn value_cond(p: &'static Param, modifier: Option<&str>, v: &str) -> Result<Cond, String> {
    let name = p.name;
    match p.kind {
        Kind::Token => {
            if let Some(m) = modifier {
                return Err(format!(
                    "modifier ':{m}' is not supported on token parameter '{name}'"
                ));
            }
            let (system, code) = match split_pipe(v) {
                Some((s, c)) => (Some(s.to_string()), c),
                None => (None, v),
            };
            if system.is_none() && code.is_empty() {
                return Err(format!("parameter '{name}' has an empty value"));
            }
            Ok(Cond::Token {
                key: p.key,
                system,
                code: (!code.is_empty()).then(|| code.to_string()),
            })
        }
        Kind::String => {
            let mode = match modifier {
                None => StrMode::Prefix,
                Some("exact") => StrMode::Exact,
                Some("contains") => StrMode::Contains,
                Some(m) => {
                    return Err(format!(
                        "modifier ':{m}' is not supported on string parameter '{name}' (use :exact or :contains)"
                    ));
                }
            };
            if v.trim().is_empty() {
                return Err(format!("parameter '{name}' has an empty value"));
            }
            let value = if mode == StrMode::Exact {
                v.to_string()
            } else {
                super::normalize(v)
            };
            Ok(Cond::Str {
                key: p.key,
                mode,
                value,
            })
        }
        Kind::Date => {
            if let Some(m) = modifier {
                return Err(format!(
                    "modifier ':{m}' is not supported on date parameter '{name}'"
                ));
            }
            let (prefix, rest) = prefix_of(v);
            let (lo, hi) =
                parse_date_range(rest).map_err(|e| format!("parameter '{name}': {e}"))?;
            Ok(Cond::Date {
                key: p.key,
                prefix,
                lo,
                hi,
            })
        }
        Kind::Quantity => {
            if let Some(m) = modifier {
                return Err(format!(
                    "modifier ':{m}' is not supported on quantity parameter '{name}'"
                ));
            }
            let (prefix, rest) = prefix_of(v);
            let mut parts = rest.splitn(3, '|');
            let num = parts.next().unwrap_or("");
            let system = parts.next().filter(|s| !s.is_empty()).map(String::from);
            let code = parts.next().filter(|s| !s.is_empty()).map(String::from);
            let (lo, hi) = quantity_range(num)
                .ok_or_else(|| format!("parameter '{name}': '{num}' is not a number"))?;
            Ok(Cond::Quantity {
                key: p.key,
                prefix,
                lo,
                hi,
                system,
                code,
            })
        }
        Kind::Reference => {
            // `subject:Patient=123` narrows a bare id to one type.
            let ty = match modifier {
                None => p.target,
                Some(m)
                    if m.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                        && m.chars().all(|c| c.is_ascii_alphanumeric()) =>
                {
                    Some(m)
                }
                Some(m) => {
                    return Err(format!(
                        "modifier ':{m}' is not supported on reference parameter '{name}'"
                    ));
                }
            };
            let targets = if v.contains('/') {
                let k = reference_key(v)
                    .ok_or_else(|| format!("parameter '{name}': '{v}' is not a reference"))?;
                if let Some(t) = ty
                    && !k.starts_with(&format!("{t}/"))
                {
                    return Err(format!(
                        "parameter '{name}' refers to {t} resources, not '{v}'"
                    ));
                }
                vec![k]
            } else if v.is_empty() {
                return Err(format!("parameter '{name}' has an empty value"));
            } else {
                match ty {
                    Some(t) => vec![format!("{t}/{v}")],
                    None => REFERENCE_TARGETS
                        .iter()
                        .map(|t| format!("{t}/{v}"))
                        .collect(),
                }
            };
            Ok(Cond::Ref {
                key: p.key,
                targets,
            })
        }
    }
}

/// Types a bare id of an untyped reference parameter (`subject=123`) may name: the types the
/// gateway stores as subjects.
const REFERENCE_TARGETS: &[&str] = &[
    "Patient",
    "Group",
    "Device",
    "Location",
    "Encounter",
    "Practitioner",
    "Organization",
    "RelatedPerson",
];

/// Parse one `name[:modifier][.chain]=value` pair into a condition group (values OR-ed).
fn param_cond(resource: &str, name: &str, value: &str) -> Result<Option<Vec<Cond>>, String> {
    let (head, chain) = match name.split_once('.') {
        Some((h, c)) => (h, Some(c)),
        None => (name, None),
    };
    let (pname, modifier) = match head.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (head, None),
    };
    let values = split_values(value);
    match pname {
        "_id" => {
            return Ok(Some(
                values
                    .into_iter()
                    .filter(|v| !v.is_empty())
                    .map(Cond::Id)
                    .collect(),
            ));
        }
        "_lastUpdated" => {
            return values
                .iter()
                .map(|v| {
                    let (prefix, rest) = prefix_of(v);
                    let (lo, hi) = parse_date_range(rest)
                        .map_err(|e| format!("parameter '_lastUpdated': {e}"))?;
                    Ok(Cond::LastUpdated(prefix, lo, hi))
                })
                .collect::<Result<Vec<_>, String>>()
                .map(Some);
        }
        _ => {}
    }
    let Some(p) = param(resource, pname) else {
        return Ok(None);
    };
    if let Some(chain) = chain {
        if p.kind != Kind::Reference {
            return Err(format!(
                "parameter '{pname}' is not a reference and cannot be chained"
            ));
        }
        let target_type = match (modifier, p.target) {
            (Some(m), _) => m,
            (None, Some(t)) => t,
            (None, None) => {
                return Err(format!(
                    "chained parameter '{name}' needs a target type, e.g. '{pname}:Patient.{chain}'"
                ));
            }
        };
        let inner = param_cond(target_type, chain, value)?.ok_or_else(|| {
            format!("chained parameter '{name}': {target_type} has no search parameter '{chain}'")
        })?;
        return Ok(Some(
            inner
                .into_iter()
                .map(|c| Cond::Chain {
                    key: p.key,
                    target_type: target_type.to_string(),
                    inner: Box::new(c),
                })
                .collect(),
        ));
    }
    values
        .iter()
        .map(|v| value_cond(p, modifier, v))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn include_of(spec: &str, what: &str) -> Result<Include, String> {
    let mut parts = spec.split(':');
    let source = parts.next().unwrap_or("").to_string();
    let pname = parts
        .next()
        .ok_or_else(|| format!("{what} '{spec}' must be Type:parameter[:TargetType]"))?;
    let target = parts.next().map(String::from);
    let key = if pname == "*" {
        None
    } else {
        let p = param(&source, pname)
            .filter(|p| p.kind == Kind::Reference)
            .ok_or_else(|| {
                format!("{what} '{spec}': {source} has no reference parameter '{pname}'")
            })?;
        Some(p.key)
    };
    let target = target.or_else(|| {
        key.and_then(|k| {
            super::PARAMS
                .iter()
                .find(|p| p.key == k && p.name == pname)
                .and_then(|p| p.target.map(String::from))
        })
    });
    Ok(Include {
        source,
        key,
        target,
    })
}

/// Parse a search on `resource` from its parameters (query string and, for `POST _search`, the
/// form body). `strict`: unknown parameters are an error instead of being ignored.
pub fn parse(
    resource: &str,
    pairs: &[(String, String)],
    strict: bool,
) -> Result<SearchQuery, String> {
    let mut q = SearchQuery {
        resource: resource.to_string(),
        and: Vec::new(),
        count: DEFAULT_COUNT,
        sort: None,
        include: Vec::new(),
        revinclude: Vec::new(),
        summary_count: false,
        summary: None,
        elements: None,
        after: None,
        ignored: Vec::new(),
    };
    for (name, value) in pairs {
        match name.as_str() {
            "_count" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| format!("_count '{value}' is not a non-negative integer"))?;
                q.count = n.min(MAX_COUNT);
            }
            "_sort" => {
                let first = value.split(',').next().unwrap_or("");
                let (desc, key) = match first.strip_prefix('-') {
                    Some(k) => (true, k),
                    None => (false, first),
                };
                let date_key = match key {
                    "_lastUpdated" => None,
                    k => match param(resource, k) {
                        Some(p) if p.kind == Kind::Date => Some(p.key),
                        _ => {
                            return Err(format!(
                                "_sort '{key}': only _lastUpdated and date parameters of {resource} can be sorted on"
                            ));
                        }
                    },
                };
                q.sort = Some(Sort { date_key, desc });
            }
            "_include" => q.include.push(include_of(value, "_include")?),
            "_revinclude" => q.revinclude.push(include_of(value, "_revinclude")?),
            "_summary" => match value.as_str() {
                "count" => q.summary_count = true,
                "text" => q.summary = Some(Summary::Text),
                "data" => q.summary = Some(Summary::Data),
                "false" => {}
                other => {
                    // `true` needs each element's isSummary flag, which the R4 JSON Schema
                    // does not carry.
                    if strict {
                        return Err(format!(
                            "_summary '{other}' is not supported (count, text, data, false)"
                        ));
                    }
                    q.ignored.push(format!("_summary={other}"));
                }
            },
            "_elements" => {
                q.elements = Some(
                    value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            "_page" => {
                let (a, b) = value
                    .split_once(',')
                    .ok_or_else(|| format!("_page '{value}' is not a page position"))?;
                q.after = Some((
                    a.parse()
                        .map_err(|_| format!("_page '{value}' is not a page position"))?,
                    b.parse()
                        .map_err(|_| format!("_page '{value}' is not a page position"))?,
                ));
            }
            n if RESULT_PARAMS.contains(&n) => {}
            n => match param_cond(resource, n, value)? {
                Some(group) if !group.is_empty() => q.and.push(group),
                Some(_) => return Err(format!("parameter '{n}' has an empty value")),
                None => {
                    if strict {
                        return Err(format!(
                            "unknown search parameter '{n}' for {resource} (see GET /fhir/metadata)"
                        ));
                    }
                    q.ignored.push(n.to_string());
                }
            },
        }
    }
    Ok(q)
}

/// The parameters to repeat in paging links: everything but `_page`.
pub fn link_params(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter(|(n, _)| n != "_page")
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn tokens_and_strings() {
        let q = parse(
            "Patient",
            &pairs(&[
                ("identifier", "urn:mrn|M1,|X,Y,urn:sys|"),
                ("name:exact", "Doe"),
                ("family", "DO"),
                ("given:contains", "an"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            q.and[0],
            vec![
                Cond::Token {
                    key: "Patient.identifier",
                    system: Some("urn:mrn".into()),
                    code: Some("M1".into())
                },
                Cond::Token {
                    key: "Patient.identifier",
                    system: Some("".into()),
                    code: Some("X".into())
                },
                Cond::Token {
                    key: "Patient.identifier",
                    system: None,
                    code: Some("Y".into())
                },
                Cond::Token {
                    key: "Patient.identifier",
                    system: Some("urn:sys".into()),
                    code: None
                },
            ]
        );
        assert_eq!(
            q.and[1],
            vec![Cond::Str {
                key: "Patient.name",
                mode: StrMode::Exact,
                value: "Doe".into()
            }]
        );
        assert_eq!(
            q.and[2],
            vec![Cond::Str {
                key: "Patient.family",
                mode: StrMode::Prefix,
                value: "do".into()
            }]
        );
        assert_eq!(
            q.and[3],
            vec![Cond::Str {
                key: "Patient.given",
                mode: StrMode::Contains,
                value: "an".into()
            }]
        );
    }

    #[test]
    fn references_and_chains() {
        let q = parse(
            "Observation",
            &pairs(&[
                ("patient", "p1"),
                ("subject", "Patient/p2"),
                ("subject:Patient.identifier", "urn:mrn|M1"),
                ("patient.birthdate", "ge1980"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            q.and[0],
            vec![Cond::Ref {
                key: "Observation.subject",
                targets: vec!["Patient/p1".into()]
            }]
        );
        assert_eq!(
            q.and[1],
            vec![Cond::Ref {
                key: "Observation.subject",
                targets: vec!["Patient/p2".into()]
            }]
        );
        assert!(
            matches!(&q.and[2][0], Cond::Chain { key: "Observation.subject", target_type, inner }
            if target_type == "Patient" && matches!(**inner, Cond::Token { key: "Patient.identifier", .. }))
        );
        assert!(matches!(&q.and[3][0], Cond::Chain { inner, .. }
            if matches!(**inner, Cond::Date { prefix: Prefix::Ge, .. })));
        assert!(parse("Observation", &pairs(&[("patient", "Encounter/e1")]), true).is_err());
        assert!(parse("Observation", &pairs(&[("subject.identifier", "x")]), true).is_err());
    }

    #[test]
    fn dates_quantities_and_results() {
        let q = parse(
            "Observation",
            &pairs(&[
                ("date", "ge2024-01"),
                ("value-quantity", "lt5.4|http://unitsofmeasure.org|mg"),
                ("_count", "5000"),
                ("_sort", "-date"),
                ("_include", "Observation:patient"),
                ("_revinclude", "Observation:*"),
                ("_summary", "count"),
                ("_elements", "status,code"),
                ("_page", "17,42"),
            ]),
            true,
        )
        .unwrap();
        assert!(matches!(
            q.and[0][0],
            Cond::Date {
                prefix: Prefix::Ge,
                ..
            }
        ));
        match &q.and[1][0] {
            Cond::Quantity {
                prefix,
                lo,
                hi,
                system,
                code,
                ..
            } => {
                assert_eq!(*prefix, Prefix::Lt);
                assert!((lo - 5.35).abs() < 1e-9 && (hi - 5.45).abs() < 1e-9);
                assert_eq!(system.as_deref(), Some("http://unitsofmeasure.org"));
                assert_eq!(code.as_deref(), Some("mg"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(q.count, MAX_COUNT);
        assert_eq!(
            q.sort,
            Some(Sort {
                date_key: Some("Observation.date"),
                desc: true
            })
        );
        assert_eq!(
            q.include,
            vec![Include {
                source: "Observation".into(),
                key: Some("Observation.subject"),
                target: Some("Patient".into())
            }]
        );
        assert_eq!(q.revinclude[0].key, None);
        assert!(q.summary_count);
        assert_eq!(q.summary, None);
        assert_eq!(q.elements, Some(vec!["status".into(), "code".into()]));
        assert_eq!(q.after, Some((17, 42)));
    }

    #[test]
    fn errors_name_the_parameter() {
        for (name, value, needle) in [
            ("bogus", "1", "unknown search parameter 'bogus'"),
            ("birthdate", "1980-13", "parameter 'birthdate'"),
            ("gender:text", "x", "modifier ':text'"),
            ("_count", "-1", "_count"),
            ("_sort", "name", "_sort 'name'"),
            ("_include", "Patient:bogus", "_include 'Patient:bogus'"),
            ("identifier", "", "empty value"),
        ] {
            let e = parse("Patient", &pairs(&[(name, value)]), true).unwrap_err();
            assert!(e.contains(needle), "{name}={value}: {e}");
        }
        // Lenient: unknown parameters are ignored and reported.
        let q = parse("Patient", &pairs(&[("bogus", "1")]), false).unwrap();
        assert_eq!(q.ignored, vec!["bogus".to_string()]);
        assert!(q.and.is_empty());
    }
}
