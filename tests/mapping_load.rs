//! The mapping loader reports every problem as `file:line:col: what`, all at once, and a bad
//! mapping set does not load.

use v2fhir::mapping::load::load_sources;

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    let owned: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    match load_sources(&owned) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(|x| x.to_string()).collect(),
    }
}

/// Whether an error at `prefix` (`file:line:`) mentions `text`.
fn has_error(e: &[String], prefix: &str, text: &str) -> bool {
    e.iter().any(|x| x.starts_with(prefix) && x.contains(text))
}

const VOCAB: (&str, &str) = (
    "mappings/vocab/AdministrativeSex.csv",
    "source_code,target_code\nF,female\nM,male\n",
);

#[test]
fn a_valid_minimal_set_loads() {
    let e = errors(&[
        (
            "m/messages/ADT.yaml",
            "kind: message\nname: ADT\nstructures: [ADT_A01]\nresources:\n  - { as: patient, type: Patient, source: PID, map: \"PID[Patient]\", id: { key: [PID-3.1] } }\n",
        ),
        (
            "m/segments/PID.yaml",
            "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: gender, from: PID-8.1, to: gender, vocab: AdministrativeSex }\n  - { name: id, from: \"PID-3[*]\", to: \"identifier[+]\", rules: [{ name: v, from: .1, to: value }] }\n",
        ),
        VOCAB,
    ]);
    assert!(e.is_empty(), "{e:#?}");
}

#[test]
fn every_error_is_reported_with_its_position() {
    let e = errors(&[
        // line 4: unknown rule key (schema); line 5: bad target element; line 6: unknown vocab;
        // line 7: duplicate rule name; line 8: list target without [+]; line 9: field beyond PID's fields.
        (
            "m/segments/PID.yaml",
            "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: a, from: PID-8, to: gender, colour: red }\n  - { name: b, from: PID-8, to: sex }\n  - { name: c, from: PID-8, to: gender, vocab: Nope }\n  - { name: c, from: PID-7, to: birthDate, fn: date }\n  - { name: d, from: PID-3, to: identifier, via: \"CX[Identifier]\" }\n  - { name: e, from: PID-300, to: gender }\n",
        ),
        // A YAML syntax error in another file is reported too.
        ("m/segments/Broken.yaml", "kind: segment\nmap: [unclosed\n"),
        // A message map naming a map that does not exist and an unknown structure.
        (
            "m/messages/X.yaml",
            "kind: message\nname: X\nstructures: [ZZZ_Z99]\nresources:\n  - { as: p, type: Patient, source: PID, map: \"PID[Nope]\" }\n",
        ),
    ]);
    let has = |prefix: &str, text: &str| has_error(&e, prefix, text);
    assert!(has("m/segments/PID.yaml:4:", "colour"), "{e:#?}");
    assert!(
        has("m/segments/PID.yaml:5:", "Patient has no element 'sex'"),
        "{e:#?}"
    );
    assert!(
        has("m/segments/PID.yaml:6:", "no vocabulary named Nope"),
        "{e:#?}"
    );
    assert!(
        has("m/segments/PID.yaml:7:", "rule name 'c' is already used"),
        "{e:#?}"
    );
    assert!(
        has("m/segments/PID.yaml:8:", "is a list: write identifier[+]"),
        "{e:#?}"
    );
    assert!(
        has("m/segments/PID.yaml:9:", "PID-300 does not exist"),
        "{e:#?}"
    );
    assert!(has("m/segments/Broken.yaml:", ""), "{e:#?}");
    assert!(
        has("m/messages/X.yaml:3:", "unknown message structure ZZZ_Z99"),
        "{e:#?}"
    );
    assert!(has("m/messages/X.yaml:5:", "PID[Nope]"), "{e:#?}");
}

