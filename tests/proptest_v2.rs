//! Property tests: write(parse(m)) preserves every value; grouping keeps every segment once, in
//! order, whatever their order; the parser, grouping, JSON view and ACK
//! builder never panic on arbitrary or mutated input.

use proptest::prelude::*;
use v2fhir::v2::er7::{self, Leaf, OwnedSegment};
use v2fhir::v2::{self, Delimiters, Structures, ack};

fn delimiter_sets() -> impl Strategy<Value = Delimiters> {
    prop_oneof![
        Just(Delimiters::default()),
        Just(Delimiters {
            truncation: Some(b'#'),
            ..Delimiters::default()
        }),
        Just(Delimiters {
            field: b'^',
            component: b'~',
            repetition: b'|',
            ..Delimiters::default()
        }),
        Just(Delimiters {
            subcomponent: Some(b'}'),
            ..Delimiters::default()
        }),
        Just(Delimiters {
            field: b'!',
            component: b'@',
            repetition: b'*',
            escape: Some(b'%'),
            subcomponent: Some(b'$'),
            truncation: None
        }),
    ]
}

fn leaf() -> impl Strategy<Value = Leaf> {
    prop_oneof![
        2 => Just(Leaf::Absent),
        1 => Just(Leaf::Null),
        6 => "[a-zA-Z0-9 ]{1,12}".prop_map(Leaf::text),
        3 => "[|^~\\\\&#!@*%$}\"a\n\r\t\u{0b}\u{1c}é∑😀 ]{1,10}".prop_map(Leaf::text),
        1 => any::<String>().prop_map(Leaf::text),
    ]
}

fn field() -> impl Strategy<Value = er7::OwnedField> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(leaf(), 1..3), 1..4),
        1..3,
    )
}

fn segment() -> impl Strategy<Value = OwnedSegment> {
    ("[A-Z][A-Z0-9]{2}", prop::collection::vec(field(), 0..8))
        .prop_filter("not a header or envelope id", |(id, _)| {
            !matches!(id.as_str(), "MSH" | "FHS" | "BHS" | "BTS" | "FTS")
        })
        .prop_map(|(id, fields)| OwnedSegment { id, fields })
}

fn msh() -> OwnedSegment {
    let mut fields = vec![vec![]; 12];
    fields[2] = er7::field_text("APP");
    fields[8] = er7::field_components(&["ADT", "A01"]);
    fields[9] = er7::field_text("1");
    fields[10] = er7::field_text("P");
    fields[11] = er7::field_text("2.5.1");
    OwnedSegment {
        id: "MSH".into(),
        fields,
    }
}

/// Canonical form: trailing empties trimmed at every level (the writer omits them). Null and a
/// `""` text stay distinct: the writer keeps them apart, so they are not normalized.
type Canonical = Vec<(String, Vec<er7::OwnedField>)>;

