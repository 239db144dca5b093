use proptest::prelude::*;

use super::*;

fn parse(text: &str) -> Expr {
    Query::parse(text)
        .unwrap_or_else(|error| panic!("{text:?} should parse: {error}"))
        .expr()
        .clone()
}

fn field(name: &str) -> Field {
    Field::parse(name).unwrap_or_else(|error| panic!("{name:?} is a field: {error}"))
}

fn term(name: &str, predicate: Predicate) -> Expr {
    Expr::Term(Term {
        field: Some(field(name)),
        predicate,
    })
}

fn equals(name: &str, value: &str) -> Expr {
    term(name, Predicate::Equals(Value::Literal(value.to_owned())))
}

fn free(value: &str) -> Expr {
    Expr::Term(Term {
        field: None,
        predicate: Predicate::Equals(Value::Literal(value.to_owned())),
    })
}

fn range(name: &str, lower: Bound, upper: Bound) -> Expr {
    term(name, Predicate::Range { lower, upper })
}

fn inclusive(value: &str) -> Bound {
    Bound::Inclusive(value.to_owned())
}

fn exclusive(value: &str) -> Bound {
    Bound::Exclusive(value.to_owned())
}

fn not(expr: Expr) -> Expr {
    Expr::Not(Box::new(expr))
}

fn parse_error(text: &str) -> QueryError {
    Query::parse(text).expect_err(&format!("{text:?} should not parse"))
}

#[test]
fn term_forms_parse() {
    let cases = [
        ("thingName:lamp-1", equals("thingName", "lamp-1")),
        (
            "shadow.reported.on:true",
            equals("shadow.reported.on", "true"),
        ),
        (
            "shadow.reported.temp:-5",
            equals("shadow.reported.temp", "-5"),
        ),
        (
            "shadow.desired.fw:\"1.2 beta\"",
            equals("shadow.desired.fw", "1.2 beta"),
        ),
        (
            "shadow.reported.location:*",
            term("shadow.reported.location", Predicate::Exists),
        ),
        ("thingName : lamp", equals("thingName", "lamp")),
        (r"thingName:a\:b", equals("thingName", "a:b")),
        (r"thingName:\*", equals("thingName", "*")),
        ("thingName:\"*\"", equals("thingName", "*")),
        ("thingName:\"\"", equals("thingName", "")),
        ("abc", free("abc")),
        ("\"two words\"", free("two words")),
        ("*", Expr::MatchAll),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text), expected, "query {text:?}");
    }
}

#[test]
fn wildcards_become_patterns() {
    let pattern = |parts: Vec<PatternPart>| Predicate::Equals(Value::Pattern(parts));
    let text = |value: &str| PatternPart::Text(value.to_owned());
    assert_eq!(
        parse("thingName:lamp-*"),
        term(
            "thingName",
            pattern(vec![text("lamp-"), PatternPart::AnyString])
        )
    );
    assert_eq!(
        parse("thingName:ab?"),
        term("thingName", pattern(vec![text("ab"), PatternPart::AnyChar]))
    );
    assert_eq!(
        parse(r"thingName:i*t\*"),
        term(
            "thingName",
            pattern(vec![text("i"), PatternPart::AnyString, text("t*")])
        )
    );
    assert_eq!(
        parse("thingName:*my"),
        term(
            "thingName",
            pattern(vec![PatternPart::AnyString, text("my")])
        )
    );
    assert_eq!(
        parse("lamp*"),
        Expr::Term(Term {
            field: None,
            predicate: pattern(vec![text("lamp"), PatternPart::AnyString]),
        })
    );
}