#[test]
fn type_mismatches_and_undeclared_references_are_caught() {
    let e = errors(&[
        (
            "m/datatypes/CX.yaml",
            "kind: datatype\nmap: \"CX[Identifier]\"\nrules:\n  - { name: v, from: .1, to: value }\n",
        ),
        (
            "m/segments/PID.yaml",
            "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: a, from: \"PID-5[*]\", to: \"name[+]\", via: \"CX[Identifier]\" }\n  - { name: b, to: generalPractitioner, ref: nobody }\n  - { name: c, from: .1, to: gender }\n  - { name: d, from: PID-5, to: \"name[+]\" }\n",
        ),
    ]);
    let has = |prefix: &str, text: &str| has_error(&e, prefix, text);
    assert!(
        has(
            "m/segments/PID.yaml:4:",
            "produces Identifier, but the target element is HumanName"
        ),
        "{e:#?}"
    );
    assert!(
        has(
            "m/segments/PID.yaml:5:",
            "no message map declares a resource 'as: nobody'"
        ),
        "{e:#?}"
    );
    assert!(has("m/segments/PID.yaml:6:", "relative path"), "{e:#?}");
    assert!(
        has("m/segments/PID.yaml:7:", "copying text into HumanName"),
        "{e:#?}"
    );
}

#[test]
fn the_shipped_mapping_set_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = v2fhir::mapping::load::load_dir(&root.join("mappings")) {
        panic!(
            "{}",
            e.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn cycles_between_maps_are_rejected() {
    let e = errors(&[
        (
            "m/datatypes/A.yaml",
            "kind: datatype\nmap: \"CWE[CodeableConcept]\"\nrules:\n  - { name: c, from: .1, to: \"coding[+]\", via: \"CWE[Coding]\" }\n",
        ),
        (
            "m/datatypes/B.yaml",
            "kind: datatype\nmap: \"CWE[Coding]\"\nrules:\n  - { name: x, from: .4, to: \"extension[+].valueCodeableConcept\", via: \"CWE[CodeableConcept]\" }\n",
        ),
    ]);
    assert!(
        e.iter().any(|x| x.contains(
            "is part of a cycle: CWE[CodeableConcept] → CWE[Coding] → CWE[CodeableConcept]"
        )),
        "{e:#?}"
    );
    // Through the rules of a nested resource too: XON[Organization] reaches XPN[HumanName] only
    // through such a rule, and XPN[HumanName] builds an XON[Organization].
    let e = errors(&[
        (
            "m/datatypes/XON.yaml",
            "kind: datatype\nmap: \"XON[Organization]\"\nrules:\n  - name: p\n    from: .1\n    to: partOf\n    resource:\n      type: Organization\n      map: \"XON[Organization:other]\"\n      rules:\n        - { name: q, from: .2, to: \"contact[+].name\", via: \"XPN[HumanName]\" }\n",
        ),
        (
            "m/datatypes/XON2.yaml",
            "kind: datatype\nmap: \"XON[Organization:other]\"\nrules:\n  - { name: n, from: .1, to: name }\n",
        ),
        (
            "m/datatypes/XPN.yaml",
            "kind: datatype\nmap: \"XPN[HumanName]\"\nrules:\n  - name: o\n    from: .1\n    to: \"extension[+].valueReference\"\n    resource:\n      type: Organization\n      map: \"XON[Organization]\"\n",
        ),
    ]);
    assert!(
        e.iter()
            .any(|x| x.contains("is part of a cycle") && x.contains("XPN[HumanName]")),
        "{e:#?}"
    );
}

#[test]
fn sender_overlay_errors_are_reported() {
    let e = errors(&[
        (
            "m/segments/PID.yaml",
            "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: gender, from: PID-8.1, to: gender }\n",
        ),
        (
            "m/senders/x.yaml",
            "kind: sender\nname: x\nmatch: { MSH-3: [X] }\npatch:\n  - { map: \"PID[Patient]\", remove: nope }\n  - { map: \"PV1[Encounter]\", remove: status }\n  - { map: \"PID[Patient]\", replace: gender, with: { name: gender, from: PID-8, to: sex } }\n  - { map: \"PID[Patient]\", rules: [{ name: gender, from: PID-8, to: gender }] }\n",
        ),
    ]);
    let has = |prefix: &str, text: &str| has_error(&e, prefix, text);
    assert!(
        has("m/senders/x.yaml:5:", "has no rule named 'nope'"),
        "{e:#?}"
    );
    assert!(
        has(
            "m/senders/x.yaml:6:",
            "no segment or datatype map named PV1[Encounter]"
        ),
        "{e:#?}"
    );
    assert!(
        has("m/senders/x.yaml:7:", "Patient has no element 'sex'"),
        "{e:#?}"
    );
    assert!(
        has("m/senders/x.yaml:8:", "two rules named 'gender'"),
        "{e:#?}"
    );
}

#[test]
fn a_broken_map_is_reported_once_not_at_every_use() {
    let e = errors(&[
        // A syntax error (unclosed flow mapping) in the datatype map everyone uses…
        (
            "m/datatypes/CX.yaml",
            "kind: datatype\nmap: \"CX[Identifier]\"\nrules:\n  - { name: value, from: .1, to: value\n",
        ),
        // …must not also be reported at each `via` that names it, nor by an overlay on a user.
        (
            "m/segments/PID.yaml",
            "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: identifier, from: \"PID-3[*]\", to: \"identifier[+]\", via: \"CX[Identifier]\" }\n  - { name: other, from: \"PID-4[*]\", to: \"identifier[+]\", via: \"CX[Identifier]\" }\n",
        ),
        (
            "m/senders/s.yaml",
            "kind: sender\nname: s\nmatch: { MSH-3: [S] }\npatch:\n  - { map: \"PID[Patient]\", remove: identifier }\n",
        ),
    ]);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].starts_with("m/datatypes/CX.yaml:"), "{e:#?}");
}

