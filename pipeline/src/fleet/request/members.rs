//! Reads the members of a request document and collects constraint violations.

use serde_json::{Map, Value};

use super::{MAX_MAX_BUCKETS, QUERY_VERSION, THINGS_INDEX_NAME};
use crate::fleet::error::FleetApiError;
use crate::fleet::query::{Query, QueryLimits};

/// Members that every fleet API request has.
pub(super) struct CommonMembers<'a> {
    query_string: Option<&'a str>,
}

impl CommonMembers<'_> {
    pub(super) fn parse_query(&self, limits: &QueryLimits) -> Result<Query, FleetApiError> {
        let text = self
            .query_string
            .expect("a missing queryString is a violation");
        Ok(Query::parse_with_limits(text, limits)?)
    }
}

/// A reader of the members of a request object, which collects constraint violations.
pub(super) struct Members<'a> {
    object: &'a Map<String, Value>,
    violations: Vec<String>,
    missing_index: Option<String>,
}

impl<'a> Members<'a> {
    pub(super) fn new(object: &'a Map<String, Value>) -> Self {
        Self {
            object,
            violations: Vec::new(),
            missing_index: None,
        }
    }

    /// Reads `indexName`, `queryString` and `queryVersion`.
    pub(super) fn common(&mut self) -> Result<CommonMembers<'a>, FleetApiError> {
        if let Some(index_name) = self.string("indexName")? {
            self.check_index_name(index_name);
        }
        let query_string = self.string("queryString")?;
        match query_string {
            None => self.violation("null", "queryString", "Member must not be null"),
            Some("") => self.violation(
                "''",
                "queryString",
                "Member must have length greater than or equal to 1",
            ),
            Some(_) => {}
        }
        // NOTE: AWS documents only 2017-09-30 and does not say how it treats other versions.
        if let Some(version) = self.string("queryVersion")?
            && version != QUERY_VERSION
        {
            self.violations.push(format!(
                "Value '{version}' at 'queryVersion' failed to satisfy constraint: \
                 Member must be {QUERY_VERSION}"
            ));
        }
        Ok(CommonMembers { query_string })
    }

    fn check_index_name(&mut self, name: &str) {
        let length = name.chars().count();
        if length < 1 {
            self.violation(
                "''",
                "indexName",
                "Member must have length greater than or equal to 1",
            );
        } else if length > 128 {
            let value = format!("'{name}'");
            self.violation(
                &value,
                "indexName",
                "Member must have length less than or equal to 128",
            );
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'))
        {
            let value = format!("'{name}'");
            self.violation(
                &value,
                "indexName",
                "Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+",
            );
        } else if name != THINGS_INDEX_NAME {
            self.missing_index = Some(name.to_owned());
        }
    }

    /// Reads `aggregationField`. An empty one is a violation.
    pub(super) fn optional_field(&mut self) -> Result<Option<&'a str>, FleetApiError> {
        let field = self.string("aggregationField")?;
        if field == Some("") {
            self.violation(
                "''",
                "aggregationField",
                "Member must have length greater than or equal to 1",
            );
        }
        Ok(field.filter(|field| !field.is_empty()))
    }

    pub(super) fn percents(&mut self) -> Result<Option<Vec<f64>>, FleetApiError> {
        let Some(list) = self.member("percents") else {
            return Ok(None);
        };
        let Value::Array(elements) = list else {
            return Err(wrong_type("percents", "a list of numbers", list));
        };
        let mut percents = Vec::with_capacity(elements.len());
        for (index, element) in elements.iter().enumerate() {
            let Some(percent) = element.as_f64() else {
                return Err(wrong_type("percents", "a list of numbers", element));
            };
            if !(0.0..=100.0).contains(&percent) {
                let bound = if percent < 0.0 {
                    "Member must have value greater than or equal to 0"
                } else {
                    "Member must have value less than or equal to 100"
                };
                let value = format!("'{element}'");
                self.violation(&value, &format!("percents.{}.member", index + 1), bound);
            }
            percents.push(percent);
        }
        Ok(Some(percents))
    }

    /// Reads `bucketsAggregationType.termsAggregation.maxBuckets`.
    pub(super) fn max_buckets(&mut self) -> Result<Option<i64>, FleetApiError> {
        let Some(kind) = self.member("bucketsAggregationType") else {
            self.violation("null", "bucketsAggregationType", "Member must not be null");
            return Ok(None);
        };
        let Value::Object(kind) = kind else {
            return Err(wrong_type("bucketsAggregationType", "an object", kind));
        };
        // NOTE: AWS marks termsAggregation optional and defines no other kind, so an empty
        // bucketsAggregationType is read as a terms aggregation with the default maxBuckets.
        let terms = match kind.get("termsAggregation") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(terms)) => terms,
            Some(other) => return Err(wrong_type("termsAggregation", "an object", other)),
        };
        let path = "bucketsAggregationType.termsAggregation.maxBuckets";
        let max_buckets = match terms.get("maxBuckets") {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => value
                .as_i64()
                .ok_or_else(|| wrong_type("maxBuckets", "an integer", value))?,
        };
        self.check_range(path, max_buckets, 1, MAX_MAX_BUCKETS as i64);
        Ok(Some(max_buckets))
    }

    fn member(&self, name: &str) -> Option<&'a Value> {
        self.object.get(name).filter(|value| !value.is_null())
    }

    pub(super) fn string(&self, name: &str) -> Result<Option<&'a str>, FleetApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(wrong_type(name, "a string", other)),
        }
    }

    pub(super) fn integer(&self, name: &str) -> Result<Option<i64>, FleetApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "an integer", value)),
        }
    }

    pub(super) fn check_range(&mut self, path: &str, value: i64, minimum: i64, maximum: i64) {
        let text = format!("'{value}'");
        if value < minimum {
            self.violation(
                &text,
                path,
                &format!("Member must have value greater than or equal to {minimum}"),
            );
        } else if value > maximum {
            self.violation(
                &text,
                path,
                &format!("Member must have value less than or equal to {maximum}"),
            );
        }
    }

    pub(super) fn violation(&mut self, value: &str, path: &str, constraint: &str) {
        self.violations.push(format!(
            "Value {value} at '{path}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// Reports the collected violations, then a missing index.
    pub(super) fn finish(self) -> Result<(), FleetApiError> {
        let count = self.violations.len();
        if count > 0 {
            let noun = if count == 1 { "error" } else { "errors" };
            return Err(FleetApiError::invalid_request(format!(
                "{count} validation {noun} detected: {}",
                self.violations.join("; ")
            )));
        }
        if let Some(name) = self.missing_index {
            // NOTE: AWS's message for an unknown index is not documented.
            return Err(FleetApiError::ResourceNotFound {
                message: format!(
                    "index {name} not found; this service has only {THINGS_INDEX_NAME}"
                ),
            });
        }
        Ok(())
    }
}

pub(super) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, FleetApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(FleetApiError::invalid_request(
            "invalid request body: expected a JSON object",
        )),
        Err(error) => Err(FleetApiError::invalid_request(format!(
            "invalid request body: {error}"
        ))),
    }
}

fn wrong_type(name: &str, expected: &str, found: &Value) -> FleetApiError {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    FleetApiError::invalid_request(format!(
        "invalid request body: '{name}' must be {expected}, found {found}"
    ))
}
