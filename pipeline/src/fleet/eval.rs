//! Decides whether a query matches a thing, from the thing's name and shadows.
//!
//! A [`FleetDocument`] borrows the indexed data of one thing: its name, its classic shadow and
//! its named shadows, each as [`ShadowFields`]. [`Query::matches`] evaluates a query
//! against it; nothing is copied or indexed.
//!
//! How a term compares with a stored value depends on the stored value's JSON type:
//!
//! | stored value | `field:v` | `field:[a TO b]`, `field>a` | `field:a*` |
//! | --- | --- | --- | --- |
//! | string | equal, ignoring case | lexicographic, ignoring case | wildcard match, ignoring case |
//! | number | `v` read as a number is equal (`1` equals `1.0`) | numeric; a bound that is not a number matches nothing | never |
//! | boolean | `v` is `true` or `false`, any case | `false < true` | never |
//! | object | never (`field:*` matches) | never | never |
//!
//! A path goes through arrays: `shadow.reported.ids:2` matches `{"ids": [1, 2]}`, and
//! `shadow.reported.items.id:2` matches `{"items": [{"id": 1}, {"id": 2}]}`. The AWS examples
//! show the first case ("the myvalues array ... contains a value of 2").
//!
//! # Notes
//!
//! - AWS writes "Search is case insensitive". This module applies that to equality, wildcards and
//!   string ranges alike; AWS does not say whether ranges ignore case.
//! - Integers compare exactly with integers; any other pair of numbers compares as `f64`.
//! - A term without a field matches the thing name or any value in `desired`, `reported` or
//!   `delta` of any shadow. It does not look at `hasDelta` or `version`.
//! - `NOT t` matches a thing that lacks the field of `t`, as in Lucene and in the AWS example
//!   `NOT attributes.model:legacy`.
//! - `shadow.hasDelta` and `shadow.version` exist only when the thing has that shadow.

use std::cmp::Ordering;

use serde_json::{Map, Value as JsonValue};

use self::compare::{Numeric, fold_case, parse_bool, wildcard_matches};
use super::aggregate::AggregationValue;
use super::query::{
    Bound, Expr, Field, Predicate, Query, Section, ShadowName, ShadowProperty, Term, Value,
};
use crate::dataflow::{ShadowVersion, ThingShadow};
use crate::shadow::{Delta, Shadow};

/// The searchable fields of one shadow.
///
/// Each state is the compact JSON text of an object, as the shadow stores it, and is read by
/// streaming through the text for each term.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ShadowFields<'a> {
    /// The `desired` state as JSON text, `None` when empty.
    pub desired: Option<&'a str>,

    /// The `reported` state as JSON text, `None` when empty.
    pub reported: Option<&'a str>,

    /// The delta state as JSON text, `None` when desired and reported agree.
    pub delta: Option<&'a str>,

    /// The shadow version.
    pub version: u64,
}

impl<'a> ShadowFields<'a> {
    /// Borrows the fields of a shadow and its delta.
    pub fn new(shadow: &'a Shadow, delta: Option<&'a Delta>) -> Self {
        Self {
            desired: shadow.desired_text(),
            reported: shadow.reported_text(),
            delta: delta.map(Delta::state_text),
            version: shadow.version(),
        }
    }

    /// Borrows the fields of a shadow version. Its delta is computed on first use and cached.
    pub fn from_version(version: &'a ShadowVersion) -> Self {
        Self::new(&version.shadow, version.delta())
    }

    /// Returns true when the delta has at least one key.
    pub fn has_delta(&self) -> bool {
        self.delta.is_some_and(|delta| delta != "{}")
    }

    fn section(&self, section: Section) -> Option<&'a str> {
        match section {
            Section::Desired => self.desired,
            Section::Reported => self.reported,
            Section::Delta => self.delta,
        }
    }

    fn sections(&self) -> impl Iterator<Item = &'a str> {
        [self.desired, self.reported, self.delta]
            .into_iter()
            .flatten()
    }
}

/// The indexed data of one thing: its name and shadows.
///
/// Design: named shadows are a short list searched in order, because a thing has few of them
/// (AWS indexes at most 10 shadow names by default). A name added twice keeps its first entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetDocument<'a> {
    thing_name: &'a str,
    classic: Option<ShadowFields<'a>>,
    named: Vec<(&'a str, ShadowFields<'a>)>,
}