#[test]
fn group_by_needs_rules_and_several_items() {
    let e = errors(&[(
        "m/segments/RXA.yaml",
        "kind: segment\nmap: \"RXA[Immunization]\"\nrules:\n  - { name: a, from: RXA-5, group_by: OBX-4, to: vaccineCode.text }\n",
    )]);
    assert!(
        e.iter().any(
            |x| x.starts_with("m/segments/RXA.yaml:4:") && x.contains("group_by needs `rules`")
        ),
        "{e:#?}"
    );
}

/// `join` takes decoded texts from a `from` that selects several items: a single item, a datatype
/// map or a non-text function is an error at the rule's line.
#[test]
fn join_needs_several_items_and_text() {
    let e = errors(&[(
        "m/segments/OBX.yaml",
        "kind: segment\nmap: \"OBX[Observation]\"\nrules:\n  - { name: a, from: OBX-5, join: \"\\n\", to: valueString }\n  - { name: b, from: \"OBX-5[*]\", join: \" \", fn: date, to: effectiveDateTime }\n  - { name: c, from: \"OBX-5[*]\", join: \" \", to: valueString }\n",
    )]);
    assert!(
        has_error(
            &e,
            "m/segments/OBX.yaml:4:",
            "join needs a `from` that selects several"
        ),
        "{e:#?}"
    );
    assert!(
        has_error(&e, "m/segments/OBX.yaml:5:", "join takes the decoded texts"),
        "{e:#?}"
    );
    assert!(!e.iter().any(|x| x.contains("OBX.yaml:6:")), "{e:#?}");
}

