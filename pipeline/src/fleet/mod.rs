//! Fleet queries over shadows, compatible with AWS IoT fleet indexing.
//!
//! Everything here is a pure function of shadow data: no dataflow, no HTTP. A dataflow view
//! evaluates a [`Query`] against each thing's [`FleetDocument`], keeps a [`ValueCounts`] of the
//! aggregation field over the matching things, and renders AWS response documents from it.
//!
//! # Layout
//! - [`query`]: the query language: lexer, parser, syntax tree, limits and [`QueryError`].
//! - [`eval`]: [`FleetDocument`] and [`ShadowFields`], and [`Query::matches`].
//! - [`aggregate`]: [`ValueCounts`] and the statistics, cardinality, percentiles and buckets
//!   documents.
//! - [`request`]: SearchIndex and aggregation request documents, read into typed requests.
//! - [`search`]: the SearchIndex response document.
//! - `error`: [`FleetApiError`], with the AWS exception names and status codes.
//!
//! # Example
//!
//! ```
//! use pipeline::fleet::{
//!     Field, FleetDocument, Query, ShadowFields, ValueCounts, cardinality_document,
//! };
//! use serde_json::json;
//!
//! let states = [json!({"fw": "1.2"}), json!({"fw": "1.3"}), json!({"fw": "1.2"})]
//!     .map(|state| state.to_string());
//! let documents: Vec<FleetDocument> = ["lamp-1", "lamp-2", "fan-1"]
//!     .into_iter()
//!     .zip(&states)
//!     .map(|(thing, state)| {
//!         let reported = Some(state.as_str());
//!         FleetDocument::new(thing).with_classic(ShadowFields { reported, ..Default::default() })
//!     })
//!     .collect();
//!
//! // GetCardinality with queryString "thingName:lamp-*" and aggregationField "shadow.reported.fw".
//! let query = Query::parse("thingName:lamp-*").expect("valid query");
//! let field = Field::parse("shadow.reported.fw").expect("valid field");
//! let values: ValueCounts = documents
//!     .iter()
//!     .filter(|document| query.matches(document))
//!     .flat_map(|document| document.values(&field))
//!     .collect();
//! assert_eq!(cardinality_document(&values), json!({"cardinality": 2}));
//! ```

pub mod aggregate;
mod error;
pub mod eval;
pub mod query;
pub mod request;
pub mod search;

pub use aggregate::{
    AggregationValue, Bucket, FieldType, PercentPair, Statistics, ValueCounts, buckets,
    buckets_document, cardinality, cardinality_document, percentiles, percentiles_document,
};
pub use error::FleetApiError;
pub use eval::{FleetDocument, ShadowFields};
pub use query::{Field, Query, QueryError, QueryLimits, ShadowScope};
pub use request::{AggregationRequest, BucketsRequest, PercentilesRequest, SearchIndexRequest};
pub use search::{search_index_document, thing_document};
