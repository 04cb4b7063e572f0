//! The conversion functions a rule can name with `fn:`. Pure, documented, unit-tested. Each
//! takes the source value and returns a JSON value, or an error that says what was wrong (never
//! quoting the value: it may be PHI).

use super::plan::Func;
use crate::fhir::datetime;
use crate::v2::Value as V2;
use jiff::tz::TimeZone;
use serde_json::{Number, Value, json};

/// Output of a function: the value, and for `value[x]` targets the type suffix.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    /// The JSON value.
    pub value: Value,
    /// `Quantity`, `Range`, `Ratio`, `String`, … for choice targets.
    pub choice: Option<&'static str>,
}

fn plain(v: Value, choice: &'static str) -> Produced {
    Produced {
        value: v,
        choice: Some(choice),
    }
}

/// A number that may follow a comparator, as labs send values beyond a measuring range (`<5`,
/// `>= 100`): the comparator (empty for none) and the number's text. An error when the rest is
/// not a decimal number.
pub fn compared(s: &str) -> Result<(&'static str, &str), String> {
    let t = s.trim();
    let (c, rest) = ["<=", ">=", "<", ">"]
        .iter()
        .find_map(|c| t.strip_prefix(c).map(|r| (*c, r.trim_start())))
        .unwrap_or(("", t));
    decimal(rest).map_err(|_| "not a number, nor a comparator and a number".to_string())?;
    Ok((c, rest))
}

/// A FHIR decimal from HL7 NM text: `+1.50` → `1.50`, `.5` → `0.5`; digits kept exactly.
pub fn decimal(s: &str) -> Result<Number, String> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let body = if body.starts_with('.') {
        format!("0{body}")
    } else {
        body.to_string()
    };
    let ok = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().filter(|&b| b == b'.').count() <= 1
        && !body.ends_with('.');
    if !ok {
        return Err("not a decimal number".into());
    }
    // Strip redundant leading zeros ("007" → "7", "00.5" → "0.5"): JSON forbids them.
    let trimmed = body.trim_start_matches('0');
    let body = if trimmed.is_empty() || trimmed.starts_with('.') {
        format!("0{trimmed}")
    } else {
        trimmed.to_string()
    };
    let text = if neg && body.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        format!("-{body}")
    } else {
        body
    };
    text.parse::<Number>()
        .map_err(|_| "not a decimal number".into())
}