/// `rejected` says what a value the condition rejects counts as: without a `when` it means
/// nothing and is an error; a value other than `consumed`/`reported` fails the schema.
#[test]
fn rejected_needs_a_condition_and_a_known_value() {
    let e = errors(&[(
        "m/segments/PID.yaml",
        "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: a, from: PID-30, to: deceasedBoolean, fn: boolean, rejected: consumed }\n  - { name: b, from: PID-30, to: deceasedBoolean, fn: boolean, when: { not_valued: PID-29 }, rejected: consumed }\n  - { name: c, from: PID-30, to: deceasedBoolean, fn: boolean, when: { not_valued: PID-29 }, rejected: dropped }\n",
    )]);
    assert!(
        has_error(&e, "m/segments/PID.yaml:4:", "it needs a `when`"),
        "{e:#?}"
    );
    assert!(!e.iter().any(|x| x.contains("PID.yaml:5:")), "{e:#?}");
    assert!(e.iter().any(|x| x.contains("PID.yaml:6:")), "{e:#?}");
}

/// `consumes` names fields read where each accepted item was: with a `SEG[*]-f` `from`, fields of
/// that segment as `SEG[*]-n`; otherwise plain field paths. Anything else, or no `from`, is an
/// error at the rule's line; a field the segment does not have is one too.
#[test]
fn consumes_names_fields_of_the_items_segment() {
    let e = errors(&[(
        "m/segments/OBR.yaml",
        "kind: segment\nmap: \"OBR[DiagnosticReport]\"\nrules:\n  - { name: a, from: \"OBX[*]-5[*]\", join: \"\\n\", to: conclusion, consumes: [\"OBX[*]-2\"] }\n  - { name: b, from: \"OBX[*]-5[*]\", join: \"\\n\", to: conclusion, consumes: [\"OBX-2\"] }\n  - { name: c, from: \"OBX[*]-5[*]\", join: \"\\n\", to: conclusion, consumes: [\"NTE[*]-3\"] }\n  - { name: d, value: x, to: conclusion, consumes: [\"OBR-2\"] }\n  - { name: e, from: OBR-13, to: conclusion, consumes: [\"OBR-99\"] }\n  - { name: f, from: OBR-13, to: conclusion, consumes: [\"OBR-12\"] }\n",
    )]);
    assert!(!e.iter().any(|x| x.contains("OBR.yaml:4:")), "{e:#?}");
    assert!(
        has_error(&e, "m/segments/OBR.yaml:5:", "a field of every OBX"),
        "{e:#?}"
    );
    assert!(
        has_error(&e, "m/segments/OBR.yaml:6:", "a field of every OBX"),
        "{e:#?}"
    );
    assert!(
        has_error(&e, "m/segments/OBR.yaml:7:", "it needs a `from`"),
        "{e:#?}"
    );
    assert!(e.iter().any(|x| x.contains("OBR.yaml:8:")), "{e:#?}");
    assert!(!e.iter().any(|x| x.contains("OBR.yaml:9:")), "{e:#?}");
}

/// In a datatype map, `consumes` may also name a component of the value the rule reads (the type
/// of the id it converts); in a segment map a component path is an error.
#[test]
fn consumes_takes_components_in_datatype_maps() {
    let e = errors(&[
        (
            "m/datatypes/HD.yaml",
            "kind: datatype\nmap: \"HD[Organization]\"\nrules:\n  - { name: a, from: \".2\", to: name, consumes: [\".3\"] }\n",
        ),
        (
            "m/segments/OBR.yaml",
            "kind: segment\nmap: \"OBR[DiagnosticReport]\"\nrules:\n  - { name: a, from: OBR-13, to: conclusion, consumes: [\".3\"] }\n",
        ),
    ]);
    assert!(!e.iter().any(|x| x.contains("HD.yaml")), "{e:#?}");
    assert!(
        has_error(&e, "m/segments/OBR.yaml:4:", "a field path (SEG-n)"),
        "{e:#?}"
    );
}

