//! Aggregations over one field of the matching things: GetStatistics, GetCardinality,
//! GetPercentiles and GetBucketsAggregation.
//!
//! All four read a [`ValueCounts`], the multiset of the field's values, which supports both
//! inserting and retracting a value. A view keeps one per query and field, updates it as things
//! start or stop matching (take the values from [`FleetDocument::values`]), and renders a
//! response from it on request.
//!
//! [`FleetDocument::values`]: crate::fleet::eval::FleetDocument::values
//!
//! # Notes
//!
//! - Statistics are recomputed from the multiset on each request instead of kept as running
//!   sums. That costs one pass over the distinct numbers per response. In return, the result
//!   after any sequence of inserts and retractions is bit for bit the result of computing from
//!   the remaining values, where running `f64` sums would drift.
//! - Array fields contribute every element, so `count` counts values. AWS describes `count` as
//!   a number of things, and its pages show no array field.
//!
//! # Example
//!
//! ```
//! use pipeline::fleet::aggregate::{AggregationValue, FieldType, Statistics, ValueCounts};
//!
//! let mut values: ValueCounts =
//!     [-125.0, 75.0, 150.0].into_iter().map(AggregationValue::number).collect();
//! values.insert(AggregationValue::number(1000.0));
//! values.retract(AggregationValue::number(1000.0)).expect("1000 was inserted");
//!
//! let document = Statistics::compute(&values, FieldType::Number).to_document();
//! assert_eq!(document["statistics"]["count"], 3);
//! assert_eq!(document["statistics"]["sum"], 100.0);
//! assert_eq!(document["statistics"]["variance"], 13472.22222222222);
//! ```

mod documents;
mod values;

pub use documents::{
    Bucket, DEFAULT_MAX_BUCKETS, DEFAULT_PERCENTS, FieldType, PercentPair, Statistics, buckets,
    buckets_document, cardinality, cardinality_document, percentiles, percentiles_document,
};
pub use values::{AggregationNumber, AggregationValue, RetractError, ValueCounts};

#[cfg(test)]
mod tests;
