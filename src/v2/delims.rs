//! Delimiters (encoding characters): read from MSH-1/MSH-2 (or FHS/BHS), validated, repaired.

use serde::Serialize;

/// The delimiters of one message. The escape, subcomponent and truncation characters are
/// optional: MSH-2 may declare fewer than four characters (then those levels do not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: u8,
    /// Component separator, usually `^`.
    pub component: u8,
    /// Repetition separator, usually `~`.
    pub repetition: u8,
    /// Escape character, usually `\`.
    pub escape: Option<u8>,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: Option<u8>,
    /// Truncation character (v2.7+), usually `#`.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: Some(b'&'),
            truncation: None,
        }
    }
}

impl Serialize for Delimiters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(6);
        out.push(self.field as char);
        out.push_str(&self.encoding_characters());
        s.serialize_str(&out)
    }
}

/// What [`Delimiters::from_msh2`] concluded about the declared encoding characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msh2Verdict {
    /// Standard-conformant.
    Ok,
    /// Accepted with an unambiguous repair; the text says what.
    Repaired(String),
    /// Unusable; defaults were substituted. The text says why.
    Invalid(String),
}

fn is_valid_delimiter(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

impl Delimiters {
    /// The MSH-2 text for these delimiters (4 or 5 characters, fewer if levels are absent).
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component as char);
        s.push(self.repetition as char);
        if let Some(e) = self.escape {
            s.push(e as char);
        }
        if let Some(sc) = self.subcomponent {
            s.push(sc as char);
        }
        if let Some(t) = self.truncation {
            s.push(t as char);
        }
        s
    }

    /// Is `b` any delimiter byte (including escape and truncation) of this set?
    #[inline]
    pub fn is_special(&self, b: u8) -> bool {
        b == self.field
            || b == self.component
            || b == self.repetition
            || Some(b) == self.escape
            || Some(b) == self.subcomponent
            || Some(b) == self.truncation
    }

    /// Build delimiters from the field separator and the raw MSH-2 bytes, validating them.
    ///
    /// Returns `None` when the field separator itself is unusable (alphanumeric, whitespace,
    /// control character): then there is no usable MSH.
    pub fn from_msh2(field: u8, msh2: &[u8]) -> Option<(Delimiters, Msh2Verdict)> {
        if !is_valid_delimiter(field) {
            return None;
        }
        let mut chars: Vec<u8> = msh2.to_vec();
        let mut verdict = Msh2Verdict::Ok;
        // `^~\\&`: the escape character doubled, a string-escaping artifact seen in real feeds.
        if chars.len() == 5 && chars[2] == b'\\' && chars[3] == b'\\' {
            chars.remove(3);
            verdict = Msh2Verdict::Repaired(
                "MSH-2 has the escape character doubled ('\\\\'); read as four encoding characters"
                    .into(),
            );
        }
        let problem = if chars.len() < 2 {
            Some(format!(
                "MSH-2 has {} encoding character(s); at least 2 are needed",
                chars.len()
            ))
        } else if chars.len() > 5 {
            Some(format!(
                "MSH-2 has {} encoding characters; at most 5 are allowed",
                chars.len()
            ))
        } else if let Some(&b) = chars.iter().find(|&&b| !is_valid_delimiter(b)) {
            Some(format!(
                "MSH-2 contains byte 0x{b:02X}, which cannot be a delimiter"
            ))
        } else if chars.contains(&field) {
            Some("MSH-2 repeats the field separator".to_string())
        } else if (1..chars.len()).any(|i| chars[..i].contains(&chars[i])) {
            Some("MSH-2 declares the same character for two delimiters".to_string())
        } else {
            None
        };
        if let Some(why) = problem {
            let mut d = Delimiters {
                field,
                ..Delimiters::default()
            };
            // Never let a default collide with a non-standard field separator.
            if d.component == field || d.repetition == field {
                return None;
            }
            if d.escape == Some(field) {
                d.escape = None;
            }
            if d.subcomponent == Some(field) {
                d.subcomponent = None;
            }
            return Some((
                d,
                Msh2Verdict::Invalid(format!("{why}; using the defaults ^~\\&")),
            ));
        }
        if chars.len() < 4 && verdict == Msh2Verdict::Ok {
            verdict = Msh2Verdict::Repaired(format!(
                "MSH-2 has {} encoding characters; the standard requires 4 (levels not declared are not split)",
                chars.len()
            ));
        }
        let d = Delimiters {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars.get(2).copied(),
            subcomponent: chars.get(3).copied(),
            truncation: chars.get(4).copied(),
        };
        Some((d, verdict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (field, msh2, expected encoding chars or None when no usable MSH, verdict kind)
        let cases: &[(u8, &[u8], Option<&str>, &str)] = &[
            (b'|', b"^~\\&", Some("^~\\&"), "ok"),
            (b'|', b"^~\\&#", Some("^~\\&#"), "ok"),
            (b'^', b"~|\\&", Some("~|\\&"), "ok"),
            (b'|', b"^~\\}", Some("^~\\}"), "ok"),
            (b'|', b"^~}", Some("^~}"), "repaired"),
            (b'|', b"^~\\\\&", Some("^~\\&"), "repaired"),
            (b'|', b"&&&&", Some("^~\\&"), "invalid"),
            (b'|', b"^", Some("^~\\&"), "invalid"),
            (b'|', b"^~\\&#!", Some("^~\\&"), "invalid"),
            (b'|', b"^~|&", Some("^~\\&"), "invalid"),
            (b'|', b"^A\\&", Some("^~\\&"), "invalid"),
            (b'A', b"^~\\&", None, ""),
            (b'\r', b"^~\\&", None, ""),
            (b' ', b"^~\\&", None, ""),
        ];
        for (field, msh2, want, kind) in cases {
            let got = Delimiters::from_msh2(*field, msh2);
            match (got, want) {
                (None, None) => {}
                (Some((d, v)), Some(w)) => {
                    assert_eq!(
                        &d.encoding_characters(),
                        w,
                        "msh2 {:?}",
                        String::from_utf8_lossy(msh2)
                    );
                    let k = match v {
                        Msh2Verdict::Ok => "ok",
                        Msh2Verdict::Repaired(_) => "repaired",
                        Msh2Verdict::Invalid(_) => "invalid",
                    };
                    assert_eq!(&k, kind, "msh2 {:?}", String::from_utf8_lossy(msh2));
                }
                (g, w) => panic!(
                    "msh2 {:?}: got {g:?}, want {w:?}",
                    String::from_utf8_lossy(msh2)
                ),
            }
        }
    }
}