/// `matches` takes one path and a regular expression that compiles; `in_vocab` one path and a
/// vocabulary that exists; `converts` one path and a function that exists. Each mistake is an error at the rule's line.
#[test]
fn matches_and_in_vocab_conditions_are_checked() {
    let e = errors(&[
        (
            "m/vocab/ObservationStatus.csv",
            "source_code,target_code,target_display\nF,final,Final\n",
        ),
        (
            "m/segments/OBX.yaml",
            "kind: segment\nmap: \"OBX[Observation]\"\nrules:\n  - { name: a, from: OBX-5, to: valueString, when: { matches: { \"OBX-5\": '^[<>]' } } }\n  - { name: b, from: OBX-5, to: valueString, when: { matches: { \"OBX-5\": '^[<>' } } }\n  - { name: c, from: OBX-5, to: valueString, when: { in_vocab: { \"OBX-11\": ObservationStatus } } }\n  - { name: d, from: OBX-5, to: valueString, when: { in_vocab: { \"OBX-11\": NoSuchVocab } } }\n  - { name: e, from: OBX-5, to: valueString, when: { converts: { \"OBX-5\": compared_decimal } } }\n  - { name: f, from: OBX-5, to: valueString, when: { converts: { \"OBX-5\": no_such_fn } } }\n",
        ),
    ]);
    assert!(!e.iter().any(|x| x.contains("OBX.yaml:4:")), "{e:#?}");
    assert!(
        has_error(&e, "m/segments/OBX.yaml:5:", "not a regular expression"),
        "{e:#?}"
    );
    assert!(!e.iter().any(|x| x.contains("OBX.yaml:6:")), "{e:#?}");
    assert!(
        has_error(
            &e,
            "m/segments/OBX.yaml:7:",
            "no vocabulary named NoSuchVocab"
        ),
        "{e:#?}"
    );
    // `converts` names a function that exists.
    assert!(!e.iter().any(|x| x.contains("OBX.yaml:8:")), "{e:#?}");
    assert!(
        has_error(&e, "m/segments/OBX.yaml:9:", "no function named no_such_fn"),
        "{e:#?}"
    );
}

/// A primitive's element (`_birthDate`, for its extensions) is a target like any element of
/// the R4 model: one the resource lacks is an error at the rule's line.
#[test]
fn primitive_element_targets_are_checked_against_r4() {
    let e = errors(&[(
        "m/segments/PID.yaml",
        "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: a, from: PID-7, to: \"_birthDate.extension[+].valueDateTime\", fn: datetime }\n  - { name: b, from: PID-7, to: \"_birthDat.extension[+].valueDateTime\", fn: datetime }\n",
    )]);
    assert!(!e.iter().any(|x| x.contains("PID.yaml:4:")), "{e:#?}");
    assert!(
        has_error(&e, "m/segments/PID.yaml:5:", "_birthDat"),
        "{e:#?}"
    );
}

/// `GROUP/SEG-n` names a group some message structure has.
#[test]
fn a_group_path_names_a_known_group() {
    let e = errors(&[(
        "m/segments/RXE.yaml",
        "kind: segment\nmap: \"RXE[MedicationRequest]\"\nrules:\n  - { name: a, from: \"TIMING_ENCODDED/TQ1-7\", to: authoredOn, fn: datetime }\n  - { name: b, from: \"TIMING_ENCODED/TQ1-7\", to: authoredOn, fn: datetime }\n",
    )]);
    assert!(
        has_error(
            &e,
            "m/segments/RXE.yaml:4:",
            "no message structure has a group named TIMING_ENCODDED"
        ),
        "{e:#?}"
    );
    assert!(!e.iter().any(|x| x.contains("RXE.yaml:5:")), "{e:#?}");
}

