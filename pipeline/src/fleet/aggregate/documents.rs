//! The four aggregations and their AWS response documents.
//!
//! Each function reads a [`ValueCounts`] and returns the body of the matching AWS API:
//!
//! | API | document |
//! | --- | --- |
//! | GetStatistics | `{"statistics": {"count", "average", "sum", "minimum", "maximum", "sumOfSquares", "variance", "stdDeviation"}}` |
//! | GetCardinality | `{"cardinality": n}` |
//! | GetPercentiles | `{"percentiles": [{"percent": p, "value": v}, ..]}` |
//! | GetBucketsAggregation | `{"totalCount": n, "buckets": [{"keyValue": "..", "count": n}, ..]}` |
//!
//! Counts are JSON integers and every other number is a JSON float (`100.0`), as in the examples
//! of the AWS IoT developer guide page "Querying for aggregate data" (`index-aggregate.md` in
//! the `awsdocs/aws-iot-docs` repository).
//!
//! # Notes
//!
//! - Variance is the population variance `(sumOfSquares - sum² / count) / count`. With the
//!   values -125, 75 and 150 it reproduces the AWS example to the last digit (13472.22222222222).
//! - AWS computes cardinality and percentiles approximately; these are exact. Percentiles
//!   interpolate linearly between the two nearest ranks, at rank `p / 100 × (count - 1)`. That
//!   reproduces the AWS example (10 → 1.0, 30 → 1.4, 70 → 2.6) if its field held the values
//!   1, 1, 1, 2, 2, 2, 3, 3, 3, which the example does not show.

use serde_json::{Value, json};

use super::values::{AggregationValue, ValueCounts};

/// The percents GetPercentiles reports when a request names none.
pub const DEFAULT_PERCENTS: [f64; 7] = [1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0];

/// The number of buckets GetBucketsAggregation returns when a request names none.
pub const DEFAULT_MAX_BUCKETS: usize = 10;

/// The type AWS gives an aggregation field, which decides what GetStatistics returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// All eight statistics over the numbers; other values are ignored.
    Number,
    /// Only `count`, of the strings.
    String,
    /// The statistics of the booleans read as 0 and 1.
    Boolean,
}

impl FieldType {
    /// Chooses the type from the values: `Number` if any value is a number, else `Boolean` if
    /// any is a boolean, else `String`.
    pub fn infer(values: &ValueCounts) -> Self {
        if values.numbers().next().is_some() {
            FieldType::Number
        } else if values.booleans() != (0, 0) {
            FieldType::Boolean
        } else {
            FieldType::String
        }
    }
}

/// The GetStatistics results. Every field but `count` is `None` when there is no value to
/// compute it from, or when it overflows `f64`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Statistics {
    /// The number of values of the field's type.
    pub count: u64,
    /// The mean.
    pub average: Option<f64>,
    /// The sum.
    pub sum: Option<f64>,
    /// The smallest value.
    pub minimum: Option<f64>,
    /// The largest value.
    pub maximum: Option<f64>,
    /// The sum of the squares.
    pub sum_of_squares: Option<f64>,
    /// The population variance.
    pub variance: Option<f64>,
    /// The square root of the variance.
    pub std_deviation: Option<f64>,
}

impl Statistics {
    /// Computes the statistics of the values of `field_type`.
    ///
    /// Booleans count as 0 and 1, as the AWS page describes for `average`, `minimum`, `maximum`
    /// and `sum`.
    // NOTE: AWS calls the boolean average "the percentage of devices", but this returns the
    // fraction of true values (0.5, not 50). AWS does not document sumOfSquares, variance and
    // stdDeviation for booleans, so they are computed from the same 0 and 1 values.
    pub fn compute(values: &ValueCounts, field_type: FieldType) -> Self {
        match field_type {
            FieldType::Number => Self::from_numbers(values.numbers()),
            FieldType::Boolean => {
                let (trues, falses) = values.booleans();
                Self::from_numbers(
                    [(0.0, falses), (1.0, trues)]
                        .into_iter()
                        .filter(|(_, count)| *count > 0),
                )
            }
            FieldType::String => Self {
                count: values.strings(),
                ..Self::default()
            },
        }
    }

