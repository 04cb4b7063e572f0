//! Character sets: MSH-18 names → decoders, with a configurable fallback when bytes are not
//! valid in the declared set. Delimiters are ASCII in every supported set, so the parser
//! indexes raw bytes and text is decoded lazily, per value.

use encoding_rs::Encoding;
use serde::Serialize;
use std::borrow::Cow;

/// How the bytes of one message are turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (includes ASCII, the default when MSH-18 is empty).
    Utf8,
    /// ISO 8859-1, decoded exactly (every byte is the code point of the same value).
    Latin1,
    /// Any other single- or multi-byte set that `encoding_rs` decodes.
    Other(&'static Encoding),
}

impl Serialize for Charset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Result of mapping an MSH-18 value to a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A set we decode.
    Known(Charset),
    /// Named in HL7 table 0211 but not decodable here (e.g. UTF-16 with ASCII delimiters is impossible).
    Unsupported,
    /// Not a value of table 0211.
    Unknown,
}

impl Charset {
    /// A display name (the WHATWG name for `encoding_rs` sets).
    pub fn name(self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Latin1 => "ISO-8859-1",
            Charset::Other(e) => e.name(),
        }
    }

    /// Map an MSH-18 value (HL7 table 0211) to a decoder. Case and surrounding blanks are ignored.
    pub fn from_msh18(value: &str) -> Lookup {
        let v = value.trim().to_ascii_uppercase();
        let known = |c| Lookup::Known(c);
        match v.as_str() {
            "" | "ASCII" | "ISO IR6" | "UNICODE UTF-8" | "UTF-8" | "UTF8" | "ISO IR192"
            | "UNICODE" => known(Charset::Utf8),
            "8859/1" | "ISO IR100" | "ISO-8859-1" | "LATIN1" => known(Charset::Latin1),
            "8859/2" | "ISO IR101" => known(Charset::Other(encoding_rs::ISO_8859_2)),
            "8859/3" | "ISO IR109" => known(Charset::Other(encoding_rs::ISO_8859_3)),
            "8859/4" | "ISO IR110" => known(Charset::Other(encoding_rs::ISO_8859_4)),
            "8859/5" | "ISO IR144" => known(Charset::Other(encoding_rs::ISO_8859_5)),
            "8859/6" | "ISO IR127" => known(Charset::Other(encoding_rs::ISO_8859_6)),
            "8859/7" | "ISO IR126" => known(Charset::Other(encoding_rs::ISO_8859_7)),
            "8859/8" | "ISO IR138" => known(Charset::Other(encoding_rs::ISO_8859_8)),
            // encoding_rs (WHATWG) decodes ISO-8859-9 as its superset windows-1254.
            "8859/9" | "ISO IR148" => known(Charset::Other(encoding_rs::WINDOWS_1254)),
            "8859/15" | "ISO IR203" => known(Charset::Other(encoding_rs::ISO_8859_15)),
            "GB 18030-2000" => known(Charset::Other(encoding_rs::GB18030)),
            "KS X 1001" => known(Charset::Other(encoding_rs::EUC_KR)),
            "BIG-5" => known(Charset::Other(encoding_rs::BIG5)),
            "ISO IR87" | "ISO 2022-1994" => known(Charset::Other(encoding_rs::ISO_2022_JP)),
            "UNICODE UTF-16" | "UNICODE UTF-32" | "ISO IR159" | "CNS 11643-1992" => {
                Lookup::Unsupported
            }
            _ => Lookup::Unknown,
        }
    }

    /// Check that `bytes` are valid in this set. Returns the offset of the first invalid byte.
    pub fn first_invalid(self, bytes: &[u8]) -> Option<usize> {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes).err().map(|e| e.valid_up_to()),
            Charset::Latin1 => None,
            Charset::Other(enc) => {
                let (_, had_errors) = enc.decode_without_bom_handling(bytes);
                if had_errors {
                    // Find the first undecodable position by bisecting is overkill; report the start.
                    Some(0)
                } else {
                    None
                }
            }
        }
    }

    /// Decode `bytes` to text. Borrowed when the bytes are already valid UTF-8 in this set.
    /// Invalid input never fails: unknown sequences become U+FFFD.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        match self {
            Charset::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(bytes),
            },
            Charset::Latin1 => {
                if bytes.is_ascii() {
                    // ASCII is valid UTF-8.
                    String::from_utf8_lossy(bytes)
                } else {
                    Cow::Owned(bytes.iter().map(|&b| b as char).collect())
                }
            }
            Charset::Other(enc) => enc.decode_without_bom_handling(bytes).0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh18_table() {
        let cases: &[(&str, Lookup)] = &[
            ("", Lookup::Known(Charset::Utf8)),
            ("ASCII", Lookup::Known(Charset::Utf8)),
            ("UNICODE UTF-8", Lookup::Known(Charset::Utf8)),
            (" unicode utf-8 ", Lookup::Known(Charset::Utf8)),
            ("8859/1", Lookup::Known(Charset::Latin1)),
            (
                "8859/2",
                Lookup::Known(Charset::Other(encoding_rs::ISO_8859_2)),
            ),
            (
                "8859/5",
                Lookup::Known(Charset::Other(encoding_rs::ISO_8859_5)),
            ),
            (
                "8859/7",
                Lookup::Known(Charset::Other(encoding_rs::ISO_8859_7)),
            ),
            (
                "8859/9",
                Lookup::Known(Charset::Other(encoding_rs::WINDOWS_1254)),
            ),
            ("ISO IR192", Lookup::Known(Charset::Utf8)),
            ("UNICODE UTF-16", Lookup::Unsupported),
            ("EBCDIC", Lookup::Unknown),
        ];
        for (name, want) in cases {
            assert_eq!(Charset::from_msh18(name), *want, "{name:?}");
        }
    }

    #[test]
    fn decoding_table() {
        // (charset, bytes, expected text)
        let cases: &[(Charset, &[u8], &str)] = &[
            (Charset::Utf8, b"abc", "abc"),
            (Charset::Utf8, "Müller".as_bytes(), "Müller"),
            (Charset::Utf8, b"M\xfcller", "M\u{FFFD}ller"),
            (Charset::Latin1, b"M\xfcller", "Müller"),
            (Charset::Latin1, b"\xe9\xff", "éÿ"),
            (Charset::Other(encoding_rs::ISO_8859_2), b"\xb1", "ą"),
            (Charset::Other(encoding_rs::ISO_8859_5), b"\xb0", "А"),
            (Charset::Other(encoding_rs::ISO_8859_7), b"\xe1", "α"),
            (Charset::Other(encoding_rs::WINDOWS_1252), b"\x80", "€"),
        ];
        for (cs, bytes, want) in cases {
            assert_eq!(cs.decode(bytes), *want, "{} {:?}", cs.name(), bytes);
        }
        assert!(matches!(Charset::Utf8.decode(b"plain"), Cow::Borrowed(_)));
        assert_eq!(Charset::Utf8.first_invalid(b"ab\xffc"), Some(2));
        assert_eq!(Charset::Latin1.first_invalid(b"ab\xffc"), None);
    }
}
