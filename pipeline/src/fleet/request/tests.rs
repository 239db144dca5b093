use serde_json::json;

use super::*;

fn limits() -> QueryLimits {
    QueryLimits::default()
}

fn body(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("serializes")
}

fn invalid_request(error: FleetApiError) -> String {
    assert_eq!(error.status_code(), 400);
    assert_eq!(error.error_type(), "InvalidRequestException");
    error.to_string()
}

#[test]
fn search_index_reads_members_and_defaults() {
    let request = SearchIndexRequest::parse(
        &body(json!({
            "indexName": "AWS_Things",
            "queryString": "thingName:lamp-*",
            "maxResults": 5,
            "nextToken": "abc",
            "queryVersion": "2017-09-30",
            "unknownMember": 1
        })),
        &limits(),
    )
    .expect("valid request");
    assert_eq!(request.query.to_string(), "thingName:lamp-*");
    assert_eq!(request.max_results, 5);
    assert_eq!(request.next_token.as_deref(), Some("abc"));

    let request =
        SearchIndexRequest::parse(br#"{"queryString": "*", "maxResults": null}"#, &limits())
            .expect("valid request");
    assert_eq!(request.max_results, DEFAULT_MAX_RESULTS);
    assert_eq!(request.next_token, None);
}

#[test]
fn search_index_reports_every_violation() {
    let error = SearchIndexRequest::parse(
        &body(json!({"indexName": "bad name", "maxResults": 0})),
        &limits(),
    )
    .expect_err("three violations");
    assert_eq!(
        invalid_request(error),
        "3 validation errors detected: \
         Value 'bad name' at 'indexName' failed to satisfy constraint: Member must satisfy \
         regular expression pattern: [a-zA-Z0-9:_-]+; \
         Value null at 'queryString' failed to satisfy constraint: Member must not be null; \
         Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater \
         than or equal to 1"
    );

    let error = SearchIndexRequest::parse(
        &body(json!({"queryString": "", "maxResults": 101})),
        &limits(),
    )
    .expect_err("two violations");
    assert_eq!(
        invalid_request(error),
        "2 validation errors detected: \
         Value '' at 'queryString' failed to satisfy constraint: Member must have length greater \
         than or equal to 1; \
         Value '101' at 'maxResults' failed to satisfy constraint: Member must have value less \
         than or equal to 100"
    );
}

#[test]
fn malformed_documents_are_invalid_requests() {
    let cases: &[(&[u8], &str)] = &[
        (b"[]", "invalid request body: expected a JSON object"),
        (
            br#"{"queryString": 5}"#,
            "invalid request body: 'queryString' must be a string, found a number",
        ),
        (
            br#"{"queryString": "*", "maxResults": 1.5}"#,
            "invalid request body: 'maxResults' must be an integer, found a number",
        ),
    ];
    for &(document, message) in cases {
        let error = SearchIndexRequest::parse(document, &limits()).expect_err("malformed");
        assert_eq!(invalid_request(error), message);
    }
    let error = SearchIndexRequest::parse(b"{", &limits()).expect_err("not JSON");
    assert!(invalid_request(error).starts_with("invalid request body: "));
}

#[test]
fn unknown_index_is_not_found() {
    let error = AggregationRequest::parse(
        &body(json!({"indexName": "AWS_ThingGroups", "queryString": "*"})),
        &limits(),
    )
    .expect_err("no such index");
    assert_eq!(error.status_code(), 404);
    assert_eq!(error.error_type(), "ResourceNotFoundException");
    assert_eq!(
        error.to_string(),
        "index AWS_ThingGroups not found; this service has only AWS_Things"
    );
}

#[test]
fn bad_query_is_invalid_query() {
    let error = AggregationRequest::parse(&body(json!({"queryString": "thingName:"})), &limits())
        .expect_err("bad query");
    assert_eq!(error.status_code(), 400);
    assert_eq!(error.error_type(), "InvalidQueryException");
    assert_eq!(
        error.to_document(),
        json!({"message": "invalid query at position 10: expected a value after ':', found end of query"})
    );
}

#[test]
fn bad_aggregation_field_is_invalid_aggregation() {
    let error = AggregationRequest::parse(
        &body(json!({"queryString": "*", "aggregationField": "attributes.color"})),
        &limits(),
    )
    .expect_err("not a field of this service");
    assert_eq!(error.status_code(), 400);
    assert_eq!(error.error_type(), "InvalidAggregationException");
    assert!(
        error
            .to_string()
            .starts_with("invalid aggregationField 'attributes.color' at position 0")
    );
}

#[test]
fn statistics_request_reads_field() {
    let request = AggregationRequest::parse(
        &body(json!({"queryString": "*", "aggregationField": "shadow.reported.temp"})),
        &limits(),
    )
    .expect("valid request");
    assert_eq!(
        request
            .aggregation_field
            .map(|field| field.to_string())
            .as_deref(),
        Some("shadow.reported.temp")
    );
    let request = AggregationRequest::parse(&body(json!({"queryString": "*"})), &limits())
        .expect("the field is optional");
    assert_eq!(request.aggregation_field, None);
}

#[test]
fn percentiles_request_checks_percents() {
    let request = PercentilesRequest::parse(&body(json!({"queryString": "*"})), &limits())
        .expect("valid request");
    assert_eq!(request.percents, DEFAULT_PERCENTS.to_vec());

    let request = PercentilesRequest::parse(
        &body(json!({"queryString": "*", "percents": [0, 12.5, 100]})),
        &limits(),
    )
    .expect("valid request");
    assert_eq!(request.percents, vec![0.0, 12.5, 100.0]);

    let error = PercentilesRequest::parse(
        &body(json!({"queryString": "*", "percents": [50, 100.5, -1]})),
        &limits(),
    )
    .expect_err("out of range");
    assert_eq!(
        invalid_request(error),
        "2 validation errors detected: \
         Value '100.5' at 'percents.2.member' failed to satisfy constraint: Member must have value \
         less than or equal to 100; \
         Value '-1' at 'percents.3.member' failed to satisfy constraint: Member must have value \
         greater than or equal to 0"
    );
}

#[test]
fn buckets_request_reads_terms_aggregation() {
    let request = BucketsRequest::parse(
        &body(json!({
            "queryString": "*",
            "aggregationField": "shadow.reported.color",
            "bucketsAggregationType": {"termsAggregation": {"maxBuckets": 3}}
        })),
        &limits(),
    )
    .expect("valid request");
    assert_eq!(request.max_buckets, 3);
    assert_eq!(
        request.aggregation_field.to_string(),
        "shadow.reported.color"
    );

    let request = BucketsRequest::parse(
        &body(json!({
            "queryString": "*",
            "aggregationField": "thingName",
            "bucketsAggregationType": {"termsAggregation": {}}
        })),
        &limits(),
    )
    .expect("valid request");
    assert_eq!(request.max_buckets, DEFAULT_MAX_BUCKETS);
}

#[test]
fn buckets_request_requires_members() {
    let error = BucketsRequest::parse(&body(json!({"queryString": "*"})), &limits())
        .expect_err("two members missing");
    assert_eq!(
        invalid_request(error),
        "2 validation errors detected: \
         Value null at 'aggregationField' failed to satisfy constraint: Member must not be null; \
         Value null at 'bucketsAggregationType' failed to satisfy constraint: Member must not be null"
    );

    let error = BucketsRequest::parse(
        &body(json!({
            "queryString": "*",
            "aggregationField": "thingName",
            "bucketsAggregationType": {"termsAggregation": {"maxBuckets": 10001}}
        })),
        &limits(),
    )
    .expect_err("too many buckets");
    assert_eq!(
        invalid_request(error),
        "1 validation error detected: \
         Value '10001' at 'bucketsAggregationType.termsAggregation.maxBuckets' failed to satisfy \
         constraint: Member must have value less than or equal to 10000"
    );
}

#[test]
fn unknown_query_version_is_rejected() {
    let error = SearchIndexRequest::parse(
        &body(json!({"queryString": "*", "queryVersion": "2030-01-01"})),
        &limits(),
    )
    .expect_err("unknown version");
    assert!(invalid_request(error).contains("at 'queryVersion'"));
}
