//! Errors of the fleet APIs, named and coded as the AWS IoT API reports them.
//!
//! The exception names and HTTP status codes come from the AWS IoT API model (botocore
//! `iot/2015-05-28/service-2.json`): `InvalidRequestException`, `InvalidQueryException` and
//! `InvalidAggregationException` are 400, `ResourceNotFoundException` is 404.

use serde_json::{Value, json};

use super::query::QueryError;

/// A rejected fleet API request.
///
/// `Display` prints the message only, because that is the text a client receives.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetApiError {
    /// The request document is malformed or a member breaks its constraints.
    #[error("{message}")]
    InvalidRequest {
        /// The message, in the AWS validation format.
        message: String,
    },

    /// `queryString` does not parse.
    #[error("{0}")]
    InvalidQuery(#[from] QueryError),

    /// `aggregationField` names no field that can be aggregated.
    #[error("{message}")]
    InvalidAggregation {
        /// The message, which names the field and the problem.
        message: String,
    },

    /// `indexName` names an index this service does not have.
    #[error("{message}")]
    ResourceNotFound {
        /// The message, which names the missing index.
        message: String,
    },
}

impl FleetApiError {
    /// Creates an `InvalidRequestException`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
        }
    }

    /// Returns the HTTP status code.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::ResourceNotFound { .. } => 404,
            Self::InvalidRequest { .. }
            | Self::InvalidQuery(_)
            | Self::InvalidAggregation { .. } => 400,
        }
    }

    /// Returns the AWS exception name, for the `x-amzn-ErrorType` header.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "InvalidRequestException",
            Self::InvalidQuery(_) => "InvalidQueryException",
            Self::InvalidAggregation { .. } => "InvalidAggregationException",
            Self::ResourceNotFound { .. } => "ResourceNotFoundException",
        }
    }

    /// Renders the error body, `{"message": ".."}`.
    // NOTE: the AWS model gives each exception a `message` member and nothing else. Whether
    // AWS IoT also sends `__type` or `code` in the body is not documented.
    pub fn to_document(&self) -> Value {
        json!({ "message": self.to_string() })
    }
}