impl<'a> FleetDocument<'a> {
    /// Creates the document of a thing with no shadow yet.
    pub fn new(thing_name: &'a str) -> Self {
        Self {
            thing_name,
            classic: None,
            named: Vec::new(),
        }
    }

    /// Builds the document of a thing from its shadows as the dataflow's by-thing arrangement
    /// contains them: `(None, version)` for the classic shadow, `(Some(name), version)` for each
    /// named one.
    pub fn from_shadows(thing_name: &'a str, shadows: &[&'a ThingShadow]) -> Self {
        let mut document = Self::new(thing_name);
        for (name, version) in shadows {
            let fields = ShadowFields::from_version(version);
            document = match name {
                None => document.with_classic(fields),
                Some(name) => document.with_named(name, fields),
            };
        }
        document
    }

    /// Sets the classic (unnamed) shadow.
    pub fn with_classic(mut self, fields: ShadowFields<'a>) -> Self {
        self.classic = Some(fields);
        self
    }

    /// Adds a named shadow.
    pub fn with_named(mut self, shadow_name: &'a str, fields: ShadowFields<'a>) -> Self {
        self.named.push((shadow_name, fields));
        self
    }

    /// Returns the thing name.
    pub fn thing_name(&self) -> &'a str {
        self.thing_name
    }

    /// Returns the fields of one shadow, or `None` when the thing does not have it.
    pub fn shadow(&self, name: &ShadowName) -> Option<&ShadowFields<'a>> {
        match name {
            ShadowName::Classic => self.classic.as_ref(),
            ShadowName::Named(wanted) => self
                .named
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, fields)| fields),
        }
    }

    /// Returns the values of `field` for aggregation: every string, number and boolean it holds,
    /// with arrays flattened. Objects are left out.
    pub fn values(&self, field: &Field) -> Vec<AggregationValue> {
        let mut values = Vec::new();
        any_leaf(self, field, &mut |leaf| {
            values.extend(leaf.to_aggregation_value());
            false
        });
        values
    }

    fn shadows(&self) -> impl Iterator<Item = &ShadowFields<'a>> {
        self.classic
            .iter()
            .chain(self.named.iter().map(|(_, fields)| fields))
    }
}

impl Query {
    /// Returns true when the query matches the thing.
    ///
    /// # Example
    ///
    /// ```
    /// use pipeline::fleet::eval::{FleetDocument, ShadowFields};
    /// use pipeline::fleet::query::Query;
    /// use serde_json::json;
    ///
    /// let reported = json!({"battery": 15, "ids": [1, 2]}).to_string();
    /// let fields = ShadowFields {
    ///     reported: Some(&reported),
    ///     version: 3,
    ///     ..ShadowFields::default()
    /// };
    /// let lamp = FleetDocument::new("lamp-1").with_classic(fields);
    ///
    /// let query = Query::parse("thingName:LAMP-* shadow.reported.battery<20").expect("valid");
    /// assert!(query.matches(&lamp));
    /// assert!(Query::parse("shadow.reported.ids:2").expect("valid").matches(&lamp));
    /// assert!(!Query::parse("shadow.hasDelta:true").expect("valid").matches(&lamp));
    /// ```
    pub fn matches(&self, document: &FleetDocument<'_>) -> bool {
        eval(self.expr(), document)
    }
}

fn eval(expr: &Expr, document: &FleetDocument<'_>) -> bool {
    match expr {
        Expr::MatchAll => true,
        Expr::Term(term) => term_matches(term, document),
        Expr::Not(operand) => !eval(operand, document),
        Expr::And(operands) => operands.iter().all(|operand| eval(operand, document)),
        Expr::Or(operands) => operands.iter().any(|operand| eval(operand, document)),
    }
}

fn term_matches(term: &Term, document: &FleetDocument<'_>) -> bool {
    let mut test = |leaf: Leaf<'_>| leaf_matches(&term.predicate, leaf);
    match &term.field {
        Some(field) => any_leaf(document, field, &mut test),
        None => {
            test(Leaf::Text(document.thing_name))
                || document
                    .shadows()
                    .flat_map(ShadowFields::sections)
                    .any(|section| any_scalar_in(section, &mut test))
        }
    }
}

/// One value found at a field path.
#[derive(Clone, Copy, Debug)]
enum Leaf<'a> {
    Text(&'a str),
    Number(Numeric),
    Bool(bool),
    Object,
}