/// Text from a message made acceptable as a FHIR `string`: whitespace other than space, tab, CR and
/// LF (no-break space, vertical tab, U+2028…) becomes a space, other control characters are
/// removed, and the ends are trimmed. Borrowed when nothing changes.
pub fn fhir_string(s: &str) -> std::borrow::Cow<'_, str> {
    let t = s.trim();
    let clean =
        |c: char| !(c.is_control() || c.is_whitespace()) || matches!(c, ' ' | '\t' | '\r' | '\n');
    if t.chars().all(clean) {
        return std::borrow::Cow::Borrowed(t);
    }
    let out: String = t
        .chars()
        .filter_map(|c| {
            if clean(c) {
                Some(c)
            } else if c.is_whitespace() {
                Some(' ')
            } else {
                None
            }
        })
        .collect();
    std::borrow::Cow::Owned(out.trim().to_string())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn is_oid(s: &str) -> bool {
    let mut parts = s.split('.');
    matches!(parts.next(), Some("0" | "1" | "2"))
        && s.contains('.')
        && s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Apply `f` to a v2 value. `Ok(None)` means "nothing to write" (empty input).
pub fn apply(f: Func, v: &V2<'_>, zone: &TimeZone) -> Result<Option<Produced>, String> {
    if !v.is_valued() {
        return Ok(None);
    }
    let text = || {
        v.text()
            .map(|t| fhir_string(&t).into_owned())
            .unwrap_or_default()
    };
    let out = match f {
        Func::Text => plain(Value::String(text()), "String"),
        Func::Upper => plain(Value::String(text().to_uppercase()), "String"),
        Func::Lower => plain(Value::String(text().to_lowercase()), "String"),
        Func::Date => plain(
            Value::String(datetime::parse_dtm(&first_component(v))?.to_date()),
            "Date",
        ),
        Func::DateTime => plain(
            Value::String(datetime::parse_dtm(&first_component(v))?.to_datetime(zone)),
            "DateTime",
        ),
        Func::Instant => plain(
            Value::String(datetime::parse_dtm(&first_component(v))?.to_instant(zone)),
            "Instant",
        ),
        Func::Time => plain(
            Value::String(datetime::tm_to_time(&first_component(v))?),
            "Time",
        ),
        Func::Decimal => plain(Value::Number(decimal(&text())?), "Decimal"),
        Func::Comparator => match compared(&text())? {
            ("", _) => return Ok(None),
            (c, _) => plain(Value::String(c.to_string()), "Code"),
        },
        Func::ComparedDecimal => plain(Value::Number(decimal(compared(&text())?.1)?), "Decimal"),
        Func::Integer | Func::PositiveInt | Func::UnsignedInt => {
            let n: i64 = text().parse().map_err(|_| "not an integer".to_string())?;
            let ok = match f {
                Func::PositiveInt => n > 0,
                Func::UnsignedInt => n >= 0,
                _ => i32::try_from(n).is_ok(),
            };
            if !ok {
                return Err("integer out of range".into());
            }
            plain(json!(n), "Integer")
        }
        Func::Boolean => match text().to_ascii_uppercase().as_str() {
            "Y" | "YES" | "T" | "TRUE" | "1" => plain(Value::Bool(true), "Boolean"),
            "N" | "NO" | "F" | "FALSE" | "0" => plain(Value::Bool(false), "Boolean"),
            _ => return Err("not a Y/N boolean".into()),
        },
        Func::Uri => plain(Value::String(uri(text())?), "Uri"),
        Func::Sn => sn(v)?,
        Func::Attachment => attachment(v)?,
        Func::Phone => plain(
            Value::String(phone(v).ok_or("XTN holds no number or address")?),
            "String",
        ),
        Func::Words => {
            let w = words(v);
            if w.is_empty() {
                return Err("the value holds no text".into());
            }
            plain(Value::String(w), "String")
        }
        Func::PersonName => {
            let n = person_name(v);
            if n.is_empty() {
                return Err("the name holds no part to write".into());
            }
            plain(Value::String(n), "String")
        }
        Func::OffsetMinutes => plain(Value::Number(offset_minutes(v)?.into()), "UnsignedInt"),
        Func::TextAttachment => text_attachment(&text()),
        Func::Narrative => narrative(&text()),
        // The loader gives these their `with` inputs, and the evaluator calls `apply_with`.
        Func::EndAfter | Func::StartBefore => {
            return Err("needs the duration (`with`)".into());
        }
    };
    Ok(Some(out))
}

/// Apply `f` to a v2 value and its further inputs (`with`): [`Func::EndAfter`] and
/// [`Func::StartBefore`] move the date/time `v` by the duration `with` gives — one CQ
/// (`50^min&Minutes&ISO`), or a number and its unit (`50`, `min^Minutes^ISO`). `Ok(None)` when
/// `v` or the duration is not sent; an error for a date/time too coarse for the unit (a date
/// and hours), a negative or unreadable number, or an unknown unit.
pub fn apply_with(
    f: Func,
    v: &V2<'_>,
    with: &[V2<'_>],
    zone: &TimeZone,
) -> Result<Option<Produced>, String> {
    let sign = match f {
        Func::EndAfter => 1,
        Func::StartBefore => -1,
        _ => return apply(f, v, zone),
    };
    if !v.is_valued() {
        return Ok(None);
    }
    let (number, unit) = match with {
        [cq] => (cq.component(1), cq.component(2).sub(1)),
        [n, u, ..] => (*n, u.component(1)),
        [] => return Err("needs the duration (`with`)".into()),
    };
    let text = |x: V2<'_>| x.text().map(|t| t.trim().to_string()).unwrap_or_default();
    let (number, unit) = (text(number), text(unit));
    if number.is_empty() {
        return Ok(None);
    }
    let amount: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| "the duration is not a non-negative number".to_string())?;
    let unit = datetime::DurationUnit::parse(&unit)
        .ok_or_else(|| "the duration's unit is not one of s, min, h, d, wk, mo, a".to_string())?;
    let start = datetime::parse_dtm(&first_component(v))?;
    let moved = start.moved(sign as f64 * amount, unit)?;
    Ok(Some(plain(
        Value::String(moved.to_datetime(zone)),
        "DateTime",
    )))
}

/// The functions a `join` rule may apply to the joined text (the loader allows no others).
pub fn joinable(f: Func) -> bool {
    matches!(
        f,
        Func::Text | Func::Upper | Func::Lower | Func::TextAttachment
    )
}

/// The functions a vocabulary may apply to a code it has no row for (`#! unmatched: uri`).
pub fn vocab_fallback(f: Func) -> bool {
    matches!(f, Func::Text | Func::Upper | Func::Lower | Func::Uri)
}

/// An OID as `urn:oid:`, a UUID as `urn:uuid:` (lower case), a URI as is.
fn uri(t: String) -> Result<String, String> {
    if is_oid(&t) {
        Ok(format!("urn:oid:{t}"))
    } else if t.len() == 36
        && t.bytes().filter(|&b| b == b'-').count() == 4
        && t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        Ok(format!("urn:uuid:{}", t.to_ascii_lowercase()))
    } else if t.contains(':') && !t.contains(' ') {
        Ok(t)
    } else {
        Err("not an OID, UUID or URI".into())
    }
}

