//! A small YAML reader that keeps source positions: mapping files are read into a [`Node`] tree
//! (line and column on every node), converted to JSON for schema validation, and every JSON
//! pointer can be traced back to `file:line:col`.
//!
//! Supported: block and flow mappings/sequences, all scalar styles, one document per file.
//! Not supported (reported as errors): anchors and aliases, tags, duplicate keys, non-string keys.
//! Plain scalars follow the YAML 1.2 core schema: `true`/`false`, `null`/`~`, integers and
//! decimals are typed; everything else (and every quoted scalar) is a string. `yes`/`no`/`on`/`off`
//! stay strings (YAML 1.1 booleans are a trap in code tables).

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// A position in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub kind: Kind,
    /// Where it starts.
    pub pos: Pos,
}

/// YAML node kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar, already typed as JSON (string, number, bool, null).
    Scalar(Value),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys in file order, each key with its own position.
    Map(Vec<(String, Pos, Node)>),
}

/// A YAML syntax problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

fn plain_scalar(s: &str) -> Value {
    match s {
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        _ => {
            let numeric = {
                let t = s.strip_prefix(['-', '+']).unwrap_or(s);
                !t.is_empty()
                    && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && t.bytes().filter(|&b| b == b'.').count() <= 1
                    && !t.starts_with('.')
                    && !t.ends_with('.')
            };
            if numeric {
                // arbitrary_precision keeps the text exactly (no float rounding).
                if let Ok(n) = s.trim_start_matches('+').parse::<Number>() {
                    return Value::Number(n);
                }
            }
            Value::String(s.to_string())
        }
    }
}

/// Parse one YAML document.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<(Node, Option<(String, Pos)>)> = Vec::new();
    let mut root: Option<Node> = None;
    let mut docs = 0;
    // Pending key for the mapping on top of the stack.
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e| YamlError {
            pos: Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let p = pos(&span);
        let node = match ev {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => continue,
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(YamlError {
                        pos: p,
                        message: "only one YAML document per mapping file".into(),
                    });
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(YamlError {
                    pos: p,
                    message: "YAML aliases (*name) are not supported".into(),
                });
            }
            Event::Scalar(s, style, anchor, tag) => {
                if anchor != 0 {
                    return Err(YamlError {
                        pos: p,
                        message: "YAML anchors (&name) are not supported".into(),
                    });
                }
                if tag.is_some() {
                    return Err(YamlError {
                        pos: p,
                        message: "YAML tags (!tag) are not supported".into(),
                    });
                }
                let v = match style {
                    ScalarStyle::Plain => plain_scalar(&s),
                    _ => Value::String(s.into_owned()),
                };
                Some(Node {
                    kind: Kind::Scalar(v),
                    pos: p,
                })
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) if anchor != 0 => {
                return Err(YamlError {
                    pos: p,
                    message: "YAML anchors (&name) are not supported".into(),
                });
            }
            Event::SequenceStart(_, _) => {
                stack.push((
                    Node {
                        kind: Kind::Seq(vec![]),
                        pos: p,
                    },
                    None,
                ));
                None
            }
            Event::MappingStart(_, _) => {
                stack.push((
                    Node {
                        kind: Kind::Map(vec![]),
                        pos: p,
                    },
                    None,
                ));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (n, pending) = stack.pop().ok_or(YamlError {
                    pos: p,
                    message: "unbalanced YAML structure".into(),
                })?;
                if let Some((k, kp)) = pending {
                    return Err(YamlError {
                        pos: kp,
                        message: format!("key '{k}' has no value"),
                    });
                }
                Some(n)
            }
        };
        let Some(node) = node else { continue };
        match stack.last_mut() {
            None => root = Some(node),
            Some((parent, pending)) => match &mut parent.kind {
                Kind::Seq(items) => items.push(node),
                Kind::Map(entries) => match pending.take() {
                    None => match node.kind {
                        Kind::Scalar(Value::String(k)) => {
                            if entries.iter().any(|(e, _, _)| *e == k) {
                                return Err(YamlError {
                                    pos: node.pos,
                                    message: format!("duplicate key '{k}'"),
                                });
                            }
                            *pending = Some((k, node.pos));
                        }
                        Kind::Scalar(v) => *pending = Some((v.to_string(), node.pos)),
                        _ => {
                            return Err(YamlError {
                                pos: node.pos,
                                message: "mapping keys must be scalars".into(),
                            });
                        }
                    },
                    Some((k, kp)) => entries.push((k, kp, node)),
                },
                Kind::Scalar(_) => {
                    return Err(YamlError {
                        pos: p,
                        message: "internal: scalar parent".into(),
                    });
                }
            },
        }
    }
    root.ok_or(YamlError {
        pos: Pos { line: 1, col: 1 },
        message: "empty file".into(),
    })
}