#[test]
fn ranges_and_comparisons_parse() {
    let name = "shadow.reported.battery";
    let cases = [
        (
            "shadow.reported.battery:[70 TO 100]",
            range(name, inclusive("70"), inclusive("100")),
        ),
        (
            "shadow.reported.battery:{70 TO 100}",
            range(name, exclusive("70"), exclusive("100")),
        ),
        (
            "shadow.reported.battery:{70 TO 100]",
            range(name, exclusive("70"), inclusive("100")),
        ),
        (
            "shadow.reported.battery:[70 TO 100}",
            range(name, inclusive("70"), exclusive("100")),
        ),
        (
            "shadow.reported.battery:[* TO 100]",
            range(name, Bound::Unbounded, inclusive("100")),
        ),
        (
            "shadow.reported.battery:[-10 TO -5]",
            range(name, inclusive("-10"), inclusive("-5")),
        ),
        (
            "shadow.reported.battery:[\"a b\" TO \"*\"]",
            range(name, inclusive("a b"), inclusive("*")),
        ),
        (
            "shadow.reported.battery>5",
            range(name, exclusive("5"), Bound::Unbounded),
        ),
        (
            "shadow.reported.battery >= 5",
            range(name, inclusive("5"), Bound::Unbounded),
        ),
        (
            "shadow.reported.battery<5",
            range(name, Bound::Unbounded, exclusive("5")),
        ),
        (
            "shadow.reported.battery<=5",
            range(name, Bound::Unbounded, inclusive("5")),
        ),
        (
            "shadow.reported.battery:{5 TO *]",
            range(name, exclusive("5"), Bound::Unbounded),
        ),
        (
            "shadow.reported.battery>a*",
            range(name, exclusive("a*"), Bound::Unbounded),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text), expected, "query {text:?}");
    }
}

#[test]
fn boolean_operators_parse() {
    let (a, b, c) = (free("a"), free("b"), free("c"));
    let cases = [
        ("a AND b", Expr::And(vec![a.clone(), b.clone()])),
        ("a b", Expr::And(vec![a.clone(), b.clone()])),
        ("a OR b", Expr::Or(vec![a.clone(), b.clone()])),
        ("NOT a", not(a.clone())),
        ("-a", not(a.clone())),
        ("NOT NOT a", not(not(a.clone()))),
        (
            "a AND b AND c",
            Expr::And(vec![a.clone(), b.clone(), c.clone()]),
        ),
        (
            "a OR b OR c",
            Expr::Or(vec![a.clone(), b.clone(), c.clone()]),
        ),
        ("a NOT b", Expr::And(vec![a.clone(), not(b.clone())])),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text), expected, "query {text:?}");
    }
}

#[test]
fn not_binds_tighter_than_and_than_or() {
    let (a, b, c) = (free("a"), free("b"), free("c"));
    let cases = [
        (
            "a OR b AND c",
            Expr::Or(vec![a.clone(), Expr::And(vec![b.clone(), c.clone()])]),
        ),
        (
            "a AND b OR c",
            Expr::Or(vec![Expr::And(vec![a.clone(), b.clone()]), c.clone()]),
        ),
        (
            "a OR b c",
            Expr::Or(vec![a.clone(), Expr::And(vec![b.clone(), c.clone()])]),
        ),
        ("NOT a AND b", Expr::And(vec![not(a.clone()), b.clone()])),
        ("NOT a OR b", Expr::Or(vec![not(a.clone()), b.clone()])),
        (
            "a OR NOT b AND c",
            Expr::Or(vec![a.clone(), Expr::And(vec![not(b.clone()), c.clone()])]),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text), expected, "query {text:?}");
    }
}

#[test]
fn parentheses_override_precedence() {
    let (a, b, c) = (free("a"), free("b"), free("c"));
    assert_eq!(
        parse("(a OR b) AND c"),
        Expr::And(vec![Expr::Or(vec![a.clone(), b.clone()]), c.clone()])
    );
    assert_eq!(
        parse("NOT (a AND b)"),
        not(Expr::And(vec![a.clone(), b.clone()]))
    );
    assert_eq!(parse("((a))"), a);
    assert_eq!(
        parse("(a OR b) OR c"),
        Expr::Or(vec![Expr::Or(vec![free("a"), b]), c])
    );
}

#[test]
fn field_group_applies_field_inside() {
    let pattern = Predicate::Equals(Value::Pattern(vec![
        PatternPart::Text("tv".to_owned()),
        PatternPart::AnyString,
    ]));
    assert_eq!(
        parse("thingName:(tv* AND -plasma)"),
        Expr::And(vec![
            term("thingName", pattern),
            not(equals("thingName", "plasma"))
        ])
    );
    assert_eq!(
        parse("shadow.reported.x:(1 OR [5 TO 7] OR \"a b\" OR *)"),
        Expr::Or(vec![
            equals("shadow.reported.x", "1"),
            range("shadow.reported.x", inclusive("5"), inclusive("7")),
            equals("shadow.reported.x", "a b"),
            term("shadow.reported.x", Predicate::Exists),
        ])
    );
    assert_eq!(
        parse("thingName:(a OR shadow.version:2)"),
        Expr::Or(vec![
            equals("thingName", "a"),
            equals("shadow.version", "2")
        ])
    );
}

