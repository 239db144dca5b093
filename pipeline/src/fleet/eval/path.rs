//! Field lookup in a stored section's compact JSON text, without building a `serde_json::Value`.
//!
//! [`any_at_path`] streams the text through `serde_json`'s deserializer: members off the path
//! are skipped with `IgnoredAny`, keys are compared without allocating, and each value at the
//! end of the path is handed to the test as a [`Leaf`]. Arrays on the way are entered element by
//! element, as [`super`] documents.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::Leaf;
use super::compare::Numeric;

/// Calls `test` on each value at `path` inside the JSON text `json` until it returns true, and
/// returns whether it did. Text that is not valid JSON matches nothing.
pub(super) fn any_at_path(
    json: &str,
    path: &[String],
    test: &mut dyn FnMut(Leaf<'_>) -> bool,
) -> bool {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    PathSeed { path, test }
        .deserialize(&mut deserializer)
        .unwrap_or(false)
}

/// Follows `path` from the value being deserialized.
struct PathSeed<'p, 't> {
    path: &'p [String],
    test: &'t mut dyn FnMut(Leaf<'_>) -> bool,
}

impl<'de> DeserializeSeed<'de> for PathSeed<'_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl PathSeed<'_, '_> {
    fn leaf(self, leaf: Leaf<'_>) -> bool {
        self.path.is_empty() && (self.test)(leaf)
    }

    fn number(self, number: Number) -> bool {
        self.leaf(Leaf::Number(Numeric::from_json(&number)))
    }
}

impl<'de> Visitor<'de> for PathSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
        Ok(self.leaf(Leaf::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<bool, E> {
        Ok(self.number(Number::from(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<bool, E> {
        Ok(self.number(Number::from(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<bool, E> {
        Ok(Number::from_f64(value).is_some_and(|number| self.number(number)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<bool, E> {
        Ok(self.leaf(Leaf::Text(value)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<bool, A::Error> {
        let PathSeed { path, test } = self;
        let mut found = false;
        while !found {
            let seed = PathSeed {
                path,
                test: &mut *test,
            };
            match elements.next_element_seed(seed)? {
                Some(matched) => found = matched,
                None => return Ok(false),
            }
        }
        while elements.next_element::<IgnoredAny>()?.is_some() {}
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<bool, A::Error> {
        let PathSeed { path, test } = self;
        let Some((wanted, rest)) = path.split_first() else {
            while members.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(test(Leaf::Object));
        };
        let mut found = false;
        while let Some(is_wanted) = members.next_key_seed(KeyEquals(wanted))? {
            if is_wanted && !found {
                found = members.next_value_seed(PathSeed {
                    path: rest,
                    test: &mut *test,
                })?;
            } else {
                members.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares an object key with the expected one, without allocating the key.
struct KeyEquals<'w>(&'w str);

impl<'de> DeserializeSeed<'de> for KeyEquals<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyEquals<'_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts_at(json: &str, path: &[&str]) -> Vec<String> {
        let path: Vec<String> = path.iter().map(|part| (*part).to_owned()).collect();
        let mut seen = Vec::new();
        any_at_path(json, &path, &mut |leaf| {
            seen.push(format!("{leaf:?}"));
            false
        });
        seen
    }

    #[test]
    fn path_goes_through_arrays_and_objects() {
        let json = r#"{"a":{"b":[1,{"c":"x"},{"c":2.5}]},"d":true}"#;
        assert_eq!(texts_at(json, &["a", "b", "c"]).len(), 2);
        assert_eq!(texts_at(json, &["d"]), vec!["Bool(true)"]);
        assert_eq!(texts_at(json, &["a"]), vec!["Object"]);
        assert!(texts_at(json, &["a", "x"]).is_empty());
        assert!(texts_at(json, &["d", "e"]).is_empty());
    }

    #[test]
    fn escaped_keys_and_strings_compare_unescaped() {
        let json = r#"{"q\"k":"line\nbreak"}"#;
        let path = vec!["q\"k".to_owned()];
        let found = any_at_path(
            json,
            &path,
            &mut |leaf| matches!(leaf, Leaf::Text(text) if text == "line\nbreak"),
        );
        assert!(found);
    }

    #[test]
    fn invalid_text_matches_nothing() {
        let path = vec!["a".to_owned()];
        assert!(!any_at_path("{\"a\":", &path, &mut |_| true));
    }
}