/// Apply a [`joinable`] or [`vocab_fallback`] function to text already decoded (the joined
/// texts of a `join` rule, a code a vocabulary has no row for).
pub fn apply_str(f: Func, text: &str) -> Result<Option<Produced>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let s = fhir_string(text);
    Ok(Some(match f {
        Func::Text => plain(Value::String(s.into_owned()), "String"),
        Func::Upper => plain(Value::String(s.to_uppercase()), "String"),
        Func::Lower => plain(Value::String(s.to_lowercase()), "String"),
        Func::Uri => plain(Value::String(uri(s.into_owned())?), "Uri"),
        Func::TextAttachment => text_attachment(text),
        _ => return Err(format!("fn {f:?} cannot apply to joined text")),
    }))
}

/// A Narrative holding `text` (escaped for XHTML, line breaks as `<br/>`), marked `additional`:
/// it says more than the structured elements do.
fn narrative(text: &str) -> Produced {
    let mut div = String::from("<div xmlns=\"http://www.w3.org/1999/xhtml\">");
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            div.push_str("<br/>");
        }
        for c in line.chars() {
            match c {
                '<' => div.push_str("&lt;"),
                '>' => div.push_str("&gt;"),
                '&' => div.push_str("&amp;"),
                '"' => div.push_str("&quot;"),
                c => div.push(c),
            }
        }
    }
    div.push_str("</div>");
    plain(json!({ "status": "additional", "div": div }), "Narrative")
}

fn text_attachment(text: &str) -> Produced {
    Produced {
        value: json!({
            "contentType": "text/plain; charset=utf-8",
            "data": base64(text.as_bytes()),
        }),
        choice: Some("Attachment"),
    }
}

/// The decoded texts of a value's leaves (repetitions, components, subcomponents), empty ones
/// skipped, joined by single spaces.
fn words(v: &V2<'_>) -> String {
    fn walk(v: &V2<'_>, out: &mut String) {
        if v.has_children() {
            for c in v.children() {
                walk(&c, out);
            }
        } else if let Some(t) = v.text() {
            let t = fhir_string(&t);
            if !t.is_empty() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&t);
            }
        }
    }
    let mut out = String::new();
    walk(v, &mut out);
    out
}

/// Part `(component, subcomponent)` of `v` (subcomponent 0: the whole component).
pub fn part<'a>(v: &V2<'a>, (c, s): (usize, usize)) -> V2<'a> {
    if s == 0 {
        v.component(c)
    } else {
        v.component(c).sub(s)
    }
}