#[test]
fn aws_example_queries_parse() {
    // From https://docs.aws.amazon.com/iot/latest/developerguide/example-queries.html, with
    // registry fields replaced by shadow fields.
    let examples = [
        "shadow.reported.attr1:abc AND shadow.reported.attr2<5 NOT shadow.reported.attr3>10",
        "shadow.hasDelta:true",
        "shadow.reported.stats.battery:{70 TO 100} (v2 OR v3) NOT shadow.reported.model:legacy",
        "shadow.reported.myvalues:2",
        "shadow.reported.location:* NOT shadow.desired.stats.battery:*",
        "shadow.reported.serialNumber:[\"abcd\" TO \"abcf\"]",
        "shadow.name.Home01.reported.welcome: *",
    ];
    for example in examples {
        assert!(Query::parse(example).is_ok(), "{example:?} should parse");
    }
}

#[test]
fn named_shadow_fields_parse() {
    let named = |property| Field::Shadow {
        shadow: ShadowName::Named("lamp".to_owned()),
        property,
    };
    let state = |section, keys: &[&str]| ShadowProperty::State {
        section,
        path: keys.iter().map(|key| (*key).to_owned()).collect(),
    };
    let cases = [
        ("shadow.name.lamp.hasDelta", named(ShadowProperty::HasDelta)),
        ("shadow.name.lamp.version", named(ShadowProperty::Version)),
        (
            "shadow.name.lamp.reported.a.b",
            named(state(Section::Reported, &["a", "b"])),
        ),
        (
            "shadow.name.lamp.desired.a",
            named(state(Section::Desired, &["a"])),
        ),
        (
            "shadow.name.lamp.delta.a",
            named(state(Section::Delta, &["a"])),
        ),
        (
            r"shadow.reported.a\.b",
            Field::Shadow {
                shadow: ShadowName::Classic,
                property: state(Section::Reported, &["a.b"]),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(field(text), expected, "field {text:?}");
    }
}

#[test]
fn bad_queries_report_position() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("thingName:", 10, "a value after ':'", "end of query"),
        (
            "thingName:abc AND",
            17,
            "a term after 'AND'",
            "end of query",
        ),
        ("a OR", 4, "a term after 'OR'", "end of query"),
        ("NOT", 3, "a term after 'NOT'", "end of query"),
        ("a -", 3, "a term after '-'", "end of query"),
        ("", 0, "a term", "end of query"),
        ("AND a", 0, "a term", "'AND'"),
        ("a OR OR b", 5, "a term after 'OR'", "'OR'"),
        ("()", 1, "a term after '('", "')'"),
        (
            "(thingName:a",
            12,
            "')' to close the '(' at position 0",
            "end of query",
        ),
        (
            "thingName:a)",
            11,
            "'AND', 'OR', 'NOT', a term or end of query",
            "')'",
        ),
        (
            "thingName:\"abc",
            10,
            "a closing '\"' for this phrase",
            "end of query",
        ),
        (
            "thingName:a\\",
            11,
            "a character after '\\'",
            "end of query",
        ),
        ("thingName:>5", 10, "a value after ':'", "'>'"),
        ("thingName>", 10, "a value after '>'", "end of query"),
        ("thingName>=*", 11, "a value after '>='", "'*'"),
        (
            "thingName:[a TO",
            15,
            "an upper bound after 'TO'",
            "end of query",
        ),
        (
            "thingName:[a b]",
            13,
            "'TO' between the range bounds",
            "'b'",
        ),
        (
            "thingName:[a TO b",
            17,
            "']' or '}' to close the range",
            "end of query",
        ),
        (
            "thingName:[ TO b]",
            15,
            "'TO' between the range bounds",
            "'b'",
        ),
        ("thingName:{", 11, "a lower bound after '{'", "end of query"),
        (
            "[1 TO 2]",
            0,
            "a field name and ':' before the range",
            "'['",
        ),
        (
            "thingName:a@b",
            11,
            "a term character (quote or escape this one with '\\')",
            "unsupported character '@'",
        ),
        (
            "x:1",
            0,
            "a field: thingName, shadow.hasDelta, shadow.version, shadow.reported.<path>, shadow.desired.<path>, shadow.delta.<path>, or the same after shadow.name.<shadowName>",
            "'x'",
        ),
        (
            "shadow:1",
            6,
            "hasDelta, version, desired, reported or delta after 'shadow.'",
            "end of the field name",
        ),
        (
            "shadow.reported:1",
            15,
            "a key after 'reported'",
            "end of the field name",
        ),
        (
            "shadow.reported.:1",
            16,
            "a key after '.'",
            "end of the field name",
        ),
        ("shadow.reported..a:1", 16, "a key after '.'", "'.'"),
        (
            "shadow.colour.a:1",
            7,
            "hasDelta, version, desired, reported or delta after 'shadow.'",
            "'colour'",
        ),
        (
            "shadow.metadata.a:1",
            7,
            "a state field (metadata fields are not searchable in this service)",
            "'metadata'",
        ),
        (
            "shadow.version.a:1",
            15,
            "end of the field name after 'version'",
            "'a'",
        ),
        (
            "shadow.name..reported.a:1",
            12,
            "a shadow name after 'shadow.name.'",
            "'.'",
        ),
        (
            "shadow.name.lamp:1",
            16,
            "hasDelta, version, desired, reported or delta after 'shadow.name.<name>.'",
            "end of the field name",
        ),
        (
            "é x:1",
            3,
            "a field: thingName, shadow.hasDelta, shadow.version, shadow.reported.<path>, shadow.desired.<path>, shadow.delta.<path>, or the same after shadow.name.<shadowName>",
            "'x'",
        ),
    ];
    for &(text, position, expected, found) in cases {
        let error = parse_error(text);
        assert_eq!(error.position, position, "position for {text:?}: {error}");
        assert_eq!(error.expected, expected, "expected for {text:?}");
        assert_eq!(error.found, found, "found for {text:?}");
    }
}

