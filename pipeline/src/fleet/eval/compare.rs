//! Comparison of stored values with query text: case folding, numbers and wildcard patterns.

use std::cmp::Ordering;

use serde_json::Number;

use crate::fleet::query::PatternPart;

pub(super) fn fold_case(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().flat_map(char::to_lowercase)
}

pub(super) fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A number as stored or as written in a query: exact when it is an integer, and as `f64`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Numeric {
    integer: Option<i128>,
    pub(super) float: f64,
}

impl Numeric {
    pub(super) fn from_u64(value: u64) -> Self {
        Self {
            integer: Some(i128::from(value)),
            float: value as f64,
        }
    }

    pub(super) fn from_json(number: &Number) -> Self {
        let integer = number
            .as_i64()
            .map(i128::from)
            .or_else(|| number.as_u64().map(i128::from));
        let float = number.as_f64().unwrap_or(f64::NAN);
        Self { integer, float }
    }

    /// Reads query text as a number. `inf` and `NaN` are not numbers here.
    pub(super) fn parse(text: &str) -> Option<Self> {
        let float: f64 = text.parse().ok().filter(|value: &f64| value.is_finite())?;
        let integer = text.parse::<i128>().ok();
        Some(Self { integer, float })
    }

    pub(super) fn compare(&self, other: &Self) -> Ordering {
        match (self.integer, other.integer) {
            (Some(left), Some(right)) => left.cmp(&right),
            _ => self.float.total_cmp(&other.float),
        }
    }
}

/// One position of a wildcard pattern, after case folding.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PatternChar {
    Char(char),
    One,
    Any,
}

/// Matches `text` against a pattern, ignoring case.
///
/// The loop advances through `text` or the pattern at every step, and moves back only to retry
/// the last `*` one character later, so it ends after at most `text × pattern` steps.
pub(super) fn wildcard_matches(parts: &[PatternPart], text: &str) -> bool {
    let pattern: Vec<PatternChar> = parts
        .iter()
        .flat_map(|part| -> Box<dyn Iterator<Item = PatternChar> + '_> {
            match part {
                PatternPart::Text(text) => Box::new(fold_case(text).map(PatternChar::Char)),
                PatternPart::AnyChar => Box::new(std::iter::once(PatternChar::One)),
                PatternPart::AnyString => Box::new(std::iter::once(PatternChar::Any)),
            }
        })
        .collect();
    let text: Vec<char> = fold_case(text).collect();
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(PatternChar::One) => (p, t) = (p + 1, t + 1),
            Some(PatternChar::Char(c)) if *c == text[t] => (p, t) = (p + 1, t + 1),
            Some(PatternChar::Any) => {
                last_star = Some((p, t));
                p += 1;
            }
            _ => match last_star {
                Some((star, start)) => {
                    last_star = Some((star, start + 1));
                    (p, t) = (star + 1, start + 1);
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == PatternChar::Any)
}
