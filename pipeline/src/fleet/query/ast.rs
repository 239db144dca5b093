//! The syntax tree of a fleet query, and its printing back to query syntax.
//!
//! Printing is canonical: parsing the printed text gives the same tree. Field groups such as
//! `thingName:(a OR b)` have no node of their own, because the parser distributes the field over
//! the group, so they print as `thingName:a OR thingName:b`. Comparisons are one-sided ranges,
//! so `x>5` and `x:{5 TO *]` give the same tree and both print as `x>5`.

use std::fmt;

use super::lexer::is_unsupported;

/// A boolean expression over terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `*` on its own: every thing.
    MatchAll,
    /// One term.
    Term(Term),
    /// `NOT x` or `-x`: things that `x` does not match, including things without the field.
    Not(Box<Expr>),
    /// `x AND y`, or `x y`: at least two operands.
    And(Vec<Expr>),
    /// `x OR y`: at least two operands.
    Or(Vec<Expr>),
}

/// A test on one field, or on every field when `field` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// The field tested. `None` is a term without a field, which AWS searches in every field.
    pub field: Option<Field>,

    /// The test.
    pub predicate: Predicate,
}

/// The condition that a term tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// `field:*`: the field has a value.
    Exists,
    /// `field:value`: the field has this value, or a value the wildcard pattern matches.
    Equals(Value),
    /// `field:[a TO b]`, `field>a` and the other range forms.
    Range {
        /// The lower end.
        lower: Bound,
        /// The upper end.
        upper: Bound,
    },
}

/// The value of an equality term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A value without wildcards: a quoted phrase, or a word whose `*` and `?` are escaped.
    Literal(String),
    /// A word with at least one unescaped `*` or `?`.
    Pattern(Vec<PatternPart>),
}

/// One piece of a wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternPart {
    /// Characters that must appear as they are (compared without case).
    Text(String),
    /// `?`: exactly one character.
    AnyChar,
    /// `*`: any run of characters, also an empty one.
    AnyString,
}

/// One end of a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `*`, or the missing side of a comparison.
    Unbounded,
    /// `[` or `]`: the value itself is in the range.
    Inclusive(String),
    /// `{` or `}`: the value itself is not in the range.
    Exclusive(String),
}

/// A field of the fleet index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `thingName`.
    ThingName,
    /// A field of the classic shadow (`shadow.…`) or of a named one (`shadow.name.<name>.…`).
    Shadow {
        /// The shadow of the thing.
        shadow: ShadowName,
        /// The field inside that shadow.
        property: ShadowProperty,
    },
}

/// The classic shadow or a named shadow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShadowName {
    /// The unnamed shadow of a thing.
    Classic,
    /// A named shadow.
    Named(String),
}

/// A field inside one shadow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShadowProperty {
    /// `hasDelta`: true when the shadow has a non-empty delta.
    HasDelta,
    /// `version`: the shadow version number.
    Version,
    /// `desired.<path>`, `reported.<path>` or `delta.<path>`.
    State {
        /// The state section.
        section: Section,
        /// The keys from the section root, at least one.
        path: Vec<String>,
    },
}

/// A state section of a shadow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `desired`.
    Desired,
    /// `reported`.
    Reported,
    /// `delta`: the desired values that `reported` does not match.
    Delta,
}

impl Section {
    /// Returns the name used in field paths.
    pub fn name(self) -> &'static str {
        match self {
            Section::Desired => "desired",
            Section::Reported => "reported",
            Section::Delta => "delta",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shadow, property) = match self {
            Field::ThingName => return f.write_str("thingName"),
            Field::Shadow { shadow, property } => (shadow, property),
        };
        f.write_str("shadow")?;
        if let ShadowName::Named(name) = shadow {
            write!(f, ".name.{}", escape_word(name, Context::Key))?;
        }
        match property {
            ShadowProperty::HasDelta => f.write_str(".hasDelta"),
            ShadowProperty::Version => f.write_str(".version"),
            ShadowProperty::State { section, path } => {
                write!(f, ".{}", section.name())?;
                path.iter()
                    .try_for_each(|key| write!(f, ".{}", escape_word(key, Context::Key)))
            }
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::MatchAll => f.write_str("*"),
            Expr::Term(term) => term.fmt(f),
            Expr::Not(operand) => {
                f.write_str("NOT ")?;
                write_operand(f, operand, matches!(**operand, Expr::And(_) | Expr::Or(_)))
            }
            Expr::And(operands) => write_joined(f, operands, " AND ", |operand| {
                matches!(operand, Expr::And(_) | Expr::Or(_))
            }),
            Expr::Or(operands) => write_joined(f, operands, " OR ", |operand| {
                matches!(operand, Expr::Or(_))
            }),
        }
    }
}