#[test]
fn error_display_names_position() {
    assert_eq!(
        parse_error("thingName:abc AND").to_string(),
        "invalid query at position 17: expected a term after 'AND', found end of query"
    );
}

#[test]
fn length_limit_counts_characters() {
    let limits = QueryLimits {
        max_chars: 5,
        ..QueryLimits::default()
    };
    assert!(Query::parse_with_limits("ééééé", &limits).is_ok());
    let error = Query::parse_with_limits("éééééé", &limits).expect_err("six characters");
    assert_eq!(error.position, 10);
    assert_eq!(error.found, "6 characters");
}

#[test]
fn term_limit_is_twelve_by_default() {
    let twelve = ["a"; 12].join(" ");
    assert!(Query::parse(&twelve).is_ok());
    let error = parse_error(&format!("{twelve} b"));
    assert_eq!(error.position, 24);
    assert_eq!(error.expected, "at most 12 terms in a query");
    assert_eq!(error.found, "term 13");
}

#[test]
fn nesting_limit_stops_deep_queries() {
    let limits = QueryLimits {
        max_chars: 1_000_000,
        ..QueryLimits::default()
    };
    let parens = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
    let error = Query::parse_with_limits(&parens, &limits).expect_err("too deep");
    assert_eq!(error.position, 16);
    assert_eq!(error.found, "nesting level 17");

    let nots = format!("{}a", "NOT ".repeat(100_000));
    let error = Query::parse_with_limits(&nots, &limits).expect_err("too deep");
    assert_eq!(error.position, 64);

    let sixteen = format!("{}a{}", "(".repeat(16), ")".repeat(16));
    assert!(Query::parse(&sixteen).is_ok());
}

#[test]
fn leading_wildcard_limits_apply() {
    assert!(Query::parse("thingName:*my").is_ok());
    let error = parse_error("thingName:*my OR thingName:?x");
    assert_eq!(error.position, 27);
    assert_eq!(error.found, "leading-wildcard term 2");

    let long = format!("thingName:*my OR thingName:{}", "x".repeat(80));
    let error = parse_error(&long);
    assert_eq!(error.position, 100);
    assert_eq!(
        error.expected,
        "a query of at most 100 characters, because it has a leading wildcard"
    );

    let trailing_only = format!("thingName:my* OR thingName:{}", "x".repeat(80));
    assert!(
        Query::parse(&trailing_only).is_ok(),
        "only leading wildcards count"
    );
    assert!(Query::parse(&format!("* OR thingName:{}", "x".repeat(100))).is_ok());
}

