//! A recursive-descent parser from tokens to an [`Expr`].
//!
//! Grammar, with `NOT` binding tighter than `AND` and `AND` tighter than `OR`:
//!
//! ```text
//! or      := and ("OR" and)*
//! and     := unary (["AND"] unary)*        two operands without an operator mean AND
//! unary   := ("NOT" | "-") unary | primary
//! primary := "(" or ")"
//!          | field ":" ( value | "*" | range | "(" or ")" )     the last form is a field group
//!          | field ("<" | "<=" | ">" | ">=") value
//!          | value                          a term without field, or one in a field group
//!          | range                          only inside a field group
//! range   := ("[" | "{") bound "TO" bound ("]" | "}")           a bound of "*" is open
//! ```
//!
//! Recursion happens only at `(` and at `NOT`/`-`, and both count against
//! [`QueryLimits::max_nesting_depth`], so no input can exhaust the stack.

use super::QueryLimits;
use super::ast::{Bound, Expr, Field, Predicate};
use super::error::QueryError;
use super::field::parse_field;
use super::lexer::{Token, TokenKind, Word, tokenize};

mod terms;

/// Parses a whole query.
///
/// # Errors
///
/// Returns the first syntax error or broken limit, with its byte position.
pub(crate) fn parse(query: &str, limits: &QueryLimits) -> Result<Expr, QueryError> {
    check_length(query, limits.max_chars, "a query of at most {} characters")?;
    let mut parser = Parser {
        tokens: tokenize(query)?,
        next: 0,
        query_len: query.len(),
        limits,
        depth: 0,
        terms: 0,
        leading_wildcards: 0,
    };
    let expr = parser.parse_or(None, None)?;
    if let Some(token) = parser.tokens.get(parser.next) {
        return Err(QueryError::new(
            token.position,
            "'AND', 'OR', 'NOT', a term or end of query",
            token.describe(),
        ));
    }
    if parser.leading_wildcards > 0 {
        check_length(
            query,
            limits.max_chars_with_leading_wildcard,
            "a query of at most {} characters, because it has a leading wildcard",
        )?;
    }
    Ok(expr)
}

/// Rejects a query longer than `max_chars` characters, at the first character past the limit.
fn check_length(query: &str, max_chars: usize, expected: &str) -> Result<(), QueryError> {
    match query.char_indices().nth(max_chars) {
        None => Ok(()),
        Some((position, _)) => Err(QueryError::new(
            position,
            expected.replace("{}", &max_chars.to_string()),
            format!("{} characters", query.chars().count()),
        )),
    }
}