/// The parts of a value a function reads, `(component, subcomponent)` (0: the whole component),
/// for the functions that read only some of them; `None`: the whole value.
pub fn reads(f: Func) -> Option<&'static [(usize, usize)]> {
    match f {
        Func::PersonName => Some(&PERSON_NAME_PARTS),
        Func::OffsetMinutes => Some(&OFFSET_PARTS),
        _ => None,
    }
}

/// The parts of an RPT that [`offset_minutes`] reads: the offset (RPT.9) and its unit's code
/// (RPT.10.1).
const OFFSET_PARTS: [(usize, usize); 2] = [(9, 0), (10, 1)];

/// An RPT's event offset (RPT.9, a number, in the unit RPT.10.1 names) in whole minutes: `120^s`
/// is 2, `1^hr` 60. An error for a unit other than seconds, minutes, hours, days or weeks, a
/// negative or fractional number, or seconds that make no whole minute.
fn offset_minutes(v: &V2<'_>) -> Result<u64, String> {
    let text = |at| {
        part(v, at)
            .text()
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    };
    let (q, unit) = (text(OFFSET_PARTS[0]), text(OFFSET_PARTS[1]));
    if q.is_empty() {
        return Err("no event offset (RPT.9)".into());
    }
    let n: u64 = q
        .parse()
        .map_err(|_| "the event offset (RPT.9) is not a whole, non-negative number".to_string())?;
    let per_minute_or_seconds = match unit.as_str() {
        "s" | "S" | "sec" | "second" | "seconds" => {
            if !n.is_multiple_of(60) {
                return Err("an event offset in seconds that is no whole number of minutes".into());
            }
            return Ok(n / 60);
        }
        "min" | "MIN" | "minute" | "minutes" => 1,
        "h" | "H" | "hr" | "Hr" | "HR" | "hour" | "hours" => 60,
        "d" | "D" | "day" | "days" => 1440,
        "wk" | "WK" | "week" | "weeks" => 10080,
        _ => return Err("the event offset's unit (RPT.10) is not one of s, min, h, d, wk".into()),
    };
    n.checked_mul(per_minute_or_seconds)
        .ok_or_else(|| "the event offset is too large".to_string())
}

/// The components of an XPN that [`person_name`] reads (`(component, subcomponent)`, 0: the
/// whole component): family name (FN.1), given, middle, suffix, prefix, degree, assembly order.
pub const PERSON_NAME_PARTS: [(usize, usize); 7] =
    [(1, 1), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (11, 0)];

/// An XPN as one string, as the IG's XPN[string] map has it: the parts joined by spaces in the
/// order XPN.11 (table 0444) gives — `G` or none: prefix, given, middle, family, suffix, degree;
/// `F`: prefix, family, given, middle, suffix, degree.
fn person_name(v: &V2<'_>) -> String {
    let family_first = v.component(11).text().is_some_and(|t| t.trim() == "F");
    let order: [(usize, usize); 6] = if family_first {
        [(5, 0), (1, 1), (2, 0), (3, 0), (4, 0), (6, 0)]
    } else {
        [(5, 0), (2, 0), (3, 0), (1, 1), (4, 0), (6, 0)]
    };
    let mut out = String::new();
    for at in order {
        let w = words(&part(v, at));
        if !w.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&w);
        }
    }
    out
}

/// The text of the first component (TS/DTM fields carry a precision in component 2 before v2.6).
fn first_component(v: &V2<'_>) -> String {
    let c = if v.has_children() { v.child(1) } else { *v };
    c.text().map(|t| t.trim().to_string()).unwrap_or_default()
}