    /// Computes the statistics of `(value, count)` pairs in ascending value order.
    fn from_numbers(numbers: impl Iterator<Item = (f64, u64)>) -> Self {
        let (mut count, mut sum, mut sum_of_squares) = (0_u64, 0.0_f64, 0.0_f64);
        let (mut minimum, mut maximum) = (None, None);
        for (value, occurrences) in numbers {
            let weight = occurrences as f64;
            count += occurrences;
            sum += value * weight;
            sum_of_squares += value * value * weight;
            minimum.get_or_insert(value);
            maximum = Some(value);
        }
        if count == 0 || !sum.is_finite() || !sum_of_squares.is_finite() {
            // AWS: "if the field values exceed the maximum double value, the statistics values
            // are empty".
            return Self {
                count,
                ..Self::default()
            };
        }
        let n = count as f64;
        let variance = ((sum_of_squares - sum * sum / n) / n).max(0.0);
        Self {
            count,
            average: Some(sum / n),
            sum: Some(sum),
            minimum,
            maximum,
            sum_of_squares: Some(sum_of_squares),
            variance: Some(variance),
            std_deviation: Some(variance.sqrt()),
        }
    }

    /// Renders the GetStatistics response document.
    pub fn to_document(&self) -> Value {
        let mut statistics = serde_json::Map::new();
        statistics.insert("count".to_owned(), json!(self.count));
        let optional = [
            ("average", self.average),
            ("sum", self.sum),
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("sumOfSquares", self.sum_of_squares),
            ("variance", self.variance),
            ("stdDeviation", self.std_deviation),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                statistics.insert(name.to_owned(), json!(value));
            }
        }
        json!({ "statistics": statistics })
    }
}

/// Returns the number of distinct values.
pub fn cardinality(values: &ValueCounts) -> u64 {
    values.distinct() as u64
}

/// Renders the GetCardinality response document, with `cardinality` present also when it is 0.
pub fn cardinality_document(values: &ValueCounts) -> Value {
    json!({ "cardinality": cardinality(values) })
}

/// One percentile of a GetPercentiles response.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PercentPair {
    /// The percent asked for, from 0 to 100.
    pub percent: f64,
    /// The value at that percent.
    pub value: f64,
}

/// Computes the numbers' percentiles at `percents`, in the order given. Percents outside
/// 0..=100 are clamped. Returns no pairs when there is no number, as AWS does.
pub fn percentiles(values: &ValueCounts, percents: &[f64]) -> Vec<PercentPair> {
    // Cumulative counts: `ends[i]` is one past the last rank of the i-th distinct number.
    let mut numbers = Vec::new();
    let mut ends = Vec::new();
    let mut total = 0_u64;
    for (value, count) in values.numbers() {
        total += count;
        numbers.push(value);
        ends.push(total);
    }
    if total == 0 {
        return Vec::new();
    }
    let value_at = |rank: u64| numbers[ends.partition_point(|end| *end <= rank)];
    percents
        .iter()
        .map(|&percent| {
            let rank = percent.clamp(0.0, 100.0) / 100.0 * (total - 1) as f64;
            let lower = rank.floor() as u64;
            let upper = (lower + 1).min(total - 1);
            let (low, high) = (value_at(lower), value_at(upper));
            let value = low + (rank - lower as f64) * (high - low);
            PercentPair { percent, value }
        })
        .collect()
}

/// Renders the GetPercentiles response document.
pub fn percentiles_document(pairs: &[PercentPair]) -> Value {
    let pairs: Vec<Value> = pairs
        .iter()
        .map(|pair| json!({ "percent": pair.percent, "value": pair.value }))
        .collect();
    json!({ "percentiles": pairs })
}

/// One bucket of a terms aggregation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The value, as text.
    pub key_value: String,
    /// The number of occurrences.
    pub count: u64,
}

/// Returns the `max_buckets` most frequent values, by count descending and then by value
/// ascending. Values with the same text, such as the number `75` and the string `"75"`, share
/// one bucket.
pub fn buckets(values: &ValueCounts, max_buckets: usize) -> Vec<Bucket> {
    let mut merged: Vec<Bucket> = Vec::new();
    let mut index_of_key = std::collections::HashMap::new();
    for (value, count) in values.iter() {
        let key_value = AggregationValue::key_value(value);
        match index_of_key.get(&key_value) {
            Some(&index) => {
                let bucket: &mut Bucket = &mut merged[index];
                bucket.count += count;
            }
            None => {
                index_of_key.insert(key_value.clone(), merged.len());
                merged.push(Bucket { key_value, count });
            }
        }
    }
    // A stable sort keeps equal counts in value order.
    merged.sort_by_key(|bucket| std::cmp::Reverse(bucket.count));
    merged.truncate(max_buckets);
    merged
}

/// Renders the GetBucketsAggregation response document. `total_count` is the number of things
/// that match the query, which the values alone do not tell.
pub fn buckets_document(buckets: &[Bucket], total_count: u64) -> Value {
    let buckets: Vec<Value> = buckets
        .iter()
        .map(|bucket| json!({ "keyValue": bucket.key_value, "count": bucket.count }))
        .collect();
    json!({ "totalCount": total_count, "buckets": buckets })
}
