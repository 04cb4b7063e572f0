//! Compact JSON text of a `serde_json::Value`, byte for byte what `serde_json::to_vec` writes,
//! without serde's serializer layers.
//!
//! Every converted message is serialized at least twice (each resource for the store, the
//! Bundle for the log), and `serde_json`'s per-byte escape loop plus its `Serializer` calls were
//! ~9 % of a conversion. Here a string is checked eight bytes at a time for the three things
//! JSON must escape (`"`, `\`, control characters) and copied whole when it has none, which is
//! nearly always. Numbers keep their text (`arbitrary_precision`), keys their insertion order
//! (`preserve_order`). `tests` compare the output with `serde_json`'s on generated values.

use serde_json::Value;

/// Compact JSON of `v`.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, v);
    out
}

/// Compact JSON of `v` as a `String`.
pub fn to_string(v: &Value) -> String {
    let bytes = to_vec(v);
    // Only valid UTF-8 goes in: keys and strings are `str`, the rest is ASCII.
    String::from_utf8(bytes).unwrap_or_default()
}

/// Append the compact JSON of `v` to `out`.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.as_str().as_bytes()),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, x);
            }
            out.push(b'}');
        }
    }
}

/// Append `s` as a JSON string literal, escaped as `serde_json` escapes.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if bytes.len() <= 8 {
        // Short (most keys and codes): one padded word decides.
        let mut word = [b'a'; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        if !needs_escape(u64::from_le_bytes(word)) {
            out.extend_from_slice(bytes);
            out.push(b'"');
            return;
        }
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping; the last word overlaps the one
        // before rather than falling back to bytes.
        if bytes.len() >= 8 {
            let at = i.min(bytes.len() - 8);
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            if !needs_escape(u64::from_le_bytes(word)) {
                i = at + 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc = escape_of(b);
        if esc != 0 {
            out.extend_from_slice(&bytes[start..i]);
            write_escape(out, esc, b);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Does any byte of `x` need escaping (`< 0x20`, `"` or `\`)? Exact: the classic "has a zero
/// byte" test on `x ^ c`, and "has a byte below n" on bytes below 0x80 (a byte ≥ 0x80 is
/// masked out by `!x`).
#[inline]
fn needs_escape(x: u64) -> bool {
    let below_space = x.wrapping_sub(LO * 0x20) & !x & HI;
    let q = x ^ (LO * b'"' as u64);
    let quote = q.wrapping_sub(LO) & !q & HI;
    let bs = x ^ (LO * b'\\' as u64);
    let backslash = bs.wrapping_sub(LO) & !bs & HI;
    (below_space | quote | backslash) != 0
}

/// The escape letter for byte `b`, 0 when it is written as is (`serde_json`'s table).
#[inline]
fn escape_of(b: u8) -> u8 {
    match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0A => b'n',
        0x0C => b'f',
        0x0D => b'r',
        0x00..=0x1F => b'u',
        _ => 0,
    }
}

fn write_escape(out: &mut Vec<u8>, esc: u8, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if esc == b'u' {
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 0xF) as usize],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', esc]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn same_bytes_as_serde_json_on_a_resource() {
        let v = json!({
            "resourceType": "Observation",
            "id": "a\"b\\c",
            "valueQuantity": {"value": serde_json::Number::from_string_unchecked("98.10".into()), "unit": "°F"},
            "note": [{"text": "line 1\nline 2\ttab\u{1}\u{1f}\u{7f} é 😀"}],
            "flags": [true, false, null],
            "empty": {},
            "list": []
        });
        assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap());
        assert!(String::from_utf8(to_vec(&v)).unwrap().contains("98.10"));
    }

    #[test]
    fn every_byte_value_escapes_as_serde_json_does() {
        for b in 0u8..=0x7F {
            for len in [1usize, 7, 8, 9, 17] {
                let mut s = "x".repeat(len);
                s.insert(len / 2, b as char);
                assert_eq!(
                    to_vec(&Value::String(s.clone())),
                    serde_json::to_vec(&Value::String(s)).unwrap(),
                    "byte {b:#x} in a {len}-byte string"
                );
            }
        }
    }

    #[test]
    fn an_escape_at_any_position_of_any_short_length() {
        for len in 1..=40usize {
            for at in 0..len {
                for esc in ['"', '\\', '\n', '\u{1}'] {
                    let mut s: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789ABCD"
                        .chars()
                        .take(len)
                        .collect();
                    s[at] = esc;
                    let s: String = s.into_iter().collect();
                    assert_eq!(
                        to_vec(&Value::String(s.clone())),
                        serde_json::to_vec(&Value::String(s.clone())).unwrap(),
                        "{s:?}"
                    );
                }
            }
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<String>().prop_map(Value::String),
            "[\"\\\\\\x00-\\x1f a-z]{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn matches_serde_json(v in arb_value()) {
            prop_assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap());
        }
    }
}