#[test]
fn display_prints_canonical_query() {
    let cases = [
        ("a b", "a AND b"),
        (
            "thingName:(tv* AND -plasma)",
            "thingName:tv* AND NOT thingName:plasma",
        ),
        ("(a OR b) c", "(a OR b) AND c"),
        ("a OR (b OR c)", "a OR (b OR c)"),
        ("NOT (a b)", "NOT (a AND b)"),
        ("shadow.reported.x>5", "shadow.reported.x>5"),
        ("shadow.reported.x>\"=5\"", "shadow.reported.x>\"=5\""),
        ("shadow.version:{5 TO *]", "shadow.version>5"),
        ("shadow.version:[1 TO 2}", "shadow.version:[1 TO 2}"),
        ("shadow.version:[* TO *]", "shadow.version:[* TO *]"),
        ("thingName:\"a b\"", "thingName:\"a b\""),
        ("thingName:\"a:b\"", "thingName:a\\:b"),
        ("\"AND\"", "\"AND\""),
        ("shadow.reported.a\\.b:1", "shadow.reported.a\\.b:1"),
        (
            "shadow.name.lamp.reported.on:true",
            "shadow.name.lamp.reported.on:true",
        ),
        ("thingName:\\-x", "thingName:\\-x"),
        ("thingName:-5", "thingName:\\-5"),
    ];
    for (text, printed) in cases {
        let printed_text = Query::parse(text).expect("valid").to_string();
        assert_eq!(printed_text, printed, "printing {text:?}");
        assert_eq!(
            parse(&printed_text),
            parse(text),
            "reparsing {printed_text:?}"
        );
    }
}

#[test]
fn fields_lists_named_fields() {
    let query = Query::parse("thingName:a shadow.version>1 OR shadow.name.s.reported.x:1 free")
        .expect("valid");
    let fields: Vec<String> = query.fields().iter().map(ToString::to_string).collect();
    assert_eq!(
        fields,
        vec!["thingName", "shadow.version", "shadow.name.s.reported.x"]
    );
    assert!(query.searches_all_fields());
}

#[test]
fn shadow_scope_tells_shadows_apart() {
    let scope = |text: &str| Query::parse(text).expect("valid").shadow_scope();
    assert_eq!(scope("thingName:a OR *"), ShadowScope::NoShadow);
    assert_eq!(
        scope("thingName:a shadow.reported.x:1 NOT shadow.hasDelta:true"),
        ShadowScope::Single(ShadowName::Classic)
    );
    assert_eq!(
        scope("shadow.name.s.reported.x:1 shadow.name.s.version>2"),
        ShadowScope::Single(ShadowName::Named("s".to_owned()))
    );
    assert_eq!(
        scope("shadow.reported.x:1 shadow.name.s.version>2"),
        ShadowScope::Several
    );
    assert_eq!(scope("thingName:a free"), ShadowScope::Several);
}

#[test]
fn aggregation_field_parses_alone() {
    assert_eq!(
        field("shadow.reported.temp").to_string(),
        "shadow.reported.temp"
    );
    let error = Field::parse("thingName x").expect_err("two words");
    assert_eq!(error.position, 10);
    assert!(Field::parse("").is_err());
    assert!(Field::parse("(").is_err());
}

/// Generates a field path key, shadow name or value, often with special characters.
fn text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,6}",
        "[ a-zA-Z0-9:()\\[\\]{}<>\"\\\\*?.@,'éTO-]{0,8}",
        Just("TO".to_owned()),
        Just("AND".to_owned()),
        Just("*".to_owned()),
        Just("-5".to_owned()),
    ]
}

fn key_strategy() -> impl Strategy<Value = String> {
    text_strategy().prop_filter("keys are not empty", |key| !key.is_empty())
}

fn field_strategy() -> impl Strategy<Value = Field> {
    let shadow = prop_oneof![
        Just(ShadowName::Classic),
        key_strategy().prop_map(ShadowName::Named),
    ];
    let section = prop_oneof![
        Just(Section::Desired),
        Just(Section::Reported),
        Just(Section::Delta)
    ];
    let property = prop_oneof![
        Just(ShadowProperty::HasDelta),
        Just(ShadowProperty::Version),
        (section, prop::collection::vec(key_strategy(), 1..3))
            .prop_map(|(section, path)| ShadowProperty::State { section, path }),
    ];
    prop_oneof![
        Just(Field::ThingName),
        (shadow, property).prop_map(|(shadow, property)| Field::Shadow { shadow, property }),
    ]
}

