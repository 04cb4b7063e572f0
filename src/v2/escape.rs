//! HL7 escape sequences: decoding (`\F\ \S\ \T\ \R\ \E\ \P\ \Xhh..\ \.br\ \H\ \N\ \Cxxyy\ \Mxxyyzz\`)
//! and encoding for output. Decoding is lazy: values without the escape character are borrowed.

use super::charset::Charset;
use super::delims::Delimiters;
use std::borrow::Cow;

/// An escape sequence that could not be decoded; it is kept verbatim in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapeIssue {
    /// Byte offset of the escape character within the (charset-decoded) value.
    pub offset: usize,
    /// What was wrong. Quotes at most the first 12 characters of the sequence.
    pub message: String,
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn preview(seq: &str) -> String {
    seq.chars().take(12).collect()
}

/// ISO 2022 designations that `encoding_rs`' ISO-2022-JP decoder understands.
fn is_jis_designation(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [0x28, 0x42] | [0x28, 0x4A] | [0x28, 0x49] | [0x24, 0x40] | [0x24, 0x42]
    )
}

/// Decode escape sequences in `text` (already charset-decoded). `charset` decodes the bytes of
/// `\Xhh..\`. Issues are reported through `issue`; unknown sequences stay verbatim.
pub fn decode<'t>(
    text: Cow<'t, str>,
    delims: &Delimiters,
    charset: Charset,
    issue: &mut dyn FnMut(EscapeIssue),
) -> Cow<'t, str> {
    let Some(esc) = delims.escape else {
        return text;
    };
    if super::model::find_byte(esc, text.as_bytes()).is_none() {
        return text;
    }
    let s: &str = &text;
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let Some(rel) = memchr::memchr(esc, &s.as_bytes()[i..]) else {
            out.push_str(&s[i..]);
            break;
        };
        let start = i + rel;
        out.push_str(&s[i..start]);
        let Some(close_rel) = memchr::memchr(esc, &s.as_bytes()[start + 1..]) else {
            issue(EscapeIssue {
                offset: start,
                message: format!(
                    "unterminated escape sequence starting '{}'; kept verbatim",
                    preview(&s[start..])
                ),
            });
            out.push_str(&s[start..]);
            break;
        };
        let close = start + 1 + close_rel;
        let seq = &s[start + 1..close];
        let mut next = close + 1;
        let push_delim = |out: &mut String, d: Option<u8>| -> bool {
            match d {
                Some(b) => {
                    out.push(b as char);
                    true
                }
                None => false,
            }
        };
        let known = match seq {
            "F" => push_delim(&mut out, Some(delims.field)),
            "S" => push_delim(&mut out, Some(delims.component)),
            "T" => push_delim(&mut out, delims.subcomponent),
            "R" => push_delim(&mut out, Some(delims.repetition)),
            "E" => push_delim(&mut out, Some(esc)),
            "P" => push_delim(&mut out, delims.truncation),
            "H" | "N" => true, // highlighting on/off: no meaning in plain text
            ".br" => {
                out.push('\n');
                true
            }
            ".fi" | ".nf" | ".ce" => true, // fill/no-fill/centre: layout only
            _ if seq.starts_with(".sp") => match seq[3..].trim() {
                "" => {
                    out.push('\n');
                    true
                }
                n => match n.parse::<u8>() {
                    Ok(n) => {
                        out.extend(std::iter::repeat_n('\n', usize::from(n.max(1))));
                        true
                    }
                    Err(_) => false,
                },
            },
            _ if seq.starts_with(".sk") => match seq[3..].trim().parse::<u8>() {
                Ok(n) => {
                    out.extend(std::iter::repeat_n(' ', usize::from(n)));
                    true
                }
                Err(_) => false,
            },
            _ if seq.starts_with(".in") || seq.starts_with(".ti") => {
                let n = seq[3..].trim().trim_start_matches(['+', '-']);
                n.parse::<u16>().is_ok()
            }
            _ if seq.starts_with('X') => match hex_bytes(&seq[1..]) {
                Some(bytes) => {
                    out.push_str(&charset.decode(&bytes));
                    true
                }
                None => false,
            },
            _ if (seq.starts_with('C') && seq.len() == 5)
                || (seq.starts_with('M') && matches!(seq.len(), 5 | 7)) =>
            {
                match hex_bytes(&seq[1..]) {
                    Some(designation) if is_jis_designation(&designation) => {
                        // Decode the run up to the next designation (or the end) as ISO-2022-JP.
                        let rest = &s[close + 1..];
                        let run_end = find_next_designation(rest, esc).unwrap_or(rest.len());
                        let mut bytes = Vec::with_capacity(run_end + 6);
                        bytes.push(0x1B);
                        bytes.extend_from_slice(&designation);
                        bytes.extend_from_slice(&rest.as_bytes()[..run_end]);
                        bytes.extend_from_slice(&[0x1B, 0x28, 0x42]);
                        let (decoded, _) =
                            encoding_rs::ISO_2022_JP.decode_without_bom_handling(&bytes);
                        out.push_str(&decoded);
                        next = close + 1 + run_end;
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !known {
            issue(EscapeIssue {
                offset: start,
                message: format!(
                    "unknown escape sequence '{}'; kept verbatim",
                    preview(&s[start..=close])
                ),
            });
            out.push_str(&s[start..=close]);
        }
        i = next;
    }
    Cow::Owned(out)
}

/// Position (within `rest`) of the next `\Cxxxx\` or `\Mxxxx..\` escape, if any.
fn find_next_designation(rest: &str, esc: u8) -> Option<usize> {
    let b = rest.as_bytes();
    let mut i = 0;
    while let Some(rel) = memchr::memchr(esc, &b[i..]) {
        let p = i + rel;
        if let Some(q) = memchr::memchr(esc, &b[p + 1..]) {
            let seq = &rest[p + 1..p + 1 + q];
            if (seq.starts_with('C') || seq.starts_with('M')) && hex_bytes(&seq[1..]).is_some() {
                return Some(p);
            }
            i = p + 1 + q + 1;
        } else {
            return None;
        }
        if i >= b.len() {
            return None;
        }
    }
    None
}

/// Escape `text` for ER7 output with `delims`: every delimiter and the escape character become
/// escape sequences; LF becomes `\.br\`, every other control character (CR, VT, FS, NUL…)
/// `\Xhh\`, so nothing in a value can be read back as a terminator or MLLP framing.
/// `delims.escape` must be set (callers without one use [`Delimiters::default`]).
pub fn encode(text: &str, delims: &Delimiters, out: &mut String) {
    let esc = delims.escape.unwrap_or(b'\\') as char;
    if !text
        .bytes()
        .any(|b| delims.is_special(b) || b.is_ascii_control())
    {
        out.push_str(text);
        return;
    }
    let push = |out: &mut String, code: &str| {
        out.push(esc);
        out.push_str(code);
        out.push(esc);
    };
    for c in text.chars() {
        if !c.is_ascii() {
            out.push(c);
            continue;
        }
        let b = c as u8;
        if b == delims.field {
            push(out, "F");
        } else if b == delims.component {
            push(out, "S");
        } else if b == delims.repetition {
            push(out, "R");
        } else if Some(b) == delims.escape || (delims.escape.is_none() && b == b'\\') {
            push(out, "E");
        } else if Some(b) == delims.subcomponent {
            push(out, "T");
        } else if Some(b) == delims.truncation {
            push(out, "P");
        } else if b == b'\n' {
            push(out, ".br");
        } else if b.is_ascii_control() {
            push(out, &format!("X{b:02X}"));
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str, d: &Delimiters, cs: Charset) -> (String, Vec<EscapeIssue>) {
        let mut issues = vec![];
        let t = decode(Cow::Borrowed(s), d, cs, &mut |i| issues.push(i));
        (t.into_owned(), issues)
    }

    #[test]
    fn decode_table() {
        let d = Delimiters {
            truncation: Some(b'#'),
            ..Delimiters::default()
        };
        // (input, expected text, number of issues)
        let cases: &[(&str, &str, usize)] = &[
            ("plain", "plain", 0),
            ("a\\F\\b", "a|b", 0),
            ("a\\S\\b", "a^b", 0),
            ("a\\T\\b", "a&b", 0),
            ("a\\R\\b", "a~b", 0),
            ("a\\E\\b", "a\\b", 0),
            ("a\\P\\b", "a#b", 0),
            ("\\X41\\", "A", 0),
            ("\\X4142\\", "AB", 0),
            ("\\XC3A9\\", "é", 0),
            ("line1\\.br\\line2", "line1\nline2", 0),
            ("a\\.sp\\b", "a\nb", 0),
            ("a\\.sp2\\b", "a\n\nb", 0),
            ("a\\.sk3\\b", "a   b", 0),
            ("a\\.in+4\\b", "ab", 0),
            ("a\\.ti-2\\b", "ab", 0),
            ("a\\.fi\\\\.nf\\\\.ce\\b", "ab", 0),
            ("\\H\\bold\\N\\", "bold", 0),
            ("\\Q\\", "\\Q\\", 1),
            ("\\X4\\", "\\X4\\", 1),
            ("\\XZZ\\", "\\XZZ\\", 1),
            ("\\Zlocal\\", "\\Zlocal\\", 1),
            ("\\\\", "\\\\", 1),
            ("trailing\\F", "trailing\\F", 1),
            ("\\C2D41\\x", "\\C2D41\\x", 1),
            // ISO-2022-JP: ESC $ B + JIS X 0208 bytes "$3$s" (こん), then back to ASCII.
            ("\\M2442\\$3$s\\C2842\\ok", "こんok", 0),
        ];
        for (input, want, n_issues) in cases {
            let (got, issues) = dec(input, &d, Charset::Utf8);
            assert_eq!(&got, want, "input {input:?}");
            assert_eq!(issues.len(), *n_issues, "input {input:?}: {issues:?}");
        }
    }

    #[test]
    fn x_escape_uses_message_charset() {
        let d = Delimiters::default();
        assert_eq!(dec("\\XE9\\", &d, Charset::Latin1).0, "é");
        assert_eq!(dec("\\XC3A9\\", &d, Charset::Utf8).0, "é");
    }

    #[test]
    fn no_escape_char_means_no_decoding() {
        let d = Delimiters {
            escape: None,
            ..Delimiters::default()
        };
        assert_eq!(dec("a\\F\\b", &d, Charset::Utf8).0, "a\\F\\b");
    }

    #[test]
    fn borrowed_without_escapes() {
        let d = Delimiters::default();
        let t = decode(Cow::Borrowed("abc"), &d, Charset::Utf8, &mut |_| {});
        assert!(matches!(t, Cow::Borrowed(_)));
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let d = Delimiters {
            truncation: Some(b'#'),
            ..Delimiters::default()
        };
        for s in ["a|b^c~d\\e&f#g", "multi\nline\r\ntext", "ünïcödé ∑", ""] {
            let mut enc = String::new();
            encode(s, &d, &mut enc);
            assert!(!enc.bytes().any(|b| b == b'|'
                || b == b'^'
                || b == b'~'
                || b == b'&'
                || b == b'#'));
            assert_eq!(dec(&enc, &d, Charset::Utf8).0, s);
        }
    }
}
