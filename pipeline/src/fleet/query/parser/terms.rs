//! Builds terms from parsed values and counts them against the query limits.

use super::Parser;
use crate::fleet::query::lexer::Word;
use crate::fleet::query::{Expr, Field, PatternPart, Predicate, QueryError, Term, Value};

impl Parser<'_> {
    /// Builds the term for an unquoted value: an exists test, a pattern or a literal.
    pub(super) fn value_term(
        &mut self,
        field: Option<Field>,
        word: &Word,
        start: usize,
    ) -> Result<Expr, QueryError> {
        let parts = pattern_parts(word);
        if parts == [PatternPart::AnyString] {
            return match field {
                Some(field) => self.term(start, Some(field), Predicate::Exists),
                None => {
                    self.count_term(start)?;
                    Ok(Expr::MatchAll)
                }
            };
        }
        let value = match parts.as_slice() {
            [] => Value::Literal(String::new()),
            [PatternPart::Text(text)] => Value::Literal(text.clone()),
            _ => {
                if matches!(parts[0], PatternPart::AnyChar | PatternPart::AnyString) {
                    self.count_leading_wildcard(start)?;
                }
                Value::Pattern(parts)
            }
        };
        self.term(start, field, Predicate::Equals(value))
    }

    pub(super) fn literal_term(
        &mut self,
        field: Option<Field>,
        text: String,
        start: usize,
    ) -> Result<Expr, QueryError> {
        self.term(start, field, Predicate::Equals(Value::Literal(text)))
    }

    pub(super) fn term(
        &mut self,
        start: usize,
        field: Option<Field>,
        predicate: Predicate,
    ) -> Result<Expr, QueryError> {
        self.count_term(start)?;
        Ok(Expr::Term(Term { field, predicate }))
    }

    fn count_term(&mut self, start: usize) -> Result<(), QueryError> {
        self.terms += 1;
        if self.terms > self.limits.max_terms {
            return Err(QueryError::new(
                start,
                format!("at most {} terms in a query", self.limits.max_terms),
                format!("term {}", self.terms),
            ));
        }
        Ok(())
    }

    fn count_leading_wildcard(&mut self, start: usize) -> Result<(), QueryError> {
        self.leading_wildcards += 1;
        if self.leading_wildcards > self.limits.max_leading_wildcard_terms {
            return Err(QueryError::new(
                start,
                format!(
                    "at most {} term starting with a wildcard",
                    self.limits.max_leading_wildcard_terms
                ),
                format!("leading-wildcard term {}", self.leading_wildcards),
            ));
        }
        Ok(())
    }

    pub(super) fn enter(&mut self, position: usize) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > self.limits.max_nesting_depth {
            return Err(QueryError::new(
                position,
                format!(
                    "at most {} nested parentheses and NOT operators",
                    self.limits.max_nesting_depth
                ),
                format!("nesting level {}", self.depth),
            ));
        }
        Ok(())
    }
}

/// Splits a word at its unescaped `*` and `?`.
fn pattern_parts(word: &Word) -> Vec<PatternPart> {
    let mut parts = Vec::new();
    let mut text = String::new();
    for c in &word.chars {
        let wildcard = match (c.ch, c.escaped) {
            ('*', false) => PatternPart::AnyString,
            ('?', false) => PatternPart::AnyChar,
            _ => {
                text.push(c.ch);
                continue;
            }
        };
        if !text.is_empty() {
            parts.push(PatternPart::Text(std::mem::take(&mut text)));
        }
        parts.push(wildcard);
    }
    if !text.is_empty() {
        parts.push(PatternPart::Text(text));
    }
    parts
}
