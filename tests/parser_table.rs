//! Table-driven parser tests: terminators, delimiter sets, escapes, charsets, batch shapes,
//! null vs empty, addressing, header facts, continuation lines.

use v2fhir::v2::{self, Code, Datum, Message, Path, Severity};

const ADT: &str = "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20240102030405||ADT^A01^ADT_A01|CTRL-1|P|2.5.1|42||AL|NE||UNICODE UTF-8\rEVN|A01|20240102030405\rPID|1||MRN1^^^HOSP^MR~SSN9^^^SSA^SS||DOE^JANE^Q||19800101|F|||1 MAIN ST^^TOWN^ST^12345\rPV1|1|I|WARD^101^A\r";

fn get<'a>(m: &Message<'a>, path: &str) -> Datum<'a> {
    m.get(&path.parse::<Path>().expect(path)).datum()
}

fn text(m: &Message<'_>, path: &str) -> String {
    match get(m, path) {
        Datum::Text(t) => t.into_owned(),
        other => panic!("{path}: expected text, got {other:?}"),
    }
}

fn codes(m: &Message<'_>) -> Vec<Code> {
    m.diagnostics().iter().map(|d| d.code).collect()
}

#[test]
fn terminator_styles_give_the_same_fields() {
    let cr = ADT.to_string();
    let cases: Vec<(&str, String)> = vec![
        ("CR", cr.clone()),
        ("LF", cr.replace('\r', "\n")),
        ("CRLF", cr.replace('\r', "\r\n")),
        ("mixed", {
            let mut s = String::new();
            for (i, seg) in cr.split('\r').filter(|s| !s.is_empty()).enumerate() {
                s.push_str(seg);
                s.push_str(["\r", "\n", "\r\n"][i % 3]);
            }
            s
        }),
        ("no final terminator", cr.trim_end_matches('\r').to_string()),
        ("BOM", format!("\u{FEFF}{cr}")),
        ("trailing whitespace", format!("{cr}\r\n  \n\t\n")),
        ("junk before MSH", format!("junk line\r\nmore junk\n{cr}")),
        ("MLLP framing left in a dump", format!("\x0b{cr}\x1c\r")),
    ];
    for (name, input) in cases {
        let p = v2::parse(input.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.messages.len(), 1, "{name}");
        let m = &p.messages[0];
        assert_eq!(m.len(), 4, "{name}: segments");
        assert_eq!(text(m, "PID-5.2"), "JANE", "{name}");
        assert_eq!(text(m, "PV1-3.3"), "A", "{name}");
        assert_eq!(m.header().control_id.as_deref(), Some("CTRL-1"), "{name}");
    }
}

#[test]
fn lenient_inputs_are_reported() {
    let lf = ADT.replace('\r', "\n");
    let p = v2::parse(lf.as_bytes()).expect("parse");
    assert!(codes(&p.messages[0]).contains(&Code::NonStandardTerminator));
    let input = format!("junk\n{ADT}");
    let p = v2::parse(input.as_bytes()).expect("parse");
    assert_eq!(p.diagnostics[0].code, Code::LeadingJunk);
    assert_eq!(p.diagnostics[0].location.line, 1);
    let input = format!("\u{FEFF}{ADT}");
    let p = v2::parse(input.as_bytes()).expect("parse");
    assert_eq!(p.diagnostics[0].code, Code::ByteOrderMark);
}

