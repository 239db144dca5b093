//! The AWS IoT fleet indexing query language: lexer, parser and syntax tree.
//!
//! A query selects things by their name and shadow fields, for example
//! `shadow.reported.battery<20 AND NOT shadow.hasDelta:true`. The syntax follows the AWS page
//! "Query syntax" (<https://docs.aws.amazon.com/iot/latest/developerguide/query-syntax.html>)
//! and its examples (<https://docs.aws.amazon.com/iot/latest/developerguide/example-queries.html>):
//!
//! | form | meaning |
//! | --- | --- |
//! | `thingName:lamp-1`, `shadow.reported.on:true` | the field has this value |
//! | `thingName:lamp-*`, `thingName:ab?` | wildcard pattern, `*` any run and `?` one character |
//! | `shadow.reported.location:*` | the field exists |
//! | `field:[75 TO 80]`, `field:{75 TO 80]`, `field:[* TO 80}` | range, `[]` inclusive, `{}` exclusive, `*` open |
//! | `field>5`, `field>=5`, `field<5`, `field<=5` | comparison |
//! | `"two words"` | a value with spaces or special characters |
//! | `a AND b`, `a b`, `a OR b`, `NOT a`, `-a`, `( )` | boolean logic; two terms side by side mean AND |
//! | `thingName:(tv* AND -plasma)` | field group: the field applies to every term inside |
//! | `abc` | term without field: searched in the thing name and every shadow value |
//! | `*` | every thing |
//!
//! Fields are `thingName`, `shadow.hasDelta`, `shadow.version`, `shadow.desired.<path>`,
//! `shadow.reported.<path>`, `shadow.delta.<path>`, and the same after
//! `shadow.name.<shadowName>` for named shadows.
//!
//! This module parses only; [`crate::fleet::eval`] decides which things a query matches.
//!
//! # Notes
//!
//! - Precedence is `NOT` over `AND` over `OR`, so `a OR b c` is `a OR (b AND c)`. Lucene, whose
//!   syntax AWS follows, has no strict precedence; AWS does not document one.
//! - Limits default to 1,000 characters, 12 terms, 16 levels of nesting, and one term with a
//!   leading wildcard in a query of at most 100 characters. AWS documents the 12 terms and the
//!   leading-wildcard rules; the character and nesting limits are this service's own.
//!
//! # Example
//!
//! ```
//! use pipeline::fleet::query::{Field, Query};
//!
//! let query = Query::parse("thingName:lamp-* AND shadow.reported.brightness>=50").expect("valid");
//! assert!(query.fields().contains(&Field::ThingName));
//! assert_eq!(query.to_string(), "thingName:lamp-* AND shadow.reported.brightness>=50");
//!
//! let error = Query::parse("thingName:").expect_err("value is missing");
//! assert_eq!(
//!     error.to_string(),
//!     "invalid query at position 10: expected a value after ':', found end of query"
//! );
//! ```

mod ast;
mod error;
mod field;
mod lexer;
mod parser;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

pub use ast::{
    Bound, Expr, Field, PatternPart, Predicate, Section, ShadowName, ShadowProperty, Term, Value,
};
pub use error::QueryError;

/// Default for [`QueryLimits::max_chars`].
pub const DEFAULT_MAX_QUERY_CHARS: usize = 1_000;

/// Default for [`QueryLimits::max_terms`]: the AWS quota of twelve terms per query.
pub const DEFAULT_MAX_TERMS: usize = 12;

/// Default for [`QueryLimits::max_nesting_depth`].
pub const DEFAULT_MAX_NESTING_DEPTH: usize = 16;

/// Default for [`QueryLimits::max_leading_wildcard_terms`]: AWS allows one per query.
pub const DEFAULT_MAX_LEADING_WILDCARD_TERMS: usize = 1;

/// Default for [`QueryLimits::max_chars_with_leading_wildcard`], the AWS limit.
pub const DEFAULT_MAX_CHARS_WITH_LEADING_WILDCARD: usize = 100;