/// Builds a value the way the parser does: wildcards split the text, and text alone is a literal.
fn value_strategy() -> impl Strategy<Value = Value> {
    let piece = prop_oneof![
        text_strategy().prop_map(|text| vec![PatternPart::Text(text)]),
        Just(vec![PatternPart::AnyChar]),
        Just(vec![PatternPart::AnyString]),
    ];
    prop::collection::vec(piece, 1..4).prop_map(|pieces| {
        let mut parts: Vec<PatternPart> = Vec::new();
        for part in pieces.into_iter().flatten() {
            match (parts.last_mut(), part) {
                (_, PatternPart::Text(text)) if text.is_empty() => {}
                (Some(PatternPart::Text(previous)), PatternPart::Text(text)) => {
                    previous.push_str(&text)
                }
                (_, part) => parts.push(part),
            }
        }
        match parts.as_slice() {
            [] => Value::Literal(String::new()),
            [PatternPart::Text(text)] => Value::Literal(text.clone()),
            [PatternPart::AnyString] => Value::Literal("*".to_owned()),
            _ => Value::Pattern(parts),
        }
    })
}

fn bound_strategy() -> impl Strategy<Value = Bound> {
    prop_oneof![
        Just(Bound::Unbounded),
        text_strategy().prop_map(Bound::Inclusive),
        text_strategy().prop_map(Bound::Exclusive),
    ]
}

fn term_strategy() -> impl Strategy<Value = Expr> {
    let with_field = (
        field_strategy(),
        prop_oneof![
            Just(Predicate::Exists),
            value_strategy().prop_map(Predicate::Equals),
            (bound_strategy(), bound_strategy())
                .prop_map(|(lower, upper)| Predicate::Range { lower, upper }),
        ],
    )
        .prop_map(|(field, predicate)| Term {
            field: Some(field),
            predicate,
        });
    let free = value_strategy().prop_map(|value| Term {
        field: None,
        predicate: Predicate::Equals(value),
    });
    prop_oneof![
        Just(Expr::MatchAll),
        with_field.prop_map(Expr::Term),
        free.prop_map(Expr::Term)
    ]
}

fn expr_strategy() -> impl Strategy<Value = Expr> {
    term_strategy().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|expr| Expr::Not(Box::new(expr))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

fn generous_limits() -> QueryLimits {
    QueryLimits {
        max_chars: usize::MAX,
        max_terms: usize::MAX,
        max_nesting_depth: 64,
        max_leading_wildcard_terms: usize::MAX,
        max_chars_with_leading_wildcard: usize::MAX,
    }
}

proptest! {
    #[test]
    fn printed_ast_parses_to_same_ast(expr in expr_strategy()) {
        let printed = expr.to_string();
        let reparsed = Query::parse_with_limits(&printed, &generous_limits())
            .unwrap_or_else(|error| panic!("printed {printed:?} does not parse: {error}"));
        prop_assert_eq!(reparsed.expr(), &expr, "printed as {}", printed);
    }

    #[test]
    fn random_text_never_panics(text in "[ a-zA-Z0-9:()\\[\\]{}<>=*?\"\\\\.\\-]{0,40}|\\PC{0,40}") {
        if let Ok(query) = Query::parse_with_limits(&text, &generous_limits()) {
            let printed = query.to_string();
            let reparsed = Query::parse_with_limits(&printed, &generous_limits())
                .unwrap_or_else(|error| panic!("{text:?} printed as {printed:?} fails: {error}"));
            prop_assert_eq!(reparsed, query);
        }
    }

    #[test]
    fn keyword_soup_never_panics(
        words in prop::collection::vec(
            prop_oneof![
                Just("AND"), Just("OR"), Just("NOT"), Just("-"), Just("("), Just(")"), Just("TO"),
                Just("["), Just("]"), Just("{"), Just("}"), Just("thingName:"), Just("*"),
                Just("shadow.reported.x"), Just(":"), Just(">"), Just("a"), Just("\""),
            ],
            0..20,
        )
    ) {
        let text = words.join(" ");
        let _ = Query::parse(&text);
        let _ = Query::parse(&words.concat());
    }
}
