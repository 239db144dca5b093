//! The SearchIndex response document: `{"things": [..], "nextToken": ..}`.
//!
//! Each thing is a `ThingDocument` of the AWS IoT API model. Its `shadow` member is a JSON
//! document serialized into a string: the classic shadow's sections at the top, and named
//! shadows under `name`:
//!
//! ```text
//! {"desired": {..}, "reported": {..}, "metadata": {..}, "hasDelta": false, "version": 3,
//!  "name": {"config": {"reported": {..}, "metadata": {..}, "hasDelta": false, "version": 1}}}
//! ```
//!
//! # Notes
//!
//! - The layout follows the SearchIndex output in the AWS re:Post answer "how to get the state of
//!   all shadows classic and named" and the `shadow` example on the AWS page "Managing thing
//!   indexing". Neither shows a shadow with a delta; this module adds `delta` when there is one,
//!   because AWS indexes the delta section.
//! - Registry and connectivity members (`thingId`, `thingTypeName`, `attributes`,
//!   `connectivity`) are left out, because this service has no registry.

use serde_json::{Map, Value, json};

use crate::dataflow::ShadowVersion;

/// Renders one `ThingDocument`: the thing name and, when it has any shadow, its `shadow` string.
pub fn thing_document(
    thing_name: &str,
    classic: Option<&ShadowVersion>,
    named: &[(&str, &ShadowVersion)],
) -> Value {
    let mut shadow = classic.map(shadow_sections).unwrap_or_default();
    if !named.is_empty() {
        let named: Map<String, Value> = named
            .iter()
            .map(|(name, version)| ((*name).to_owned(), Value::Object(shadow_sections(version))))
            .collect();
        shadow.insert("name".to_owned(), Value::Object(named));
    }
    let mut document = Map::new();
    document.insert("thingName".to_owned(), json!(thing_name));
    if !shadow.is_empty() {
        document.insert(
            "shadow".to_owned(),
            json!(Value::Object(shadow).to_string()),
        );
    }
    Value::Object(document)
}

/// Renders the SearchIndex response, with `nextToken` only when another page exists.
pub fn search_index_document(things: Vec<Value>, next_token: Option<&str>) -> Value {
    let mut document = Map::new();
    document.insert("things".to_owned(), Value::Array(things));
    if let Some(token) = next_token {
        document.insert("nextToken".to_owned(), json!(token));
    }
    Value::Object(document)
}

/// Renders the sections of one shadow: state, delta, metadata, `hasDelta` and `version`.
fn shadow_sections(version: &ShadowVersion) -> Map<String, Value> {
    let (mut sections, rendered) = version.shadow.state_and_metadata_value();
    let delta = version.delta();
    if let Some(delta) = delta {
        sections.insert("delta".to_owned(), Value::Object(delta.state()));
    }
    sections.insert("metadata".to_owned(), Value::Object(rendered));
    sections.insert("hasDelta".to_owned(), json!(delta.is_some()));
    sections.insert("version".to_owned(), json!(version.version()));
    sections
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::{Limits, apply_update, decode_update};

    fn version(payload: &str) -> std::sync::Arc<ShadowVersion> {
        let limits = Limits::default();
        let request = decode_update(payload.as_bytes(), &limits).expect("valid update");
        let shadow = apply_update(None, 0, &request, 100, &limits).expect("update applies");
        ShadowVersion::new(shadow, 100_000, None)
    }

    #[test]
    fn thing_document_serializes_shadows() {
        let classic = version(r#"{"state":{"desired":{"on":true},"reported":{"on":false}}}"#);
        let config = version(r#"{"state":{"reported":{"mode":"eco"}}}"#);
        let document = thing_document("lamp", Some(&classic), &[("config", &config)]);
        assert_eq!(document["thingName"], "lamp");

        let shadow: Value = serde_json::from_str(document["shadow"].as_str().expect("a string"))
            .expect("the shadow member is JSON");
        assert_eq!(
            shadow,
            json!({
                "desired": {"on": true},
                "reported": {"on": false},
                "delta": {"on": true},
                "metadata": {
                    "desired": {"on": {"timestamp": 100}},
                    "reported": {"on": {"timestamp": 100}}
                },
                "hasDelta": true,
                "version": 1,
                "name": {"config": {
                    "reported": {"mode": "eco"},
                    "metadata": {"reported": {"mode": {"timestamp": 100}}},
                    "hasDelta": false,
                    "version": 1
                }}
            })
        );
    }

    #[test]
    fn thing_without_shadow_has_name_only() {
        assert_eq!(
            thing_document("bare", None, &[]),
            json!({"thingName": "bare"})
        );
    }

    #[test]
    fn next_token_appears_only_when_given() {
        assert_eq!(search_index_document(vec![], None), json!({"things": []}));
        assert_eq!(
            search_index_document(vec![json!({"thingName": "a"})], Some("t1")),
            json!({"things": [{"thingName": "a"}], "nextToken": "t1"})
        );
    }
}