/// Limits on the size of a query, checked while parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Maximum length of a query, in characters.
    pub max_chars: usize,

    /// Maximum number of terms: values, ranges, comparisons, exists tests and `*`.
    pub max_terms: usize,

    /// Maximum nesting of parentheses and `NOT`/`-` operators. The parser and the evaluator
    /// recurse once per level, so this also bounds their stack use. Keep it in the tens.
    pub max_nesting_depth: usize,

    /// Maximum number of terms whose value starts with `*` or `?` (a bare `*` does not count).
    pub max_leading_wildcard_terms: usize,

    /// Maximum length, in characters, of a query that has a leading-wildcard term.
    pub max_chars_with_leading_wildcard: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_chars: DEFAULT_MAX_QUERY_CHARS,
            max_terms: DEFAULT_MAX_TERMS,
            max_nesting_depth: DEFAULT_MAX_NESTING_DEPTH,
            max_leading_wildcard_terms: DEFAULT_MAX_LEADING_WILDCARD_TERMS,
            max_chars_with_leading_wildcard: DEFAULT_MAX_CHARS_WITH_LEADING_WILDCARD,
        }
    }
}

/// A parsed fleet query.
///
/// Design: a `Query` only comes from parsing, so its nesting never exceeds the
/// [`QueryLimits::max_nesting_depth`] it was parsed with, and evaluation cannot overflow the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    expr: Expr,
}

/// The shadows a query reads, so a dataflow can key its evaluation by shadow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowScope {
    /// No shadow field: only `thingName` terms or `*`.
    NoShadow,
    /// Fields of this one shadow, and maybe `thingName`. [`Query::matches`] then reads only the
    /// thing name and this shadow, so a thing without the shadow can still match, as with
    /// `NOT shadow.hasDelta:true`.
    Single(ShadowName),
    /// Fields of several shadows, or a term without field, which searches every shadow.
    Several,
}

impl Query {
    /// Parses a query with the default [`QueryLimits`].
    ///
    /// # Errors
    ///
    /// Returns a [`QueryError`] for invalid syntax, an unknown field or a broken limit.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        Self::parse_with_limits(text, &QueryLimits::default())
    }

    /// Parses a query with the given limits.
    ///
    /// # Errors
    ///
    /// Returns a [`QueryError`] for invalid syntax, an unknown field or a broken limit.
    pub fn parse_with_limits(text: &str, limits: &QueryLimits) -> Result<Self, QueryError> {
        parser::parse(text, limits).map(|expr| Self { expr })
    }

    /// Returns the syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Returns the fields that the terms name. Terms without a field add nothing here: see
    /// [`Query::searches_all_fields`].
    pub fn fields(&self) -> BTreeSet<Field> {
        let mut fields = BTreeSet::new();
        visit_terms(&self.expr, &mut |term| {
            if let Some(field) = &term.field {
                fields.insert(field.clone());
            }
        });
        fields
    }

    /// Returns true when some term has no field, so evaluating it reads every field.
    pub fn searches_all_fields(&self) -> bool {
        let mut found = false;
        visit_terms(&self.expr, &mut |term| found |= term.field.is_none());
        found
    }

    /// Returns which shadows the query reads.
    pub fn shadow_scope(&self) -> ShadowScope {
        if self.searches_all_fields() {
            return ShadowScope::Several;
        }
        let shadows: BTreeSet<ShadowName> = self
            .fields()
            .into_iter()
            .filter_map(|field| match field {
                Field::Shadow { shadow, .. } => Some(shadow),
                Field::ThingName => None,
            })
            .collect();
        let mut shadows = shadows.into_iter();
        match (shadows.next(), shadows.next()) {
            (None, _) => ShadowScope::NoShadow,
            (Some(shadow), None) => ShadowScope::Single(shadow),
            (Some(_), Some(_)) => ShadowScope::Several,
        }
    }
}

/// Calls `visit` for every term, in query order.
fn visit_terms(expr: &Expr, visit: &mut impl FnMut(&Term)) {
    match expr {
        Expr::MatchAll => {}
        Expr::Term(term) => visit(term),
        Expr::Not(operand) => visit_terms(operand, visit),
        Expr::And(operands) | Expr::Or(operands) => {
            operands
                .iter()
                .for_each(|operand| visit_terms(operand, visit));
        }
    }
}

impl fmt::Display for Query {
    /// Prints the query in canonical form; parsing the output gives an equal `Query`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

impl FromStr for Query {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests;
