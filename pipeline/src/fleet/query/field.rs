//! Field names: `thingName`, `shadow.…` and `shadow.name.<name>.…`.
//!
//! # Notes
//!
//! - Keys are split at unescaped dots, so `shadow.reported.a\.b` names the key `a.b`.
//! - Fields outside shadows and `thingName` (`attributes.*`, `connectivity.*`, `registry.*`) and
//!   `shadow.metadata.*` are rejected, because this service keeps no registry, connectivity or
//!   searchable metadata.

use super::ast::{Field, Section, ShadowName, ShadowProperty};
use super::error::QueryError;
use super::lexer::{Word, WordChar};

/// The accepted field forms, for error messages.
const FIELD_FORMS: &str = "a field: thingName, shadow.hasDelta, shadow.version, \
     shadow.reported.<path>, shadow.desired.<path>, shadow.delta.<path>, \
     or the same after shadow.name.<shadowName>";

/// One dot-separated piece of a field name.
struct Segment {
    text: String,
    position: usize,
}

impl Field {
    /// Parses a field name such as `shadow.name.lamp.reported.color`, as the
    /// `aggregationField` of an aggregation request contains it.
    ///
    /// # Errors
    ///
    /// Returns a [`QueryError`] whose position is a byte offset in `name`.
    pub fn parse(name: &str) -> Result<Field, QueryError> {
        let tokens = super::lexer::tokenize(name)?;
        match tokens.as_slice() {
            [token] => match &token.kind {
                super::lexer::TokenKind::Word(word) => parse_field(word, name.len()),
                _ => Err(QueryError::new(
                    token.position,
                    FIELD_FORMS,
                    token.describe(),
                )),
            },
            [] => Err(QueryError::new(0, FIELD_FORMS, "end of query")),
            [_, second, ..] => Err(QueryError::new(
                second.position,
                "end of the field name",
                second.describe(),
            )),
        }
    }
}

/// Parses a word that precedes `:` or a comparison as a field name. `end` is the byte
/// offset just after the word, for errors about a missing last key.
pub(crate) fn parse_field(word: &Word, end: usize) -> Result<Field, QueryError> {
    let segments = split_segments(&word.chars, end);
    let texts: Vec<&str> = segments
        .iter()
        .map(|segment| segment.text.as_str())
        .collect();
    match texts.as_slice() {
        ["thingName"] => Ok(Field::ThingName),
        ["shadow", "name", name, ..] => {
            if name.is_empty() {
                let last = segments.len() == 3;
                return Err(missing_key(
                    &segments[2],
                    last,
                    "a shadow name after 'shadow.name.'",
                ));
            }
            let property = parse_property(&segments[3..], &segments[2], "shadow.name.<name>.")?;
            Ok(Field::Shadow {
                shadow: ShadowName::Named((*name).to_owned()),
                property,
            })
        }
        ["shadow", ..] => {
            let property = parse_property(&segments[1..], &segments[0], "shadow.")?;
            Ok(Field::Shadow {
                shadow: ShadowName::Classic,
                property,
            })
        }
        _ => Err(QueryError::new(
            segments[0].position,
            FIELD_FORMS,
            format!("'{}'", word.text()),
        )),
    }
}

/// Parses what follows `shadow.` or `shadow.name.<name>.`. `previous` is the segment before.
fn parse_property(
    segments: &[Segment],
    previous: &Segment,
    prefix: &str,
) -> Result<ShadowProperty, QueryError> {
    let Some((first, path)) = segments.split_first() else {
        return Err(QueryError::new(
            previous.position + previous.text.len(),
            format!("hasDelta, version, desired, reported or delta after '{prefix}'"),
            "end of the field name",
        ));
    };
    let section = match first.text.as_str() {
        "hasDelta" | "version" if !path.is_empty() => {
            return Err(QueryError::new(
                path[0].position,
                format!("end of the field name after '{}'", first.text),
                format!("'{}'", path[0].text),
            ));
        }
        "hasDelta" => return Ok(ShadowProperty::HasDelta),
        "version" => return Ok(ShadowProperty::Version),
        "desired" => Section::Desired,
        "reported" => Section::Reported,
        "delta" => Section::Delta,
        "metadata" => {
            return Err(QueryError::new(
                first.position,
                "a state field (metadata fields are not searchable in this service)",
                "'metadata'",
            ));
        }
        other => {
            return Err(QueryError::new(
                first.position,
                format!("hasDelta, version, desired, reported or delta after '{prefix}'"),
                format!("'{other}'"),
            ));
        }
    };
    if path.is_empty() {
        return Err(QueryError::new(
            first.position + first.text.len(),
            format!("a key after '{}'", section.name()),
            "end of the field name",
        ));
    }
    if let Some(index) = path.iter().position(|segment| segment.text.is_empty()) {
        let last = index + 1 == path.len();
        return Err(missing_key(&path[index], last, "a key after '.'"));
    }
    Ok(ShadowProperty::State {
        section,
        path: path.iter().map(|segment| segment.text.clone()).collect(),
    })
}

/// Reports an empty key: at the end of the name, or at the dot that follows it.
fn missing_key(segment: &Segment, last: bool, expected: &str) -> QueryError {
    let found = if last { "end of the field name" } else { "'.'" };
    QueryError::new(segment.position, expected, found)
}

/// Splits at unescaped dots. An empty segment's position is where its key should start.
fn split_segments(chars: &[WordChar], end: usize) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut start = chars.first().map_or(end, |c| c.position);
    for (index, c) in chars.iter().enumerate() {
        if c.ch == '.' && !c.escaped {
            segments.push(Segment {
                text: std::mem::take(&mut text),
                position: start,
            });
            start = chars.get(index + 1).map_or(end, |next| next.position);
        } else {
            text.push(c.ch);
        }
    }
    segments.push(Segment {
        text,
        position: start,
    });
    segments
}