impl Leaf<'_> {
    fn to_aggregation_value(self) -> Option<AggregationValue> {
        match self {
            Leaf::Text(text) => Some(AggregationValue::String(text.to_owned())),
            Leaf::Number(number) => Some(AggregationValue::number(number.float)),
            Leaf::Bool(value) => Some(AggregationValue::Bool(value)),
            Leaf::Object => None,
        }
    }
}

/// Calls `test` on each value of `field` until it returns true, and returns whether it did.
fn any_leaf(
    document: &FleetDocument<'_>,
    field: &Field,
    test: &mut dyn FnMut(Leaf<'_>) -> bool,
) -> bool {
    let (shadow, property) = match field {
        Field::ThingName => return test(Leaf::Text(document.thing_name)),
        Field::Shadow { shadow, property } => (shadow, property),
    };
    let Some(fields) = document.shadow(shadow) else {
        return false;
    };
    match property {
        ShadowProperty::HasDelta => test(Leaf::Bool(fields.has_delta())),
        ShadowProperty::Version => test(Leaf::Number(Numeric::from_u64(fields.version))),
        ShadowProperty::State { section, path } => {
            if path.is_empty() {
                return false;
            }
            fields
                .section(*section)
                .is_some_and(|state| path::any_at_path(state, path, test))
        }
    }
}

/// Calls `test` on every scalar of the JSON object text `state`, for terms without a field.
fn any_scalar_in(state: &str, test: &mut dyn FnMut(Leaf<'_>) -> bool) -> bool {
    serde_json::from_str::<Map<String, JsonValue>>(state)
        .is_ok_and(|state| state.values().any(|value| any_scalar(value, test)))
}

/// Calls `test` on every scalar inside `value`, for terms without a field.
fn any_scalar(value: &JsonValue, test: &mut dyn FnMut(Leaf<'_>) -> bool) -> bool {
    match value {
        JsonValue::Array(elements) => elements.iter().any(|element| any_scalar(element, test)),
        JsonValue::Object(object) => object.values().any(|child| any_scalar(child, test)),
        scalar => scalar_leaf(scalar).is_some_and(test),
    }
}

fn scalar_leaf(value: &JsonValue) -> Option<Leaf<'_>> {
    match value {
        JsonValue::String(text) => Some(Leaf::Text(text)),
        JsonValue::Number(number) => Some(Leaf::Number(Numeric::from_json(number))),
        JsonValue::Bool(value) => Some(Leaf::Bool(*value)),
        JsonValue::Null | JsonValue::Array(_) | JsonValue::Object(_) => None,
    }
}

fn leaf_matches(predicate: &Predicate, leaf: Leaf<'_>) -> bool {
    match (predicate, leaf) {
        (Predicate::Exists, _) => true,
        (_, Leaf::Object) => false,
        (Predicate::Equals(Value::Literal(text)), leaf) => {
            compare_leaf(leaf, text) == Some(Ordering::Equal)
        }
        (Predicate::Equals(Value::Pattern(parts)), Leaf::Text(text)) => {
            wildcard_matches(parts, text)
        }
        (Predicate::Equals(Value::Pattern(_)), _) => false,
        (Predicate::Range { lower, upper }, leaf) => in_range(leaf, lower, upper),
    }
}

fn in_range(leaf: Leaf<'_>, lower: &Bound, upper: &Bound) -> bool {
    let above_lower = match lower {
        Bound::Unbounded => true,
        Bound::Inclusive(value) => compare_leaf(leaf, value).is_some_and(Ordering::is_ge),
        Bound::Exclusive(value) => compare_leaf(leaf, value).is_some_and(Ordering::is_gt),
    };
    let below_upper = match upper {
        Bound::Unbounded => true,
        Bound::Inclusive(value) => compare_leaf(leaf, value).is_some_and(Ordering::is_le),
        Bound::Exclusive(value) => compare_leaf(leaf, value).is_some_and(Ordering::is_lt),
    };
    above_lower && below_upper
}

/// Orders a stored value against query text, or returns `None` when the text cannot be read as
/// a value of the stored value's type.
fn compare_leaf(leaf: Leaf<'_>, text: &str) -> Option<Ordering> {
    match leaf {
        Leaf::Text(stored) => Some(fold_case(stored).cmp(fold_case(text))),
        Leaf::Number(stored) => Numeric::parse(text).map(|wanted| stored.compare(&wanted)),
        Leaf::Bool(stored) => parse_bool(text).map(|wanted| stored.cmp(&wanted)),
        Leaf::Object => None,
    }
}

mod compare;
mod path;

#[cfg(test)]
mod tests;