struct Parser<'a> {
    tokens: Vec<Token>,
    next: usize,
    query_len: usize,
    limits: &'a QueryLimits,
    depth: usize,
    terms: usize,
    leading_wildcards: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&TokenKind> {
        self.tokens.get(self.next).map(|token| &token.kind)
    }

    fn advance(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += usize::from(token.is_some());
        token
    }

    /// Builds the error for a missing `expected` at `token`, or at the end of the query.
    fn unexpected(&self, token: Option<&Token>, expected: impl Into<String>) -> QueryError {
        match token {
            Some(token) => QueryError::new(token.position, expected, token.describe()),
            None => QueryError::new(self.query_len, expected, "end of query"),
        }
    }

    /// Parses an OR expression. `default` is the field of an enclosing field group, and `after`
    /// names the operator before this operand, for error messages.
    fn parse_or(
        &mut self,
        default: Option<&Field>,
        after: Option<&str>,
    ) -> Result<Expr, QueryError> {
        let mut operands = vec![self.parse_and(default, after)?];
        while self.peek() == Some(&TokenKind::Or) {
            self.advance();
            operands.push(self.parse_and(default, Some("'OR'"))?);
        }
        Ok(combine(operands, Expr::Or))
    }

    fn parse_and(
        &mut self,
        default: Option<&Field>,
        after: Option<&str>,
    ) -> Result<Expr, QueryError> {
        let mut operands = vec![self.parse_unary(default, after)?];
        loop {
            match self.peek() {
                Some(TokenKind::And) => {
                    self.advance();
                    operands.push(self.parse_unary(default, Some("'AND'"))?);
                }
                Some(kind) if starts_operand(kind) => {
                    operands.push(self.parse_unary(default, None)?)
                }
                _ => break,
            }
        }
        Ok(combine(operands, Expr::And))
    }

    fn parse_unary(
        &mut self,
        default: Option<&Field>,
        after: Option<&str>,
    ) -> Result<Expr, QueryError> {
        let operator = match self.peek() {
            Some(TokenKind::Not) => "'NOT'",
            Some(TokenKind::Minus) => "'-'",
            _ => return self.parse_primary(default, after),
        };
        let token = self.advance().expect("peek saw a token");
        self.enter(token.position)?;
        let operand = self.parse_unary(default, Some(operator))?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(operand)))
    }

    fn parse_primary(
        &mut self,
        default: Option<&Field>,
        after: Option<&str>,
    ) -> Result<Expr, QueryError> {
        let expected_term = match after {
            Some(operator) => format!("a term after {operator}"),
            None => "a term".to_owned(),
        };
        let Some(token) = self.advance() else {
            return Err(self.unexpected(None, expected_term));
        };
        match token.kind {
            TokenKind::OpenParen => self.parse_group(default, token.position),
            TokenKind::Word(word) => {
                let operator = match self.peek() {
                    Some(TokenKind::Colon) => ":",
                    Some(TokenKind::Greater) => ">",
                    Some(TokenKind::GreaterOrEqual) => ">=",
                    Some(TokenKind::Less) => "<",
                    Some(TokenKind::LessOrEqual) => "<=",
                    _ => return self.value_term(default.cloned(), &word, token.position),
                };
                self.advance();
                let field = parse_field(&word, word_end(&word))?;
                if operator == ":" {
                    self.parse_after_colon(field)
                } else {
                    self.parse_comparison(field, operator, token.position)
                }
            }
            TokenKind::Phrase(text) => self.literal_term(default.cloned(), text, token.position),
            TokenKind::OpenBracket | TokenKind::OpenBrace => match default {
                Some(field) => self.parse_range(field.clone(), &token),
                None => Err(QueryError::new(
                    token.position,
                    "a field name and ':' before the range",
                    token.describe(),
                )),
            },
            _ => Err(QueryError::new(
                token.position,
                expected_term,
                token.describe(),
            )),
        }
    }

    /// Parses `( or )` after its `(`. `default` applies to terms without a field inside.
    fn parse_group(&mut self, default: Option<&Field>, open: usize) -> Result<Expr, QueryError> {
        self.enter(open)?;
        let expr = self.parse_or(default, Some("'('"))?;
        let token = self.advance();
        if kind_of(&token) != Some(&TokenKind::CloseParen) {
            let expected = format!("')' to close the '(' at position {open}");
            return Err(self.unexpected(token.as_ref(), expected));
        }
        self.depth -= 1;
        Ok(expr)
    }

    fn parse_after_colon(&mut self, field: Field) -> Result<Expr, QueryError> {
        let token = self.advance();
        let position = token
            .as_ref()
            .map_or(self.query_len, |token| token.position);
        match kind_of(&token) {
            Some(TokenKind::OpenParen) => self.parse_group(Some(&field), position),
            Some(TokenKind::OpenBracket | TokenKind::OpenBrace) => {
                self.parse_range(field, &token.expect("matched a token"))
            }
            Some(TokenKind::Word(word)) => self.value_term(Some(field), &word.clone(), position),
            Some(TokenKind::Phrase(text)) => self.literal_term(Some(field), text.clone(), position),
            _ => Err(self.unexpected(token.as_ref(), "a value after ':'")),
        }
    }

    /// Parses the value after `>`, `>=`, `<` or `<=`. Wildcards in it are ordinary characters.
    fn parse_comparison(
        &mut self,
        field: Field,
        operator: &str,
        start: usize,
    ) -> Result<Expr, QueryError> {
        let token = self.advance();
        let value = match kind_of(&token) {
            Some(TokenKind::Word(word)) if !word.is_plain("*") => word.text(),
            Some(TokenKind::Phrase(text)) => text.clone(),
            _ => return Err(self.unexpected(token.as_ref(), format!("a value after '{operator}'"))),
        };
        let (lower, upper) = match operator {
            ">" => (Bound::Exclusive(value), Bound::Unbounded),
            ">=" => (Bound::Inclusive(value), Bound::Unbounded),
            "<" => (Bound::Unbounded, Bound::Exclusive(value)),
            _ => (Bound::Unbounded, Bound::Inclusive(value)),
        };
        self.term(start, Some(field), Predicate::Range { lower, upper })
    }

    /// Parses `bound TO bound` and the closing bracket, after the opening `open`.
    fn parse_range(&mut self, field: Field, open: &Token) -> Result<Expr, QueryError> {
        let inclusive_lower = open.kind == TokenKind::OpenBracket;
        let opening = if inclusive_lower { "'['" } else { "'{'" };
        let lower = self.range_bound(&format!("a lower bound after {opening}"))?;
        let token = self.advance();
        if !matches!(kind_of(&token), Some(TokenKind::Word(word)) if word.is_plain("TO")) {
            return Err(self.unexpected(token.as_ref(), "'TO' between the range bounds"));
        }
        let upper = self.range_bound("an upper bound after 'TO'")?;
        let token = self.advance();
        let inclusive_upper = match kind_of(&token) {
            Some(TokenKind::CloseBracket) => true,
            Some(TokenKind::CloseBrace) => false,
            _ => return Err(self.unexpected(token.as_ref(), "']' or '}' to close the range")),
        };
        let lower = to_bound(lower, inclusive_lower);
        let upper = to_bound(upper, inclusive_upper);
        self.term(
            open.position,
            Some(field),
            Predicate::Range { lower, upper },
        )
    }

    /// Reads one range bound: `None` for an unquoted `*`.
    fn range_bound(&mut self, expected: &str) -> Result<Option<String>, QueryError> {
        let token = self.advance();
        match kind_of(&token) {
            Some(TokenKind::Word(word)) => Ok((!word.is_plain("*")).then(|| word.text())),
            Some(TokenKind::Phrase(text)) => Ok(Some(text.clone())),
            _ => Err(self.unexpected(token.as_ref(), expected)),
        }
    }
}

fn kind_of(token: &Option<Token>) -> Option<&TokenKind> {
    token.as_ref().map(|token| &token.kind)
}

/// Returns true for a token that can start an operand, which joins the previous one with AND.
fn starts_operand(kind: &TokenKind) -> bool {
    matches!(
        kind,
        TokenKind::Word(_)
            | TokenKind::Phrase(_)
            | TokenKind::Not
            | TokenKind::Minus
            | TokenKind::OpenParen
            | TokenKind::OpenBracket
            | TokenKind::OpenBrace
    )
}

fn combine(mut operands: Vec<Expr>, build: fn(Vec<Expr>) -> Expr) -> Expr {
    if operands.len() == 1 {
        operands.pop().expect("one operand")
    } else {
        build(operands)
    }
}

fn to_bound(value: Option<String>, inclusive: bool) -> Bound {
    match (value, inclusive) {
        (None, _) => Bound::Unbounded,
        (Some(value), true) => Bound::Inclusive(value),
        (Some(value), false) => Bound::Exclusive(value),
    }
}

/// Returns the byte offset just after a word.
fn word_end(word: &Word) -> usize {
    word.chars
        .last()
        .map_or(0, |c| c.position + c.ch.len_utf8() + usize::from(c.escaped))
}