impl Node {
    /// Convert to JSON, recording the position of every JSON pointer (keys point at their key).
    pub fn to_json(&self, positions: &mut HashMap<String, Pos>) -> Value {
        self.to_json_at(String::new(), positions)
    }

    fn to_json_at(&self, ptr: String, positions: &mut HashMap<String, Pos>) -> Value {
        positions.entry(ptr.clone()).or_insert(self.pos);
        match &self.kind {
            Kind::Scalar(v) => v.clone(),
            Kind::Seq(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n.to_json_at(format!("{ptr}/{i}"), positions))
                    .collect(),
            ),
            Kind::Map(entries) => {
                let mut m = Map::new();
                for (k, kp, n) in entries {
                    let child = format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
                    positions.insert(child.clone(), *kp);
                    let v = n.to_json_at(child, positions);
                    // Values start after their key; keep the value's own position under a suffix.
                    m.insert(k.clone(), v);
                }
                Value::Object(m)
            }
        }
    }
}

/// The position for a JSON pointer: the pointer itself, or its nearest ancestor.
pub fn position_of(positions: &HashMap<String, Pos>, pointer: &str) -> Pos {
    let mut p = pointer.to_string();
    loop {
        if let Some(pos) = positions.get(&p) {
            return *pos;
        }
        match p.rfind('/') {
            Some(i) => p.truncate(i),
            None => {
                return positions
                    .get("")
                    .copied()
                    .unwrap_or(Pos { line: 1, col: 1 });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let text = "kind: segment\nrules:\n  - { name: a, from: PID-3, n: 12, d: 98.10 }\n  - name: b\n    value: \"Y\"\n    flag: yes\n    on: true\n";
        let n = parse(text).expect("parse");
        let mut pos = HashMap::new();
        let j = n.to_json(&mut pos);
        assert_eq!(j["rules"][0]["n"], serde_json::json!(12));
        assert_eq!(j["rules"][0]["d"].to_string(), "98.10");
        assert_eq!(j["rules"][1]["value"], "Y");
        assert_eq!(j["rules"][1]["flag"], "yes");
        assert_eq!(j["rules"][1]["on"], true);
        assert_eq!(position_of(&pos, "/rules/1/value"), Pos { line: 5, col: 5 });
        assert_eq!(position_of(&pos, "/rules/0/from"), Pos { line: 3, col: 16 });
        assert_eq!(
            position_of(&pos, "/rules/1/value/deeper"),
            Pos { line: 5, col: 5 }
        );
    }

    #[test]
    fn errors_have_positions() {
        let cases = [
            ("a: 1\na: 2\n", 2, "duplicate key 'a'"),
            ("a: &x 1\nb: *x\n", 1, "anchors"),
            ("a: [1, 2\n", 2, ""),
            ("a: 1\n---\nb: 2\n", 2, "one YAML document"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.pos.line, line, "{text:?}: {e:?}");
            assert!(e.message.contains(msg), "{text:?}: {e:?}");
        }
    }
}