fn write_joined(
    f: &mut fmt::Formatter<'_>,
    operands: &[Expr],
    separator: &str,
    needs_parens: impl Fn(&Expr) -> bool,
) -> fmt::Result {
    for (index, operand) in operands.iter().enumerate() {
        if index > 0 {
            f.write_str(separator)?;
        }
        write_operand(f, operand, needs_parens(operand))?;
    }
    Ok(())
}

fn write_operand(f: &mut fmt::Formatter<'_>, operand: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({operand})")
    } else {
        write!(f, "{operand}")
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(field) = &self.field {
            write!(f, "{field}")?;
        }
        let separator = if self.field.is_some() { ":" } else { "" };
        match &self.predicate {
            Predicate::Exists => write!(f, "{separator}*"),
            Predicate::Equals(value) => write!(f, "{separator}{value}"),
            Predicate::Range { lower, upper } => write_range(f, lower, upper),
        }
    }
}

/// Writes a range as a comparison when one side is open, and in brackets otherwise.
fn write_range(f: &mut fmt::Formatter<'_>, lower: &Bound, upper: &Bound) -> fmt::Result {
    match (lower, upper) {
        (Bound::Unbounded, Bound::Inclusive(value)) => write!(f, "<={}", comparison_value(value)),
        (Bound::Unbounded, Bound::Exclusive(value)) => write!(f, "<{}", comparison_value(value)),
        (Bound::Inclusive(value), Bound::Unbounded) => write!(f, ">={}", comparison_value(value)),
        (Bound::Exclusive(value), Bound::Unbounded) => write!(f, ">{}", comparison_value(value)),
        _ => {
            let (open, lower_text) = bound_text(lower, '[', '{');
            let (close, upper_text) = bound_text(upper, ']', '}');
            write!(f, ":{open}{lower_text} TO {upper_text}{close}")
        }
    }
}

fn bound_text(bound: &Bound, inclusive: char, exclusive: char) -> (char, String) {
    match bound {
        Bound::Unbounded => (inclusive, "*".to_owned()),
        Bound::Inclusive(value) => (inclusive, quote_bound(value)),
        Bound::Exclusive(value) => (exclusive, quote_bound(value)),
    }
}

/// Writes the value of a comparison. A leading `=` is quoted, so `>` and `=x` do not read as
/// `>=` and `x`.
fn comparison_value(value: &str) -> String {
    if value.starts_with('=') {
        quote_phrase(value)
    } else {
        quote_bound(value)
    }
}

/// Writes a range bound. `*` and `TO` are quoted so they read as values.
fn quote_bound(value: &str) -> String {
    if value == "*" || value == "TO" {
        quote_phrase(value)
    } else {
        write_literal(value)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Literal(text) => f.write_str(&write_literal(text)),
            Value::Pattern(parts) => {
                parts
                    .iter()
                    .enumerate()
                    .try_for_each(|(index, part)| match part {
                        PatternPart::Text(text) => {
                            let context = if index == 0 {
                                Context::ValueStart
                            } else {
                                Context::ValueRest
                            };
                            f.write_str(&escape_word(text, context))
                        }
                        PatternPart::AnyChar => f.write_str("?"),
                        PatternPart::AnyString => f.write_str("*"),
                    })
            }
        }
    }
}

/// Writes a literal as a phrase when it is empty, has white space or is a keyword, and as an
/// escaped word otherwise.
fn write_literal(text: &str) -> String {
    let keyword = matches!(text, "AND" | "OR" | "NOT" | "TO");
    if text.is_empty() || keyword || text.chars().any(char::is_whitespace) {
        quote_phrase(text)
    } else {
        escape_word(text, Context::ValueStart)
    }
}

fn quote_phrase(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for ch in text.chars() {
        if ch == '"' || ch == '\\' {
            quoted.push('\\');
        }
        quoted.push(ch);
    }
    quoted.push('"');
    quoted
}

/// The place of an escaped word, which decides the characters to escape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// A key of a field path, where `.` separates keys.
    Key,
    /// The start of a value, where `-` would read as the exclusion operator.
    ValueStart,
    /// The rest of a value.
    ValueRest,
}

/// Escapes every character that the lexer would not read as part of a plain word.
fn escape_word(text: &str, context: Context) -> String {
    let mut escaped = String::with_capacity(text.len());
    for (index, ch) in text.chars().enumerate() {
        let special = matches!(
            ch,
            '(' | ')' | '[' | ']' | '{' | '}' | ':' | '<' | '>' | '"' | '\\' | '*' | '?'
        ) || ch.is_whitespace()
            || is_unsupported(ch)
            || (ch == '.' && context == Context::Key)
            || (ch == '-' && index == 0 && context == Context::ValueStart);
        if special {
            escaped.push('\\');
        }
        escaped.push(ch);
    }
    escaped
}