/// The rules of a nested `resource:` are checked like any others, against the nested resource's
/// type: a target it lacks is an error at that rule's line, and a datatype map's nested rules may
/// not read segment fields (a datatype map has no segment).
#[test]
fn nested_resource_rules_are_checked() {
    let e = errors(&[
        (
            "m/datatypes/XON.yaml",
            "kind: datatype\nmap: \"XON[Organization]\"\nrules:\n  - { name: n, from: .1, to: name }\n",
        ),
        (
            "m/datatypes/XCN.yaml",
            "kind: datatype\nmap: \"XCN[Practitioner]\"\nrules:\n  - name: org\n    from: .1\n    to: \"qualification[+].issuer\"\n    resource:\n      type: Organization\n      map: \"XON[Organization]\"\n      rules:\n        - { name: a, from: OBX-24, to: \"alias[+]\" }\n",
        ),
        (
            "m/segments/OBX.yaml",
            "kind: segment\nmap: \"OBX[Observation]\"\nrules:\n  - name: org\n    from: OBX-23\n    to: \"performer[+]\"\n    resource:\n      type: Organization\n      map: \"XON[Organization]\"\n      rules:\n        - { name: ok, from: OBX-24.3, to: \"address[+].city\" }\n        - { name: bad, from: OBX-24.1, to: valueString }\n",
        ),
    ]);
    let has = |prefix: &str, text: &str| has_error(&e, prefix, text);
    assert!(has("m/segments/OBX.yaml:12:", "valueString"), "{e:#?}");
    assert!(
        !e.iter().any(|x| x.starts_with("m/segments/OBX.yaml:11:")),
        "{e:#?}"
    );
    assert!(
        has("m/datatypes/XCN.yaml:11:", "OBX-24 is a segment path"),
        "{e:#?}"
    );
    assert_eq!(e.len(), 2, "{e:#?}");
}

/// A vocabulary's `#! unmatched: FUNCTION` line names a function that can apply to a code alone;
/// a mistyped directive or function is an error that names the line, and the set does not load.
#[test]
fn vocabulary_directives_are_checked() {
    let good = errors(&[(
        "m/vocab/CodingSystem.csv",
        "# comment\n#! unmatched: uri\nsource_code,target_code\nLN,http://loinc.org\n",
    )]);
    assert!(good.is_empty(), "{good:#?}");
    let e = errors(&[
        (
            "m/vocab/A.csv",
            "#! unmatched: date\nsource_code,target_code\nX,y\n",
        ),
        (
            "m/vocab/B.csv",
            "# fine\n#! fallback: uri\nsource_code,target_code\nX,y\n",
        ),
    ]);
    assert!(
        has_error(&e, "m/vocab/A.csv:1:", "'unmatched: date'"),
        "{e:#?}"
    );
    assert!(
        has_error(&e, "m/vocab/B.csv:2:", "unknown directive"),
        "{e:#?}"
    );
}

/// `extends`: a map starts from another map's rules; its own rules replace the base's of the same
/// name in place and the others follow. A base that is missing, of the other kind, of another
/// FHIR type, or a cycle is an error at the map's `extends` line.
#[test]
fn extends_takes_the_base_rules_and_checks_the_base() {
    let base = (
        "m/datatypes/CWE.yaml",
        "kind: datatype\nmap: \"CWE[CodeableConcept]\"\nrules:\n  - { name: code, from: \".1\", to: \"coding[+].code\" }\n  - { name: text, from: \".9\", to: text }\n",
    );
    let derived = (
        "m/datatypes/IS.yaml",
        "kind: datatype\nmap: \"CWE[CodeableConcept:X]\"\nextends: \"CWE[CodeableConcept]\"\nrules:\n  - { name: text, from: \".2\", to: text }\n  - { name: extra, from: \".4\", to: \"coding[+].code\" }\n",
    );
    let owned: Vec<(String, String)> = [base, derived]
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let plan = v2fhir::mapping::load::load_sources(&owned).unwrap_or_else(|e| panic!("{e:#?}"));
    let m = plan
        .maps
        .iter()
        .find(|m| m.name == "CWE[CodeableConcept:X]")
        .expect("derived map");
    let names: Vec<&str> = m.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["code", "text", "extra"]);
    assert_eq!(
        m.rules[1].from.as_ref().map(|s| s.to_string()).as_deref(),
        Some(".2")
    );

    let e = errors(&[
        base,
        (
            "m/datatypes/A.yaml",
            "kind: datatype\nmap: \"CWE[CodeableConcept:A]\"\nextends: \"CWE[CodeableConcept:Nope]\"\nrules: []\n",
        ),
        (
            "m/datatypes/B.yaml",
            "kind: datatype\nmap: \"CX[Identifier:B]\"\nextends: \"CWE[CodeableConcept]\"\nrules: []\n",
        ),
        (
            "m/segments/C.yaml",
            "kind: segment\nmap: \"PID[CodeableConcept]\"\nextends: \"CWE[CodeableConcept]\"\nrules: []\n",
        ),
        (
            "m/datatypes/D.yaml",
            "kind: datatype\nmap: \"CWE[CodeableConcept:D]\"\nextends: \"CWE[CodeableConcept:E]\"\nrules: []\n",
        ),
        (
            "m/datatypes/E.yaml",
            "kind: datatype\nmap: \"CWE[CodeableConcept:E]\"\nextends: \"CWE[CodeableConcept:D]\"\nrules: []\n",
        ),
    ]);
    assert!(
        has_error(
            &e,
            "m/datatypes/A.yaml:3:",
            "no segment or datatype map named CWE[CodeableConcept:Nope]"
        ),
        "{e:#?}"
    );
    assert!(
        has_error(
            &e,
            "m/datatypes/B.yaml:3:",
            "a map extends one of its own FHIR type"
        ),
        "{e:#?}"
    );
    assert!(
        has_error(
            &e,
            "m/segments/C.yaml:3:",
            "a map extends one of its own kind"
        ),
        "{e:#?}"
    );
    assert!(e.iter().any(|x| x.contains("extends itself")), "{e:#?}");
}

