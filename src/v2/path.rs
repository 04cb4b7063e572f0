//! HL7 addresses: `PID-3[2].4.1`, `OBX[2]-5`, `MSH-9.2` — 1-based, as HL7 numbers everything.

use std::fmt;
use std::str::FromStr;

/// A parsed address. Defaults: first segment occurrence, first repetition, whole field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segment: [u8; 3],
    /// 1-based occurrence of the segment in the message (`OBX[2]`).
    pub segment_occurrence: usize,
    /// 1-based field number.
    pub field: usize,
    /// 1-based repetition.
    pub repetition: usize,
    /// 1-based component.
    pub component: Option<usize>,
    /// 1-based subcomponent.
    pub subcomponent: Option<usize>,
}

/// Why a path did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HL7 path '{path}': {reason}")]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Path {
    /// The segment id.
    pub fn segment(&self) -> &str {
        std::str::from_utf8(&self.segment).unwrap_or("???")
    }
}

fn bracket(s: &str) -> Result<(Option<usize>, &str), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed '['")?;
        let n: usize = rest[..end]
            .parse()
            .map_err(|_| "repetition index is not a number")?;
        if n == 0 {
            return Err("indexes are 1-based; [0] does not exist");
        }
        Ok((Some(n), &rest[end + 1..]))
    } else {
        Ok((None, s))
    }
}

fn number<'s>(s: &'s str, what: &'static str) -> Result<(usize, &'s str), &'static str> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return Err(what);
    }
    let n: usize = s[..end].parse().map_err(|_| what)?;
    if n == 0 {
        return Err("positions are 1-based; 0 does not exist");
    }
    Ok((n, &s[end..]))
}

impl FromStr for Path {
    type Err = PathError;
    fn from_str(path: &str) -> Result<Path, PathError> {
        let err = |reason| PathError {
            path: path.to_string(),
            reason,
        };
        let b = path.as_bytes();
        if b.len() < 5
            || !b[..3]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(err("expected a three-character segment id such as PID"));
        }
        let segment = [b[0], b[1], b[2]];
        let (occ, rest) = bracket(&path[3..]).map_err(err)?;
        let rest = rest
            .strip_prefix('-')
            .or_else(|| rest.strip_prefix('.'))
            .ok_or_else(|| err("expected '-' after the segment id"))?;
        let (field, rest) = number(rest, "expected a field number").map_err(err)?;
        let (rep, rest) = bracket(rest).map_err(err)?;
        let (component, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let (c, r) = number(r, "expected a component number").map_err(err)?;
                (Some(c), r)
            }
            None => (None, rest),
        };
        let (subcomponent, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let (s, r) = number(r, "expected a subcomponent number").map_err(err)?;
                (Some(s), r)
            }
            None => (None, rest),
        };
        if !rest.is_empty() {
            return Err(err("unexpected text after the path"));
        }
        Ok(Path {
            segment,
            segment_occurrence: occ.unwrap_or(1),
            field,
            repetition: rep.unwrap_or(1),
            component,
            subcomponent,
        })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment())?;
        if self.segment_occurrence != 1 {
            write!(f, "[{}]", self.segment_occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if self.repetition != 1 {
            write!(f, "[{}]", self.repetition)?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        // (input, Some((seg, occ, field, rep, comp, sub)) or None)
        type Want = Option<(
            &'static str,
            usize,
            usize,
            usize,
            Option<usize>,
            Option<usize>,
        )>;
        let cases: &[(&str, Want)] = &[
            ("PID-3", Some(("PID", 1, 3, 1, None, None))),
            ("PID-3[2].4.1", Some(("PID", 1, 3, 2, Some(4), Some(1)))),
            ("OBX[2]-5", Some(("OBX", 2, 5, 1, None, None))),
            ("MSH.9.2", Some(("MSH", 1, 9, 1, Some(2), None))),
            ("ZP1-12.3", Some(("ZP1", 1, 12, 1, Some(3), None))),
            ("PID-0", None),
            ("PID-3[0]", None),
            ("pid-3", None),
            ("PID", None),
            ("PID-3.x", None),
            ("PID-3.1.2.3", None),
            ("PID-3[2", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<Path>();
            match (got, want) {
                (Ok(p), Some((seg, occ, field, rep, comp, sub))) => {
                    assert_eq!(
                        (
                            p.segment(),
                            p.segment_occurrence,
                            p.field,
                            p.repetition,
                            p.component,
                            p.subcomponent
                        ),
                        (*seg, *occ, *field, *rep, *comp, *sub),
                        "{input}"
                    );
                    // Display round-trips to an equivalent path.
                    assert_eq!(p.to_string().parse::<Path>().ok(), Some(p), "{input}");
                }
                (Err(e), None) => assert!(e.to_string().contains(input), "{e}"),
                (g, w) => panic!("{input}: got {g:?}, want {w:?}"),
            }
        }
    }
}