fn norm(segs: &[OwnedSegment]) -> Canonical {
    fn trim<T: PartialEq>(mut v: Vec<T>, empty: impl Fn(&T) -> bool) -> Vec<T> {
        while v.last().is_some_and(&empty) {
            v.pop();
        }
        v
    }
    segs.iter()
        .map(|s| {
            let fields: Vec<_> = s
                .fields
                .iter()
                .skip(if s.id == "MSH" { 2 } else { 0 })
                .map(|f| {
                    trim(
                        f.iter()
                            .map(|r| {
                                trim(
                                    r.iter()
                                        .map(|c| trim(c.clone(), |l| *l == Leaf::Absent))
                                        .collect(),
                                    |c: &Vec<Leaf>| c.is_empty(),
                                )
                            })
                            .collect(),
                        |r: &Vec<Vec<Leaf>>| r.is_empty(),
                    )
                })
                .collect();
            (
                s.id.clone(),
                trim(fields, |f: &Vec<Vec<Vec<Leaf>>>| f.is_empty()),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn write_then_parse_preserves_every_value(d in delimiter_sets(), body in prop::collection::vec(segment(), 0..6)) {
        let mut segs = vec![msh()];
        segs.extend(body);
        let text = er7::write_message(&segs, &d);
        let parsed = v2::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.messages.len(), 1);
        let m = &parsed.messages[0];
        prop_assert_eq!(m.delimiters(), &d);
        let back = er7::owned_segments(m);
        prop_assert_eq!(norm(&back), norm(&segs));
        // Writing the parsed message again gives the same bytes.
        prop_assert_eq!(er7::write_message(&back, &d), text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        cuts in prop::collection::vec((0usize..400, prop::collection::vec(any::<u8>(), 0..6)), 0..12),
    ) {
        let mut bytes = b"MSH|^~\\&#|A|B|C|D|2024||ORU^R01^ORU_R01|1|P|2.7|||AL|ER||8859/1\rPID|1||X^^^Y&Z~\"\"||\\X41\\^\\Cxx\\\rOBR|1\rOBX|1|TX|A||a\\.br\\b\nc\rBTS|1\r".to_vec();
        for (at, ins) in cuts {
            let at = at.min(bytes.len());
            bytes.splice(at..at, ins);
        }
        exercise(&bytes);
    }
}

/// A message of one structured type whose segments are drawn from the ids those structures use
/// (and one Z-segment), in any order: the grouping's lookahead sees every kind of ambiguity.
fn grouped_message() -> impl Strategy<Value = String> {
    let types = prop::sample::select(vec![
        "OMG^O19^OMG_O19",
        "OML^O21^OML_O21",
        "ORU^R01^ORU_R01",
        "BAR^P01^BAR_P01",
        "ADT^A01^ADT_A01",
        "RDE^O11^RDE_O11",
        "RDS^O13^RDS_O13",
        "SIU^S12^SIU_S12",
        "VXU^V04^VXU_V04",
    ]);
    let ids = prop::sample::select(vec![
        "EVN", "PID", "PD1", "NK1", "PV1", "PV2", "ORC", "OBR", "OBX", "NTE", "SPM", "SAC", "TQ1",
        "AL1", "DG1", "PR1", "ROL", "IN1", "IN2", "GT1", "RXO", "RXE", "RXR", "RXC", "RXD", "RXA",
        "SCH", "RGS", "AIS", "AIL", "AIP", "PRT", "FT1", "ZZZ",
    ]);
    (types, prop::collection::vec(ids, 0..40)).prop_map(|(ty, segs)| {
        let mut text = format!("MSH|^~\\&|A|B|C|D|2024||{ty}|1|P|2.5.1\r");
        for s in segs {
            text.push_str(s);
            text.push_str("|1\r");
        }
        text
    })
}

fn indexes(g: &v2fhir::v2::structure::GroupInstance, out: &mut Vec<usize>) {
    for item in &g.items {
        match item {
            v2fhir::v2::structure::GroupItem::Segment(i) => out.push(*i),
            v2fhir::v2::structure::GroupItem::Group(sub) => indexes(sub, out),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Whatever the order of the segments, grouping (with its lookahead) keeps each of them once,
    /// in message order, and never opens an empty group.
    #[test]
    fn grouping_keeps_every_segment_once_in_order(text in grouped_message()) {
        let parsed = v2::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let m = &parsed.messages[0];
        let g = Structures::builtin().group(m);
        let mut seen = Vec::new();
        indexes(&g.root, &mut seen);
        prop_assert_eq!(seen, (0..m.len()).collect::<Vec<_>>());
        fn no_empty(g: &v2fhir::v2::structure::GroupInstance) -> bool {
            g.items.iter().all(|i| match i {
                v2fhir::v2::structure::GroupItem::Group(sub) => !sub.items.is_empty() && no_empty(sub),
                v2fhir::v2::structure::GroupItem::Segment(_) => true,
            })
        }
        prop_assert!(no_empty(&g.root));
    }
}

fn exercise(bytes: &[u8]) {
    let opts = ack::AckOptions {
        control_id: "X".into(),
        timestamp: "2024".into(),
        max_errors: 5,
    };
    match v2::parse(bytes) {
        Ok(p) => {
            let _ = v2::json::parsed_json(&p, Structures::builtin());
            for m in &p.messages {
                let plan = ack::plan(m, &v2::json::escape_diagnostics(m));
                let a = ack::build(m, &plan, &opts);
                // Whatever we received, our ACK is a well-formed message.
                assert!(v2::parse(a.as_bytes()).is_ok(), "ACK does not parse: {a:?}");
            }
        }
        Err(e) => {
            let a = ack::reject_unparsable(&e.to_string(), &opts);
            assert!(v2::parse(a.as_bytes()).is_ok());
        }
    }
}

proptest! {
    /// `Value::component(n)` is the n-th piece of the field's first repetition split at `^`,
    /// for every n up to past the end (an absent value beyond it), whatever the lengths.
    #[test]
    fn the_nth_component_is_the_nth_piece(
        pieces in prop::collection::vec("[a-z]{0,12}", 1..40),
        n in 0usize..45,
    ) {
        let field = pieces.join("^");
        let msg = format!("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1||{field}\r");
        let p = v2::parse(msg.as_bytes()).expect("parse");
        let m = &p.messages[0];
        let pid = m.segment(1).expect("PID");
        let got = pid.field(3).component(n);
        let want = if n == 0 { None } else { pieces.get(n - 1) };
        prop_assert_eq!(got.raw(), want.map_or(&b""[..], |w| w.as_bytes()));
    }
}

proptest! {
    /// `child_at` over the ends `child_ends` gave is `child`, at every level and for every n
    /// (0, each child, past the end).
    #[test]
    fn child_at_is_child(field in "[a-c^~&]{0,40}", n in 0usize..16) {
        let msg = format!("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1||{field}\r");
        let p = v2::parse(msg.as_bytes()).expect("parse");
        let m = &p.messages[0];
        let f = m.segment(1).expect("PID").field(3);
        let rep = f.rep(1);
        let comp = rep.component(1);
        for v in [f, rep, comp, comp.sub(1)] {
            let mut ends = smallvec::SmallVec::<[u32; 32]>::new();
            if v.child_ends(&mut ends) {
                let (a, b) = (v.child_at(&ends, n), v.child(n));
                prop_assert_eq!(a.raw(), b.raw());
                prop_assert_eq!(a.level(), b.level());
                prop_assert_eq!(a.is_valued(), b.is_valued());
            }
        }
    }
}