/// A vocabulary's own mistakes are reported at their line: a source code twice, a header
/// without `target_code`.
#[test]
fn vocabulary_errors_name_their_line() {
    let e = errors(&[
        (
            "m/vocab/Dup.csv",
            "# a comment\nsource_code,target_code\nA,a\nA,b\n",
        ),
        ("m/vocab/Head.csv", "\n# c\nsource_code,code\nA,a\n"),
    ]);
    assert!(
        has_error(&e, "m/vocab/Dup.csv:4:", "source_code 'A' appears twice"),
        "{e:#?}"
    );
    assert!(
        has_error(&e, "m/vocab/Head.csv:3:", "header must have target_code"),
        "{e:#?}"
    );
}

/// `with` gives a function further inputs: only `end_after`/`start_before` take them, and they
/// need them; the paths are checked like any source path.
#[test]
fn function_inputs_are_checked() {
    let e = errors(&[(
        "m/segments/PV1.yaml",
        "kind: segment\nmap: \"PV1[Encounter]\"\nrules:\n  - { name: a, from: PV1-44, to: period.start, fn: datetime, with: [PV1-45] }\n  - { name: b, from: PV1-44, to: period.end, fn: end_after }\n  - { name: c, from: PV1-44, to: period.end, fn: end_after, with: [PV1-999] }\n  - { name: d, from: PV1-44, to: period.end, fn: end_after, with: [PV1-45, PV1-46, PV1-47] }\n  - { name: e, from: PV1-44, to: period.end, fn: end_after, with: [PV1-45, PV1-46] }\n",
    )]);
    let has = |prefix: &str, text: &str| has_error(&e, prefix, text);
    assert!(
        has(
            "m/segments/PV1.yaml:4:",
            "`with` gives a function further inputs"
        ),
        "{e:#?}"
    );
    assert!(
        has("m/segments/PV1.yaml:5:", "fn end_after needs `with`"),
        "{e:#?}"
    );
    assert!(has("m/segments/PV1.yaml:6:", "PV1-999"), "{e:#?}");
    // Three inputs: the schema allows two at most.
    assert!(has("m/segments/PV1.yaml:7:", "/with"), "{e:#?}");
    assert!(
        !e.iter().any(|x| x.to_string().contains("PV1.yaml:8:")),
        "{e:#?}"
    );
}