#[test]
fn delimiter_sets() {
    // (name, input, path, expected text, expected diagnostic code if any)
    let cases: &[(&str, &str, &str, &str, Option<Code>)] = &[
        (
            "standard",
            "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1||X^Y&Z\r",
            "PID-3.2.2",
            "Z",
            None,
        ),
        (
            "truncation char (v2.7)",
            "MSH|^~\\&#|A|B|C|D|2024||ADT^A01|1|P|2.7\rPID|1||X^Y&Z#\r",
            "PID-3.2.2",
            "Z#",
            None,
        ),
        (
            "field separator ^",
            "MSH^~|\\&^A^B^C^D^2024^^ADT~A24^1^P^2.4\rPID^1^^11~~~FOO&&0363|22\r",
            "PID-3[2]",
            "22",
            None,
        ),
        (
            "field separator ^, subcomponents",
            "MSH^~|\\&^A^B^C^D^2024^^ADT~A24^1^P^2.4\rPID^1^^11~~~FOO&&0363|22\r",
            "PID-3.4.3",
            "0363",
            None,
        ),
        (
            "subcomponent }",
            "MSH|^~\\}|A|B|C|D|2024||BAR^P01|1|P|2.3\rPID|1||X^Y}Z\r",
            "PID-3.2.2",
            "Z",
            None,
        ),
        (
            "doubled escape ^~\\\\&",
            "MSH|^~\\\\&|A|B|C|D|2024||ADT^A01|1|P|2.6\rPID|1||X^Y&Z\r",
            "PID-3.2.2",
            "Z",
            Some(Code::NonStandardEncodingCharacters),
        ),
        (
            "invalid &&&& falls back to defaults",
            "MSH|&&&&|A^1|B|C|D|2024||ORU^R01|1|P|2.5.1\rPID|1||X^Y\r",
            "MSH-3.2",
            "1",
            Some(Code::BadEncodingCharacters),
        ),
        (
            "three encoding characters",
            "MSH|^~}|A|B|C|D|2024||BAR^P01|1|P|2.4\rPID|1||X&Y\r",
            "PID-3",
            "X&Y",
            Some(Code::NonStandardEncodingCharacters),
        ),
    ];
    for (name, input, path, want, code) in cases {
        let p = v2::parse(input.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = &p.messages[0];
        assert_eq!(text(m, path), *want, "{name}");
        if let Some(c) = code {
            assert!(codes(m).contains(c), "{name}: {:?}", m.diagnostics());
        } else {
            assert!(
                !codes(m).iter().any(|c| matches!(
                    c,
                    Code::BadEncodingCharacters | Code::NonStandardEncodingCharacters
                )),
                "{name}"
            );
        }
    }
}

#[test]
fn msh_fields_one_and_two_are_literal() {
    let p = v2::parse(ADT.as_bytes()).expect("parse");
    let m = &p.messages[0];
    assert_eq!(text(m, "MSH-1"), "|");
    assert_eq!(text(m, "MSH-2"), "^~\\&");
    assert_eq!(text(m, "MSH-3"), "SENDAPP");
    assert_eq!(text(m, "MSH-9.3"), "ADT_A01");
}

#[test]
fn null_is_distinct_from_empty() {
    let input = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5\rPID|1||\"\"||DOE^\"\"^^^|\"\"\r";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let m = &p.messages[0];
    let cases: &[(&str, Datum<'_>)] = &[
        ("PID-3", Datum::Null),
        ("PID-4", Datum::Absent),
        ("PID-5.1", Datum::Text("DOE".into())),
        ("PID-5.2", Datum::Null),
        ("PID-5.3", Datum::Absent),
        ("PID-6", Datum::Null),
        ("PID-99", Datum::Absent),
    ];
    for (path, want) in cases {
        assert_eq!(&get(m, path), want, "{path}");
    }
}

/// A value of separators only (`^^^`, `~`, `&`) holds nothing: HL7 v2 lets trailing separators
/// be sent or left out, so `^^^` is as empty as an absent field (a referring doctor sent as
/// `^^^^^` is no participant). Three encoding characters (no subcomponent separator) too.
#[test]
fn separators_and_blanks_alone_are_not_a_value() {
    for (msh2, input_pid, cases) in [
        (
            "^~\\&",
            "PID|1||^^^|~|&|^&~|A^^|^B|\"\"| | ^ |A B",
            &[
                (3, false),
                (4, false),
                (5, false),
                (6, false),
                (7, true),
                (8, true),
                (9, false),
                // Blanks alone carry no data either; a blank inside a value is part of it.
                (10, false),
                (11, false),
                (12, true),
            ][..],
        ),
        (
            "^~\\",
            "PID|1||^^^|~~|^A",
            &[(3, false), (4, false), (5, true)][..],
        ),
    ] {
        let input = format!("MSH|{msh2}|A|B|C|D|2024||ADT^A08|1|P|2.5\r{input_pid}\r");
        let p = v2::parse(input.as_bytes()).expect("parse");
        let m = &p.messages[0];
        let pid = m.segments().nth(1).expect("PID");
        for &(n, want) in cases {
            assert_eq!(pid.field(n).is_valued(), want, "{msh2}: PID-{n}");
        }
    }
}

#[test]
fn one_based_addressing() {
    let p = v2::parse(ADT.as_bytes()).expect("parse");
    let m = &p.messages[0];
    let cases: &[(&str, Option<&str>)] = &[
        ("PID-3", Some("MRN1^^^HOSP^MR")),
        ("PID-3.1", Some("MRN1")),
        ("PID-3[1].4", Some("HOSP")),
        ("PID-3[2].1", Some("SSN9")),
        ("PID-3[2].4.1", Some("SSA")),
        ("PID-3[2].5", Some("SS")),
        ("PID-3[3]", None),
        ("PID-11.3", Some("TOWN")),
        ("PID[2]-3", None),
        ("EVN-1", Some("A01")),
        ("ZZZ-1", None),
    ];
    for (path, want) in cases {
        let got = m
            .get(&path.parse::<Path>().expect(path))
            .text()
            .map(|t| t.into_owned());
        assert_eq!(got.as_deref(), *want, "{path}");
    }
    let pid = m.find("PID", 1).expect("PID");
    assert_eq!(pid.field_count(), 11);
    assert_eq!(pid.field(3).children().count(), 2);
}

#[test]
fn escapes_are_decoded_lazily_in_values() {
    let input = "MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.5\rOBX|1|TX|X||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\X41\\\\H\\h\\N\\\\Q\\\r";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let m = &p.messages[0];
    assert_eq!(text(m, "OBX-5"), "a|b^c&d~e\\f\ngAh\\Q\\");
    let d = v2::json::escape_diagnostics(m);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, Code::UnknownEscape);
    assert_eq!(d[0].location.segment.as_deref(), Some("OBX"));
    assert_eq!(d[0].location.field, Some(5));
    // The byte offset points at the unknown escape in the input.
    let at = d[0].location.offset;
    assert_eq!(&input.as_bytes()[at..at + 3], b"\\Q\\");
}

#[test]
fn charsets() {
    // (name, bytes, expected PID-5.1, expect invalid-characters diagnostic)
    let mk = |msh18: &str, name: &[u8]| {
        let mut v = format!("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5||||||{msh18}\rPID|1||1||")
            .into_bytes();
        v.extend_from_slice(name);
        v.extend_from_slice(b"^X\r");
        v
    };
    let cases: Vec<(&str, Vec<u8>, &str, bool)> = vec![
        (
            "UTF-8 declared",
            mk("UNICODE UTF-8", "Müller".as_bytes()),
            "Müller",
            false,
        ),
        (
            "UTF-8 default",
            mk("", "Müller".as_bytes()),
            "Müller",
            false,
        ),
        (
            "8859/1 declared",
            mk("8859/1", b"M\xfcller"),
            "Müller",
            false,
        ),
        (
            "8859/2 declared",
            mk("8859/2", b"\xa3\xf3d\xbc"),
            "Łódź",
            false,
        ),
        (
            "8859/5 declared",
            mk("8859/5", b"\xb8\xd2\xd0\xdd"),
            "Иван",
            false,
        ),
        (
            "Latin-1 bytes without MSH-18 → fallback",
            mk("", b"M\xfcller"),
            "Müller",
            true,
        ),
        (
            "Latin-1 bytes declared UTF-8 → fallback",
            mk("UNICODE UTF-8", b"M\xfcller"),
            "Müller",
            true,
        ),
        (
            "windows-1252 quote without MSH-18",
            mk("", b"O\x92Brien"),
            "O\u{2019}Brien",
            true,
        ),
    ];
    for (name, bytes, want, invalid) in cases {
        let p = v2::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = &p.messages[0];
        assert_eq!(text(m, "PID-5.1"), want, "{name}");
        assert_eq!(
            codes(m).contains(&Code::InvalidCharacters),
            invalid,
            "{name}: {:?}",
            m.diagnostics()
        );
    }
    // Unknown MSH-18 values are reported.
    let bytes = mk("EBCDIC", b"X");
    let p = v2::parse(&bytes).expect("parse");
    assert!(codes(&p.messages[0]).contains(&Code::UnknownCharset));
    // The fallback is configurable.
    let opts = v2::ParseOptions {
        fallback_charset: encoding_rs::ISO_8859_7,
    };
    let bytes = mk("", b"\xe1");
    let p = v2::parse_with(&bytes, &opts).expect("parse");
    assert_eq!(text(&p.messages[0], "PID-5.1"), "α");
}

fn msg(id: &str) -> String {
    format!("MSH|^~\\&|A|B|C|D|2024||ADT^A04^ADT_A01|{id}|P|2.5\rEVN|A04\rPID|1||{id}\r")
}

#[test]
fn batch_shapes() {
    // (name, input, messages, batches, file envelope, envelope diagnostics expected)
    let fhs = "FHS|^~\\&|A|B|C|D|2024||||F1\r";
    let bhs = "BHS|^~\\&|A|B|C|D|2024||||B1\r";
    let cases: Vec<(&str, String, usize, usize, bool, bool)> = vec![
        ("single", msg("1"), 1, 0, false, false),
        (
            "glued, no envelope",
            format!("{}{}{}", msg("1"), msg("2"), msg("3")),
            3,
            0,
            false,
            false,
        ),
        (
            "glued with blank lines",
            format!("{}\r\r{}\n\n", msg("1"), msg("2")),
            2,
            0,
            false,
            false,
        ),
        (
            "BHS..BTS",
            format!("{bhs}{}{}BTS|2\r", msg("1"), msg("2")),
            2,
            1,
            false,
            false,
        ),
        (
            "FHS BHS..BTS FTS",
            format!("{fhs}{bhs}{}BTS|1\rFTS|1\r", msg("1")),
            1,
            1,
            true,
            false,
        ),
        (
            "two batches",
            format!(
                "{fhs}{bhs}{}BTS|1\r{bhs}{}{}BTS|2\rFTS|2\r",
                msg("1"),
                msg("2"),
                msg("3")
            ),
            3,
            2,
            true,
            false,
        ),
        (
            "FHS without batches",
            format!("{fhs}{}{}FTS|0\r", msg("1"), msg("2")),
            2,
            0,
            true,
            false,
        ),
        (
            "BTS count mismatch",
            format!("{bhs}{}BTS|5\r", msg("1")),
            1,
            1,
            false,
            true,
        ),
        (
            "BTS without BHS",
            format!("{}BTS|1\r", msg("1")),
            1,
            1,
            false,
            true,
        ),
        (
            "BHS without BTS",
            format!("{bhs}{}", msg("1")),
            1,
            1,
            false,
            true,
        ),
        (
            "FHS without FTS",
            format!("{fhs}{}", msg("1")),
            1,
            0,
            true,
            true,
        ),
        (
            "nested BHS",
            format!("{bhs}{}{bhs}{}BTS|1\r", msg("1"), msg("2")),
            2,
            2,
            false,
            true,
        ),
    ];
    for (name, input, n_msgs, n_batches, file, env_diag) in cases {
        let p = v2::parse(input.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.messages.len(), n_msgs, "{name}");
        assert_eq!(p.batches.len(), n_batches, "{name}");
        assert_eq!(p.file.is_some(), file, "{name}");
        let has = p.diagnostics.iter().any(|d| d.code == Code::BatchEnvelope);
        assert_eq!(has, env_diag, "{name}: {:?}", p.diagnostics);
        for (i, m) in p.messages.iter().enumerate() {
            assert_eq!(
                m.header().control_id.as_deref(),
                Some((i + 1).to_string().as_str()),
                "{name}"
            );
            assert_eq!(m.len(), 3, "{name}: message {i} segments");
        }
        if n_batches > 0 {
            let in_batches: usize = p.batches.iter().map(|b| b.messages.len()).sum();
            assert_eq!(
                in_batches, n_msgs,
                "{name}: every message belongs to a batch"
            );
            for (bi, b) in p.batches.iter().enumerate() {
                for (pos, &mi) in b.messages.iter().enumerate() {
                    let bp = p.messages[mi].batch().expect("batch position");
                    assert_eq!((bp.batch, bp.position), (bi, pos as u32 + 1), "{name}");
                }
            }
        }
    }
}

#[test]
fn segments_outside_any_message_are_errors_not_silent_drops() {
    let input = "BHS|^~\\&|A\rEVN|A04\rPID|1||X\rBTS|0\r";
    let err = v2::parse(input.as_bytes()).expect_err("no MSH");
    let d = err.diagnostics();
    assert!(
        d.iter().any(|d| d.code == Code::OrphanSegment
            && d.severity == Severity::Error
            && d.message.contains("EVN, PID")),
        "{d:?}"
    );
    assert!(d.iter().any(|d| d.code == Code::NoMsh));
}

#[test]
fn no_usable_msh_is_the_only_error() {
    for input in [
        &b""[..],
        b"hello world",
        b"MSH",
        b"MSHA^~\\&|x",
        b"\x00\x01\x02",
        b"PID|1||2\r",
    ] {
        let e = v2::parse(input).expect_err("no MSH");
        assert!(
            e.diagnostics().iter().any(|d| d.code == Code::NoMsh),
            "{input:?}"
        );
    }
}

#[test]
fn continuation_lines_stay_in_their_field() {
    let input = "MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.6\nOBX|1|TX|X||first line\nsecond line\nthird line||||||F\nOBX|2|NM|Y||5\n";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let m = &p.messages[0];
    assert_eq!(m.len(), 3);
    assert_eq!(text(m, "OBX-5"), "first line\nsecond line\nthird line");
    assert_eq!(text(m, "OBX-11"), "F");
    let cont: Vec<_> = m
        .diagnostics()
        .iter()
        .filter(|d| d.code == Code::ContinuationLine)
        .collect();
    assert_eq!(cont.len(), 2);
    assert_eq!(cont[0].location.line, 3);
    assert_eq!(cont[0].location.field, Some(5));
    assert_eq!(text(m, "OBX[2]-5"), "5");
}

#[test]
fn header_facts() {
    let p = v2::parse(ADT.as_bytes()).expect("parse");
    let h = p.messages[0].header();
    assert_eq!(
        h.sending_application.namespace_id.as_deref(),
        Some("SENDAPP")
    );
    assert_eq!(h.sending_facility.namespace_id.as_deref(), Some("SENDFAC"));
    assert_eq!(
        h.receiving_application.namespace_id.as_deref(),
        Some("RECVAPP")
    );
    assert_eq!(
        h.receiving_facility.namespace_id.as_deref(),
        Some("RECVFAC")
    );
    assert_eq!(h.message_code.as_deref(), Some("ADT"));
    assert_eq!(h.trigger_event.as_deref(), Some("A01"));
    assert_eq!(h.message_structure.as_deref(), Some("ADT_A01"));
    assert_eq!(h.control_id.as_deref(), Some("CTRL-1"));
    assert_eq!(h.processing_id.as_deref(), Some("P"));
    assert_eq!(h.version.as_deref(), Some("2.5.1"));
    assert_eq!(h.version_number(), Some((2, 5)));
    assert_eq!(h.sequence_number.as_deref(), Some("42"));
    assert_eq!(h.accept_ack_type.as_deref(), Some("AL"));
    assert_eq!(h.application_ack_type.as_deref(), Some("NE"));
    assert_eq!(h.character_set.as_deref(), Some("UNICODE UTF-8"));
    assert!(h.enhanced_mode());
    assert_eq!(h.message_type(), "ADT^A01");
}

#[test]
fn missing_header_fields_are_reported() {
    let p = v2::parse(b"MSH|^~\\&|A|B|C|D|2024||||\rPID|1\r").expect("parse");
    let d = p.messages[0].diagnostics();
    for field in [9, 10, 11, 12] {
        assert!(
            d.iter()
                .any(|d| d.code == Code::HeaderField && d.location.field == Some(field)),
            "MSH-{field}: {d:?}"
        );
    }
}

#[test]
fn diagnostics_never_quote_field_values() {
    // PHI must not leak into diagnostics: none of the message's values appear in any text.
    let input = "junk SECRETJUNK\rMSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5|||||8859/1\rPID|1||SECRETMRN||SECRETNAME\\Q\\\rSECRETLINE\rZZZ|SECRETZ\r";
    let p = v2::parse(input.as_bytes()).expect("parse");
    let m = &p.messages[0];
    let mut all: Vec<String> = p.diagnostics.iter().map(|d| d.to_string()).collect();
    all.extend(m.diagnostics().iter().map(|d| d.to_string()));
    all.extend(
        v2::json::escape_diagnostics(m)
            .iter()
            .map(|d| d.to_string()),
    );
    all.extend(
        v2::Structures::builtin()
            .group(m)
            .diagnostics
            .iter()
            .map(|d| d.to_string()),
    );
    assert!(all.len() >= 3, "{all:?}");
    for d in &all {
        assert!(!d.contains("SECRET"), "diagnostic leaks a value: {d}");
    }
}
