//! The multiset of field values that every aggregation reads.
//!
//! [`ValueCounts`] stores how often each distinct value occurs. Inserting and retracting a value
//! are the only updates, so the same type serves a differential `reduce` (build it from the
//! `(value, count)` input with [`ValueCounts::from_counts`]) and a hand-kept aggregate (apply each
//! change with [`ValueCounts::update`]).
//!
//! # Notes
//!
//! - Numbers are kept as `f64`, so `1` and `1.0` are one value, and integers above 2^53 that
//!   round to the same `f64` are one value too. `-0.0` is stored as `0.0`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// A value of an aggregation field.
///
/// Values order booleans first, then numbers by value, then strings by bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AggregationValue {
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number.
    Number(AggregationNumber),
    /// A JSON string, case preserved.
    String(String),
}

impl AggregationValue {
    /// Wraps a number. `NaN` and infinities, which JSON cannot hold, become `0.0`.
    pub fn number(value: f64) -> Self {
        AggregationValue::Number(AggregationNumber::new(value))
    }

    /// Returns the value as AWS writes it in a bucket's `keyValue`.
    ///
    /// Integral numbers print without a fraction (`75`, not `75.0`).
    // NOTE: AWS types keyValue as a string but shows no bucket of a Number or Boolean field,
    // so the number and boolean formats here are guesses.
    pub fn key_value(&self) -> String {
        match self {
            AggregationValue::Bool(value) => value.to_string(),
            AggregationValue::Number(number) => {
                let value = number.get();
                if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
                    format!("{value:.0}")
                } else {
                    value.to_string()
                }
            }
            AggregationValue::String(text) => text.clone(),
        }
    }
}

/// A finite `f64` with a total order, so it can key a `BTreeMap`.
#[derive(Clone, Copy, Debug)]
pub struct AggregationNumber(f64);

impl AggregationNumber {
    fn new(value: f64) -> Self {
        // Adding 0.0 turns -0.0 into 0.0, so the two zeros are one key.
        Self(if value.is_finite() { value + 0.0 } else { 0.0 })
    }

    /// Returns the number.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for AggregationNumber {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for AggregationNumber {}

impl PartialOrd for AggregationNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AggregationNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl std::hash::Hash for AggregationNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// A retraction of a value more often than it was inserted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("retracting {value:?} {requested} time(s), but it is counted {present} time(s)")]
pub struct RetractError {
    /// The value retracted.
    pub value: AggregationValue,
    /// Its count before the update.
    pub present: u64,
    /// The number of occurrences the update tried to retract.
    pub requested: u64,
}

/// How often each value occurs among the matching things.
///
/// Design: no stored count is zero, so `distinct()` is the map's length.
///
/// # Memory usage
///
/// One map entry per distinct value: about 50 bytes plus the string length. Statistics and
/// percentiles read every distinct number once per response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValueCounts {
    counts: BTreeMap<AggregationValue, u64>,
    total: u64,
}

impl ValueCounts {
    /// Creates an empty multiset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a multiset from `(value, count)` pairs, adding the counts of repeated values.
    pub fn from_counts(pairs: impl IntoIterator<Item = (AggregationValue, u64)>) -> Self {
        let mut counts = Self::new();
        for (value, count) in pairs {
            if count > 0 {
                *counts.counts.entry(value).or_insert(0) += count;
                counts.total += count;
            }
        }
        counts
    }

    /// Counts one more occurrence of `value`.
    pub fn insert(&mut self, value: AggregationValue) {
        *self.counts.entry(value).or_insert(0) += 1;
        self.total += 1;
    }

    /// Removes one occurrence of `value`.
    ///
    /// # Errors
    ///
    /// Returns a [`RetractError`] and changes nothing when `value` is not counted.
    pub fn retract(&mut self, value: AggregationValue) -> Result<(), RetractError> {
        self.update(value, -1)
    }

    /// Adds `diff` occurrences of `value`, or removes them when `diff` is negative, as a
    /// differential collection reports a change.
    ///
    /// # Errors
    ///
    /// Returns a [`RetractError`] and changes nothing when the count would drop below zero.
    pub fn update(&mut self, value: AggregationValue, diff: i64) -> Result<(), RetractError> {
        let amount = diff.unsigned_abs();
        if diff >= 0 {
            if amount > 0 {
                *self.counts.entry(value).or_insert(0) += amount;
                self.total += amount;
            }
            return Ok(());
        }
        match self.counts.entry(value) {
            Entry::Occupied(mut entry) if *entry.get() >= amount => {
                *entry.get_mut() -= amount;
                if *entry.get() == 0 {
                    entry.remove();
                }
                self.total -= amount;
                Ok(())
            }
            Entry::Occupied(entry) => Err(RetractError {
                present: *entry.get(),
                value: entry.key().clone(),
                requested: amount,
            }),
            Entry::Vacant(entry) => Err(RetractError {
                value: entry.into_key(),
                present: 0,
                requested: amount,
            }),
        }
    }

    /// Returns how many values are counted, repeats included.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Returns how many distinct values are counted.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// Returns true when nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Returns how often `value` is counted.
    pub fn count(&self, value: &AggregationValue) -> u64 {
        self.counts.get(value).copied().unwrap_or(0)
    }

    /// Returns each distinct value with its count, in value order.
    pub fn iter(&self) -> impl Iterator<Item = (&AggregationValue, u64)> {
        self.counts.iter().map(|(value, count)| (value, *count))
    }

    /// Returns each distinct number with its count, smallest first.
    pub fn numbers(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.iter().filter_map(|(value, count)| match value {
            AggregationValue::Number(number) => Some((number.get(), count)),
            _ => None,
        })
    }

    /// Returns how often `true` and `false` are counted.
    pub fn booleans(&self) -> (u64, u64) {
        (
            self.count(&AggregationValue::Bool(true)),
            self.count(&AggregationValue::Bool(false)),
        )
    }

    /// Returns how many strings are counted, repeats included.
    pub fn strings(&self) -> u64 {
        self.iter()
            .filter(|(value, _)| matches!(value, AggregationValue::String(_)))
            .map(|(_, count)| count)
            .sum()
    }
}

impl FromIterator<AggregationValue> for ValueCounts {
    fn from_iter<I: IntoIterator<Item = AggregationValue>>(values: I) -> Self {
        Self::from_counts(values.into_iter().map(|value| (value, 1)))
    }
}

impl Extend<AggregationValue> for ValueCounts {
    fn extend<I: IntoIterator<Item = AggregationValue>>(&mut self, values: I) {
        values.into_iter().for_each(|value| self.insert(value));
    }
}