/// XTN → one string: the e-mail address (XTN.4) for Internet/X.400 equipment; else the
/// unformatted number (XTN.12), else the legacy formatted number (XTN.1), else
/// +country (area) local ext. composed from XTN.5–8, else the e-mail address.
fn phone(v: &V2<'_>) -> Option<String> {
    let part = |n: usize| {
        v.child(n)
            .text()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    if matches!(part(3).as_deref(), Some("Internet" | "X.400"))
        && let Some(e) = part(4)
    {
        return Some(e);
    }
    if let Some(u) = part(12) {
        return Some(u);
    }
    if let Some(t) = part(1) {
        return Some(t);
    }
    if let Some(local) = part(7) {
        let mut out = String::new();
        if let Some(c) = part(5) {
            out.push('+');
            out.push_str(c.trim_start_matches('+'));
            out.push(' ');
        }
        if let Some(a) = part(6) {
            out.push_str(&format!("({a}) "));
        }
        out.push_str(&local);
        if let Some(x) = part(8) {
            out.push_str(&format!(" ext. {x}"));
        }
        return Some(out);
    }
    part(4)
}

/// SN (structured numeric): comparator ^ num1 ^ separator/suffix ^ num2.
fn sn(v: &V2<'_>) -> Result<Produced, String> {
    let part = |n: usize| {
        v.child(n)
            .text()
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    };
    let (cmp, n1, sep, n2) = (part(1), part(2), part(3), part(4));
    let q =
        |s: &str| -> Result<Value, String> { Ok(json!({ "value": Value::Number(decimal(s)?) })) };
    match sep.as_str() {
        "" if !n1.is_empty() => {
            let mut quantity = q(&n1)?;
            if !cmp.is_empty() {
                let c = match cmp.as_str() {
                    "<" | "<=" | ">" | ">=" => cmp.clone(),
                    "=" => String::new(),
                    _ => return Err("SN comparator is not <, <=, >, >= or =".into()),
                };
                if !c.is_empty() {
                    quantity["comparator"] = Value::String(c);
                }
            }
            Ok(plain(quantity, "Quantity"))
        }
        "-" if !n1.is_empty() && !n2.is_empty() => {
            Ok(plain(json!({ "low": q(&n1)?, "high": q(&n2)? }), "Range"))
        }
        ":" | "/" if !n1.is_empty() && !n2.is_empty() => Ok(plain(
            json!({ "numerator": q(&n1)?, "denominator": q(&n2)? }),
            "Ratio",
        )),
        "+" if !n1.is_empty() => Ok(plain(Value::String(format!("{cmp}{n1}+")), "String")),
        _ => Err("SN value does not follow comparator^num1^separator^num2".into()),
    }
}

/// ED: source ^ type ^ subtype ^ encoding ^ data → Attachment.
fn attachment(v: &V2<'_>) -> Result<Produced, String> {
    let part = |n: usize| {
        v.child(n)
            .text()
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    };
    let (ty, subtype, enc) = (
        part(2).to_ascii_lowercase(),
        part(3).to_ascii_lowercase(),
        part(4).to_ascii_uppercase(),
    );
    let raw = v
        .child(5)
        .text()
        .map(|t| t.into_owned())
        .unwrap_or_default();
    let data = match enc.as_str() {
        "BASE64" => raw.split_whitespace().collect::<String>(),
        "A" | "" => base64(raw.as_bytes()),
        "HEX" => {
            let clean: String = raw.split_whitespace().collect();
            if !clean.len().is_multiple_of(2) || !clean.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("ED data declared Hex is not hexadecimal".into());
            }
            let bytes: Vec<u8> = (0..clean.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&clean[i..i + 2], 16).ok())
                .collect();
            base64(&bytes)
        }
        _ => return Err("ED encoding is not Base64, A or Hex".into()),
    };
    let mut a = serde_json::Map::new();
    let mime = |t: &str| match t {
        "text" | "tx" => Some("text"),
        "ap" | "application" => Some("application"),
        "image" | "im" => Some("image"),
        "audio" | "au" => Some("audio"),
        "video" => Some("video"),
        "multipart" => Some("multipart"),
        _ => None,
    };
    if let Some(major) = mime(&ty) {
        let minor = match subtype.as_str() {
            "" => "octet-stream".to_string(),
            "pdf" => "pdf".into(),
            "rtf" => "rtf".into(),
            "jpeg" | "jpg" => "jpeg".into(),
            s => s.to_string(),
        };
        a.insert(
            "contentType".into(),
            Value::String(format!("{major}/{minor}")),
        );
    }
    if !data.is_empty() {
        a.insert("data".into(), Value::String(data));
    }
    if a.is_empty() {
        return Err("ED value holds no data".into());
    }
    Ok(plain(Value::Object(a), "Attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(text: &str) -> (Vec<u8>, usize) {
        let msg = format!("MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.5\rOBX|1|ST|X||{text}\r");
        (msg.into_bytes(), 0)
    }

    fn run(f: Func, text: &str) -> Result<Option<Produced>, String> {
        let (bytes, _) = val(text);
        let p = crate::v2::parse(&bytes).map_err(|e| e.to_string())?;
        let m = &p.messages[0];
        let v = m.segment(1).map(|s| s.field(5).rep(1)).ok_or("no OBX")?;
        apply(f, &v, &TimeZone::UTC)
    }

    /// `end_after` / `start_before`: OBX-5 the date/time, OBX-6 and OBX-7 the `with` inputs.
    fn run_with(f: Func, at: &str, with: &[&str]) -> Result<Option<Value>, String> {
        let fields = with.join("|");
        let msg = format!("MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.5\rOBX|1|ST|X||{at}|{fields}\r");
        let p = crate::v2::parse(msg.as_bytes()).map_err(|e| e.to_string())?;
        let seg = p.messages[0].segment(1).ok_or("no OBX")?;
        let args: Vec<V2<'_>> = (0..with.len()).map(|i| seg.field(6 + i).rep(1)).collect();
        let v = seg.field(5).rep(1);
        apply_with(f, &v, &args, &TimeZone::UTC).map(|o| o.map(|p| p.value))
    }

    #[test]
    fn durations_move_dates_and_times() {
        let ok: &[(Func, &str, &[&str], &str)] = &[
            // A number and its unit (AIx-7/8); the offset and the precision sent are kept.
            (
                Func::EndAfter,
                "20210924093000+0215",
                &["50", "min^Minutes^ISO"],
                "2021-09-24T10:20:00+02:15",
            ),
            (
                Func::EndAfter,
                "202109240930",
                &["2", "h"],
                "2021-09-24T11:30:00Z",
            ),
            (
                Func::EndAfter,
                "2021092423",
                &["90", "MIN"],
                "2021-09-25T00:30:00Z",
            ),
            (
                Func::EndAfter,
                "2021092423",
                &["1.5", "hr"],
                "2021-09-25T00:30:00Z",
            ),
            // A CQ (TQ1-6): the unit is its second component's code.
            (Func::EndAfter, "20210924", &["3^d&day&ISO+"], "2021-09-27"),
            (Func::EndAfter, "20210131", &["1^mo"], "2021-02-28"),
            (Func::EndAfter, "20200229", &["1^a"], "2021-02-28"),
            (Func::EndAfter, "20211230", &["1^wk"], "2022-01-06"),
            (
                Func::StartBefore,
                "20210924103000",
                &["30^s"],
                "2021-09-24T10:29:30Z",
            ),
            (Func::StartBefore, "20210301", &["1^d"], "2021-02-28"),
        ];
        for (f, at, with, want) in ok {
            assert_eq!(
                run_with(*f, at, with),
                Ok(Some(json!(want))),
                "{f:?} {at} {with:?}"
            );
        }
        // Nothing to move, or no duration: nothing written, no error.
        assert_eq!(run_with(Func::EndAfter, "", &["50", "min"]), Ok(None));
        assert_eq!(run_with(Func::EndAfter, "20210924", &["", "min"]), Ok(None));
        for (at, with) in [
            ("20210924", &["50", "min"][..]), // a date moved by minutes
            ("202109", &["1", "d"][..]),      // no day
            ("20210924", &["-1", "d"][..]),   // negative
            ("20210924", &["1.5", "d"][..]),  // a fractional day
            ("20210924", &["1", "fortnight"][..]),
            ("20210924", &["x", "d"][..]),
            ("202109240930", &["0.001", "s"][..]),
            ("99991231", &["1", "a"][..]), // out of range
        ] {
            assert!(
                run_with(Func::EndAfter, at, with).is_err(),
                "{at} {with:?}: {:?}",
                run_with(Func::EndAfter, at, with)
            );
        }
    }

    #[test]
    fn table() {
        let cases: &[(Func, &str, Option<Value>)] = &[
            (
                Func::Decimal,
                "98.10",
                Some(serde_json::from_str("98.10").expect("n")),
            ),
            (
                Func::Decimal,
                "+007.50",
                Some(serde_json::from_str("7.50").expect("n")),
            ),
            (
                Func::Decimal,
                ".5",
                Some(serde_json::from_str("0.5").expect("n")),
            ),
            (Func::Decimal, "-0", Some(json!(0))),
            (Func::Decimal, "1.2.3", None),
            (Func::Integer, "42", Some(json!(42))),
            (Func::PositiveInt, "0", None),
            (Func::Boolean, "Y", Some(json!(true))),
            (Func::Boolean, "n", Some(json!(false))),
            (Func::Boolean, "maybe", None),
            (Func::Date, "19800102", Some(json!("1980-01-02"))),
            (Func::Date, "198001", Some(json!("1980-01"))),
            (
                Func::DateTime,
                "198001021230",
                Some(json!("1980-01-02T12:30:00Z")),
            ),
            (Func::DateTime, "19800102", Some(json!("1980-01-02"))),
            (Func::DateTime, "20240101^M", Some(json!("2024-01-01"))),
            (Func::Time, "1230", Some(json!("12:30:00"))),
            (
                Func::Uri,
                "2.16.840.1.113883.6.1",
                Some(json!("urn:oid:2.16.840.1.113883.6.1")),
            ),
            (
                Func::Uri,
                "http://loinc.org",
                Some(json!("http://loinc.org")),
            ),
            (Func::Uri, "LN", None),
            (Func::Upper, "abc", Some(json!("ABC"))),
            (
                Func::Phone,
                "(555)555-1234^PRN^PH",
                Some(json!("(555)555-1234")),
            ),
            (Func::Phone, "^NET^Internet^a@b.org", Some(json!("a@b.org"))),
            (
                Func::Phone,
                "555^^CP^^^^^^^^^5551234",
                Some(json!("5551234")),
            ),
            (
                Func::Phone,
                "^PRN^PH^^1^919^5551234^22",
                Some(json!("+1 (919) 5551234 ext. 22")),
            ),
            (Func::Phone, "^PRN^PH", None),
            (Func::Words, "Smith^John^^Dr", Some(json!("Smith John Dr"))),
            (
                Func::Words,
                "Main St&12^^Springfield",
                Some(json!("Main St 12 Springfield")),
            ),
            (Func::Words, "plain text", Some(json!("plain text"))),
            (Func::Words, "^^", None),
            (
                Func::PersonName,
                "Smith&van der^Anna^L^Jr^Dr^PhD",
                Some(json!("Dr Anna L Smith Jr PhD")),
            ),
            (
                Func::PersonName,
                "Wang^Li^^^^^^^^^F",
                Some(json!("Wang Li")),
            ),
            (
                Func::PersonName,
                "SMITH^Angela^L",
                Some(json!("Angela L SMITH")),
            ),
            (Func::PersonName, "^^^^^^L", None),
            (
                Func::OffsetMinutes,
                "Once^^^^1^d^^AC^1^hr&Hour&ANS+",
                Some(json!(60)),
            ),
            (
                Func::OffsetMinutes,
                "P^HD^^^12^min^^PC^120^s",
                Some(json!(2)),
            ),
            (Func::OffsetMinutes, "P^^^^^^^PC^90^s", None),
            (Func::OffsetMinutes, "P^^^^^^^PC^2^d", Some(json!(2880))),
            (Func::OffsetMinutes, "P^^^^^^^PC^-5^min", None),
            (Func::OffsetMinutes, "P^^^^^^^PC^5^mo", None),
            (Func::OffsetMinutes, "P^^^^^^^PC", None),
            (Func::Comparator, "<5", Some(json!("<"))),
            (Func::Comparator, ">= 100", Some(json!(">="))),
            (Func::Comparator, "7.0", None),
            (Func::Comparator, "<high", None),
            (Func::ComparedDecimal, "<5", Some(json!(5))),
            (
                Func::ComparedDecimal,
                "<= 0.50",
                Some(serde_json::from_str("0.50").expect("n")),
            ),
            (Func::ComparedDecimal, "+12", Some(json!(12))),
            (Func::ComparedDecimal, "5.0 H", None),
            (Func::ComparedDecimal, "12,5", None),
            (Func::ComparedDecimal, "<>5", None),
            (
                Func::Narrative,
                "Chest pain <2h & fever",
                Some(json!({
                    "status": "additional",
                    "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Chest pain &lt;2h &amp; fever</div>"
                })),
            ),
        ];
        for (f, input, want) in cases {
            let got = run(*f, input);
            match (got, want) {
                (Ok(Some(p)), Some(w)) => assert_eq!(&p.value, w, "{f:?} {input}"),
                // Nothing produced: refused with a reason, or (separators only) nothing there.
                (Err(_), None) | (Ok(None), None) => {}
                (g, w) => panic!("{f:?} {input}: got {g:?}, want {w:?}"),
            }
        }
        assert_eq!(run(Func::Text, "").expect("empty"), None);
    }

    #[test]
    fn strings_are_normalized_for_fhir() {
        assert_eq!(fhir_string(" plain "), "plain");
        assert_eq!(fhir_string("no\u{a0}break"), "no break");
        assert_eq!(fhir_string("tab\tand\nline"), "tab\tand\nline");
        assert_eq!(fhir_string("bell\u{7}x\u{b}y\u{2028}z"), "bellx y z");
        assert!(matches!(
            fhir_string("clean"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn joined_text_and_text_attachments() {
        let p = apply_str(Func::TextAttachment, "line 1\n\nline 3")
            .expect("ok")
            .expect("some");
        assert_eq!(p.choice, Some("Attachment"));
        assert_eq!(
            p.value,
            json!({"contentType": "text/plain; charset=utf-8", "data": base64(b"line 1\n\nline 3")})
        );
        assert_eq!(
            apply_str(Func::Upper, " a b ")
                .expect("ok")
                .map(|p| p.value),
            Some(json!("A B"))
        );
        assert_eq!(
            apply_str(Func::Text, "").expect("ok").map(|p| p.value),
            None
        );
        assert!(apply_str(Func::Date, "20240101").is_err());
        assert!(!joinable(Func::Date) && joinable(Func::TextAttachment));
        // One value: its decoded text (escapes included) in the attachment.
        let p = run(Func::TextAttachment, "Plan:\\.br\\rest")
            .expect("ok")
            .expect("some");
        assert_eq!(p.value["data"], base64(b"Plan:\nrest"));
    }

    #[test]
    fn structured_numeric() {
        let cases: &[(&str, &str, Value)] = &[
            ("^182", "Quantity", json!({"value": 182})),
            (">^10", "Quantity", json!({"value": 10, "comparator": ">"})),
            (
                "^10^-^20",
                "Range",
                json!({"low": {"value": 10}, "high": {"value": 20}}),
            ),
            (
                "^1^:^128",
                "Ratio",
                json!({"numerator": {"value": 1}, "denominator": {"value": 128}}),
            ),
            ("^2^+", "String", json!("2+")),
        ];
        for (input, choice, want) in cases {
            let p = run(Func::Sn, input).expect("ok").expect("some");
            assert_eq!(p.choice, Some(*choice), "{input}");
            assert_eq!(&p.value, want, "{input}");
        }
        assert!(run(Func::Sn, "abc^x").is_err());
    }

    #[test]
    fn attachments_and_base64() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let p = run(Func::Attachment, "LAB^AP^PDF^Base64^JVBERi0=")
            .expect("ok")
            .expect("some");
        assert_eq!(
            p.value,
            json!({"contentType": "application/pdf", "data": "JVBERi0="})
        );
        let p = run(Func::Attachment, "^TEXT^^A^hello")
            .expect("ok")
            .expect("some");
        assert_eq!(
            p.value,
            json!({"contentType": "text/octet-stream", "data": "aGVsbG8="})
        );
    }
}
