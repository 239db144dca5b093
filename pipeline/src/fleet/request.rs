//! Request documents of the fleet APIs, read into typed requests.
//!
//! | API | HTTP | request type |
//! | --- | --- | --- |
//! | SearchIndex | `POST /indices/search` | [`SearchIndexRequest`] |
//! | GetStatistics | `POST /indices/statistics` | [`AggregationRequest`] |
//! | GetCardinality | `POST /indices/cardinality` | [`AggregationRequest`] |
//! | GetPercentiles | `POST /indices/percentiles` | [`PercentilesRequest`] |
//! | GetBucketsAggregation | `POST /indices/buckets` | [`BucketsRequest`] |
//!
//! Members, constraints and defaults follow the AWS IoT API model (botocore
//! `iot/2015-05-28/service-2.json`) and the API reference pages, for example
//! <https://docs.aws.amazon.com/goto/WebAPI/iot/SearchIndex>.
//!
//! Checks run in this order: the document and its member types, then member constraints (all
//! violations in one `InvalidRequestException`), then the index name, then the query
//! (`InvalidQueryException`), then the aggregation field (`InvalidAggregationException`).
//! Unknown members are ignored and `null` counts as absent.
//!
//! # Notes
//!
//! - Constraint messages use the AWS validation format ("1 validation error detected: Value
//!   '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or
//!   equal to 1"). The AWS IoT pages show no such message for these APIs.
//! - A member of the wrong JSON type is an `InvalidRequestException` here; AWS may return
//!   a serialization error instead.

use self::members::{Members, parse_object};
use super::aggregate::{DEFAULT_MAX_BUCKETS, DEFAULT_PERCENTS};
use super::error::FleetApiError;
use super::query::{Field, Query, QueryLimits};

/// The only index this service has, and the default `indexName`.
pub const THINGS_INDEX_NAME: &str = "AWS_Things";

/// The only `queryVersion` AWS documents, and the default.
pub const QUERY_VERSION: &str = "2017-09-30";

/// `maxResults` of a SearchIndex request that names none.
// NOTE: AWS documents the maximum of 100 but not the default, so the default is a guess.
pub const DEFAULT_MAX_RESULTS: usize = 100;

/// The largest `maxResults` AWS accepts ("This maximum number cannot exceed 100").
pub const MAX_MAX_RESULTS: usize = 100;

/// The largest `maxBuckets` AWS accepts (the `MaxBuckets` shape allows 1 to 10,000).
pub const MAX_MAX_BUCKETS: usize = 10_000;

/// A SearchIndex request.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchIndexRequest {
    /// The parsed `queryString`.
    pub query: Query,
    /// How many things one page returns, 1 to [`MAX_MAX_RESULTS`].
    pub max_results: usize,
    /// The token of the page to continue from, as the previous response gave it.
    pub next_token: Option<String>,
}

/// A GetStatistics or GetCardinality request.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregationRequest {
    /// The parsed `queryString`.
    pub query: Query,
    /// The field to aggregate. AWS makes it optional. When it is absent, AWS aggregates
    /// `registry.version`, a field this service does not have.
    pub aggregation_field: Option<Field>,
}

/// A GetPercentiles request.
#[derive(Clone, Debug, PartialEq)]
pub struct PercentilesRequest {
    /// The parsed `queryString`.
    pub query: Query,
    /// The field to aggregate, optional as in AWS.
    pub aggregation_field: Option<Field>,
    /// The percents to report, each from 0 to 100, or [`DEFAULT_PERCENTS`] when absent.
    pub percents: Vec<f64>,
}

/// A GetBucketsAggregation request with a terms aggregation, the only kind AWS defines.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketsRequest {
    /// The parsed `queryString`.
    pub query: Query,
    /// The field whose values become buckets.
    pub aggregation_field: Field,
    /// How many buckets to return, 1 to [`MAX_MAX_BUCKETS`], or [`DEFAULT_MAX_BUCKETS`] when
    /// absent.
    pub max_buckets: usize,
}

impl SearchIndexRequest {
    /// Reads a SearchIndex request document.
    ///
    /// # Errors
    ///
    /// Returns a [`FleetApiError`] as the module documentation orders them.
    pub fn parse(body: &[u8], limits: &QueryLimits) -> Result<Self, FleetApiError> {
        let object = parse_object(body)?;
        let mut members = Members::new(&object);
        let common = members.common()?;
        let max_results = members.integer("maxResults")?;
        let next_token = members.string("nextToken")?.map(str::to_owned);
        if let Some(value) = max_results {
            members.check_range("maxResults", value, 1, MAX_MAX_RESULTS as i64);
        }
        members.finish()?;
        Ok(Self {
            query: common.parse_query(limits)?,
            max_results: max_results.map_or(DEFAULT_MAX_RESULTS, |value| value as usize),
            next_token,
        })
    }
}

impl AggregationRequest {
    /// Reads a GetStatistics or GetCardinality request document.
    ///
    /// # Errors
    ///
    /// Returns a [`FleetApiError`] as the module documentation orders them.
    pub fn parse(body: &[u8], limits: &QueryLimits) -> Result<Self, FleetApiError> {
        let object = parse_object(body)?;
        let mut members = Members::new(&object);
        let common = members.common()?;
        let field = members.optional_field()?;
        members.finish()?;
        Ok(Self {
            query: common.parse_query(limits)?,
            aggregation_field: field.map(parse_aggregation_field).transpose()?,
        })
    }
}

impl PercentilesRequest {
    /// Reads a GetPercentiles request document.
    ///
    /// # Errors
    ///
    /// Returns a [`FleetApiError`] as the module documentation orders them.
    pub fn parse(body: &[u8], limits: &QueryLimits) -> Result<Self, FleetApiError> {
        let object = parse_object(body)?;
        let mut members = Members::new(&object);
        let common = members.common()?;
        let field = members.optional_field()?;
        let percents = members.percents()?;
        members.finish()?;
        Ok(Self {
            query: common.parse_query(limits)?,
            aggregation_field: field.map(parse_aggregation_field).transpose()?,
            percents: percents.unwrap_or_else(|| DEFAULT_PERCENTS.to_vec()),
        })
    }
}

impl BucketsRequest {
    /// Reads a GetBucketsAggregation request document.
    ///
    /// # Errors
    ///
    /// Returns a [`FleetApiError`] as the module documentation orders them.
    pub fn parse(body: &[u8], limits: &QueryLimits) -> Result<Self, FleetApiError> {
        let object = parse_object(body)?;
        let mut members = Members::new(&object);
        let common = members.common()?;
        let field = members.optional_field()?;
        if field.is_none() {
            members.violation("null", "aggregationField", "Member must not be null");
        }
        let max_buckets = members.max_buckets()?;
        members.finish()?;
        let query = common.parse_query(limits)?;
        let field = field.expect("a missing field is a violation, reported by finish");
        Ok(Self {
            query,
            aggregation_field: parse_aggregation_field(field)?,
            max_buckets: max_buckets.map_or(DEFAULT_MAX_BUCKETS, |value| value as usize),
        })
    }
}

fn parse_aggregation_field(name: &str) -> Result<Field, FleetApiError> {
    Field::parse(name).map_err(|error| FleetApiError::InvalidAggregation {
        message: format!(
            "invalid aggregationField '{name}' at position {}: expected {}, found {}",
            error.position, error.expected, error.found
        ),
    })
}

mod members;

#[cfg(test)]
mod tests;
