//! Direct JSON encoding of response documents, without building `serde_json::Value`s.
//!
//! The stored state is compact JSON text already, so a document copies it as it is, and writes the
//! AWS metadata by scanning that text once, copying its keys and skipping its scalars. Keys are
//! written in sorted order, so every document has exactly the bytes that `serde_json` writes for
//! the `Value` that the matching function of `documents` returns.

use serde_json::{Map, Value};

use super::metadata::Stamps;

/// Writes `{"key":value,...}` members one at a time, adding commas and braces.
pub(crate) struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    empty: bool,
}

impl<'o> ObjectWriter<'o> {
    /// Opens an object.
    pub(crate) fn open(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// Writes the next key and returns the output, ready for its value.
    pub(crate) fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// Writes a member whose value is JSON text.
    pub(crate) fn raw(&mut self, key: &str, json: &str) {
        self.key(key).extend_from_slice(json.as_bytes());
    }

    /// Writes a member whose value is an integer.
    pub(crate) fn integer<T: Into<i128> + serde::Serialize>(&mut self, key: &str, value: T) {
        let out = self.key(key);
        let value: i128 = value.into();
        match u64::try_from(value.unsigned_abs()) {
            Ok(magnitude) => {
                if value < 0 {
                    out.push(b'-');
                }
                let mut digits = [0; U64_DIGITS_MAX];
                out.extend_from_slice(format_digits(&mut digits, magnitude));
            }
            Err(_) => serde_json::to_writer(out, &value).expect("writing to a Vec cannot fail"),
        }
    }

    /// Writes a member whose value is a string.
    pub(crate) fn string(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        write_str(out, value);
    }

    /// Closes the object.
    pub(crate) fn close(self) {
        self.out.push(b'}');
    }
}

/// Writes a JSON string with `serde_json`'s escaping.
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    // serde_json escapes only control characters, `"` and `\\`. Keys and tokens rarely contain
    // any, and copying them directly saves most of the cost of writing a key.
    if !needs_escape(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    serde_json::to_writer(out, text).expect("writing a string to a Vec cannot fail");
}

/// Returns true when `bytes` has a byte that JSON strings escape: a control character, `"` or
/// `\\`. Eight bytes are checked at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Returns whether some byte of `word` is below `limit` (at most 0x80). Subtracting `limit`
    /// from each byte borrows into the high bit of exactly those bytes.
    fn has_byte_below(word: u64, limit: u8) -> bool {
        word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS != 0
    }
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunks have 8 bytes"));
        if has_byte_below(word, 0x20)
            || has_byte_below(word ^ (ONES * u64::from(b'"')), 1)
            || has_byte_below(word ^ (ONES * u64::from(b'\\')), 1)
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

/// Writes the AWS metadata of a stored state object from its JSON text and leaf timestamps.
///
/// `json` must be compact text that `serde_json` wrote for a state object, as a stored section
/// or delta contains. Because that text is known to be valid, it is scanned by hand instead of
/// deserialized. Keys are copied as they are escaped there, and scalars are skipped unparsed.
///
/// # Panics
///
/// Panics when `json` ends inside a value, which only a broken section invariant allows.
pub(crate) fn write_stored_metadata(out: &mut Vec<u8>, json: &str, stamps: &Stamps) {
    let mut scanner = StoredScanner {
        text: json.as_bytes(),
        at: 0,
        stamps,
        next_leaf: 0,
        leaf: TimestampLeaf::default(),
    };
    scanner.object(out, None);
}

/// Walks compact JSON that `serde_json` wrote and writes its metadata.
struct StoredScanner<'t, 's> {
    text: &'t [u8],
    at: usize,
    stamps: &'s Stamps,
    next_leaf: usize,
    leaf: TimestampLeaf,
}

impl StoredScanner<'_, '_> {
    /// Writes the metadata of the object at the cursor. `uniform` is the timestamp of every
    /// leaf inside an array; `None` takes the next stored leaf timestamp for each leaf.
    fn object(&mut self, out: &mut Vec<u8>, uniform: Option<i64>) {
        out.push(b'{');
        self.at += 1;
        if self.text[self.at] == b'}' {
            self.at += 1;
            out.push(b'}');
            return;
        }
        loop {
            let key_start = self.at;
            self.skip_string();
            out.extend_from_slice(&self.text[key_start..self.at]);
            out.push(b':');
            self.at += 1;
            self.value(out, uniform);
            let separator = self.text[self.at];
            self.at += 1;
            if separator != b',' {
                break;
            }
            out.push(b',');
        }
        out.push(b'}');
    }

    /// Writes the metadata of the value at the cursor, as [`StoredScanner::object`] does.
    fn value(&mut self, out: &mut Vec<u8>, uniform: Option<i64>) {
        match self.text[self.at] {
            b'{' => self.object(out, uniform),
            b'[' => {
                // An array is one leaf: all its elements share the array's timestamp.
                let timestamp = uniform.unwrap_or_else(|| self.next_timestamp());
                out.push(b'[');
                self.at += 1;
                if self.text[self.at] == b']' {
                    self.at += 1;
                    out.push(b']');
                    return;
                }
                loop {
                    self.value(out, Some(timestamp));
                    let separator = self.text[self.at];
                    self.at += 1;
                    if separator != b',' {
                        break;
                    }
                    out.push(b',');
                }
                out.push(b']');
            }
            first => {
                if first == b'"' {
                    self.skip_string();
                } else {
                    while !matches!(self.text.get(self.at), None | Some(b',' | b'}' | b']')) {
                        self.at += 1;
                    }
                }
                let timestamp = uniform.unwrap_or_else(|| self.next_timestamp());
                self.leaf.write(out, timestamp);
            }
        }
    }

    fn next_timestamp(&mut self) -> i64 {
        let timestamp = self.stamps.get(self.next_leaf);
        self.next_leaf += 1;
        timestamp
    }

    /// Moves the cursor past the string that starts at it.
    fn skip_string(&mut self) {
        self.at += 1;
        loop {
            match self.text[self.at] {
                b'"' => break,
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
        self.at += 1;
    }
}

/// `{"timestamp":n}` for the last few timestamps written, kept so that leaves sharing a
/// timestamp format it once. A section written by a few updates has a few timestamps, which
/// alternate in document order.
struct TimestampLeaf {
    slots: [(i64, usize, [u8; TIMESTAMP_LEAF_MAX]); TIMESTAMP_SLOTS],
    used: usize,
}

/// How many formatted timestamps [`TimestampLeaf`] keeps.
const TIMESTAMP_SLOTS: usize = 4;

impl Default for TimestampLeaf {
    fn default() -> Self {
        TimestampLeaf {
            slots: [(0, 0, [0; TIMESTAMP_LEAF_MAX]); TIMESTAMP_SLOTS],
            used: 0,
        }
    }
}

impl TimestampLeaf {
    fn write(&mut self, out: &mut Vec<u8>, timestamp: i64) {
        let filled = self.used.min(TIMESTAMP_SLOTS);
        let slot = match self.slots[..filled]
            .iter()
            .position(|(cached, _, _)| *cached == timestamp)
        {
            Some(slot) => slot,
            None => {
                let slot = self.used % TIMESTAMP_SLOTS;
                let (cached, len, bytes) = &mut self.slots[slot];
                *cached = timestamp;
                *len = format_timestamp_leaf(bytes, timestamp);
                self.used += 1;
                slot
            }
        };
        let (_, len, bytes) = &self.slots[slot];
        out.extend_from_slice(&bytes[..*len]);
    }
}

/// Length of `{"timestamp":-9223372036854775808}`, the longest timestamp leaf.
const TIMESTAMP_LEAF_MAX: usize = 34;

/// Formats `{"timestamp":n}` into `buffer` as `serde_json` writes it, and returns its length.
fn format_timestamp_leaf(buffer: &mut [u8; TIMESTAMP_LEAF_MAX], timestamp: i64) -> usize {
    const PREFIX: &[u8] = br#"{"timestamp":"#;
    let mut digits = [0; U64_DIGITS_MAX];
    let digits = format_digits(&mut digits, timestamp.unsigned_abs());
    buffer[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut len = PREFIX.len();
    if timestamp < 0 {
        buffer[len] = b'-';
        len += 1;
    }
    buffer[len..len + digits.len()].copy_from_slice(digits);
    len += digits.len();
    buffer[len] = b'}';
    len + 1
}

/// Number of decimal digits of `u64::MAX`.
const U64_DIGITS_MAX: usize = 20;

/// Writes the decimal digits of `value` at the end of `buffer` and returns them.
fn format_digits(buffer: &mut [u8; U64_DIGITS_MAX], mut value: u64) -> &[u8] {
    let mut start = buffer.len();
    while value >= 100 {
        // The remainder is below 100, so the cast keeps it whole.
        let pair = (value % 100) as usize;
        value /= 100;
        start -= 2;
        buffer[start..start + 2].copy_from_slice(&DIGIT_PAIRS[2 * pair..2 * pair + 2]);
    }
    if value >= 10 {
        // Below 100 as above.
        let pair = value as usize;
        start -= 2;
        buffer[start..start + 2].copy_from_slice(&DIGIT_PAIRS[2 * pair..2 * pair + 2]);
    } else {
        start -= 1;
        // Below 10 here.
        buffer[start] = b'0' + value as u8;
    }
    &buffer[start..]
}

/// The two-digit decimal forms of 0 to 99, one after the other.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Writes the AWS metadata of `value` as if every leaf was written at `timestamp`, as
/// `metadata::render_uniform` renders it.
pub(crate) fn write_uniform_metadata(out: &mut Vec<u8>, value: &Value, timestamp: i64) {
    let mut leaf = [0; TIMESTAMP_LEAF_MAX];
    let len = format_timestamp_leaf(&mut leaf, timestamp);
    write_uniform_value(out, value, &leaf[..len]);
}

/// Writes the AWS metadata of every member of `object`, as [`write_uniform_metadata`] does.
pub(crate) fn write_uniform_map(out: &mut Vec<u8>, object: &Map<String, Value>, timestamp: i64) {
    let mut leaf = [0; TIMESTAMP_LEAF_MAX];
    let len = format_timestamp_leaf(&mut leaf, timestamp);
    write_uniform_members(out, object, &leaf[..len]);
}

/// Writes the metadata of `value` with `leaf`, the formatted `{"timestamp":n}`, at each leaf.
fn write_uniform_value(out: &mut Vec<u8>, value: &Value, leaf: &[u8]) {
    match value {
        Value::Object(object) => write_uniform_members(out, object, leaf),
        Value::Array(elements) => {
            out.push(b'[');
            for (index, element) in elements.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_uniform_value(out, element, leaf);
            }
            out.push(b']');
        }
        _ => out.extend_from_slice(leaf),
    }
}

fn write_uniform_members(out: &mut Vec<u8>, object: &Map<String, Value>, leaf: &[u8]) {
    let mut writer = ObjectWriter::open(out);
    for (key, value) in object {
        write_uniform_value(writer.key(key), value, leaf);
    }
    writer.close();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::shadow::metadata::{self, Metadata};

    fn stored_metadata(state: &Value, stamps: &Stamps) -> Value {
        let mut out = Vec::new();
        write_stored_metadata(&mut out, &state.to_string(), stamps);
        serde_json::from_slice(&out).expect("metadata is JSON")
    }

    #[test]
    fn stored_metadata_matches_rendered_tree() {
        let state = json!({"a": {"b": 1, "c": [1, {"d": null}, [], {}]}, "e": "x\"y"});
        let Value::Object(object) = &state else {
            panic!("literal is an object");
        };
        let mut tree = metadata::stamped_map(object, 5);
        if let Some(Metadata::Object(a)) = tree.get_mut("a") {
            a.insert("c".to_owned(), Metadata::Timestamp(7));
        }
        let stamps = Stamps::from_metadata(object, &tree);
        assert_eq!(
            stored_metadata(&state, &stamps),
            Value::Object(stamps.render(object))
        );
        let mut out = Vec::new();
        write_stored_metadata(&mut out, &state.to_string(), &stamps);
        assert_eq!(
            out,
            serde_json::to_vec(&stamps.render(object)).expect("serializes")
        );
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        for text in [
            "plain",
            "q\"uote",
            "back\\slash",
            "new\nline",
            "\u{1f}",
            "\u{7f}é",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, text);
            assert_eq!(
                out,
                serde_json::to_vec(text).expect("serializes"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn timestamp_leaves_match_serde_json() {
        for timestamp in [0, 7, -1, 10, 99, 100, 1_700_000_000, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_uniform_metadata(&mut out, &Value::Null, timestamp);
            let expected = serde_json::to_vec(&json!({"timestamp": timestamp})).expect("ok");
            assert_eq!(out, expected, "{timestamp}");
        }
    }

    #[test]
    fn escape_check_finds_every_escaped_byte() {
        let plain = "abcdefghijklmnopqrstuvwxyz0123456789é~\u{7f}";
        for position in 0..plain.len() {
            for special in ["\"", "\\\\", "\n", "\u{0}", "\u{1f}"] {
                let mut text = plain.as_bytes().to_vec();
                text.splice(position..position, special.bytes());
                assert!(needs_escape(&text), "{special:?} at {position}");
            }
        }
        assert!(!needs_escape(plain.as_bytes()));
        assert!(!needs_escape(" !#$%&'()*+,-./[]^_`{|}\u{80}".as_bytes()));
    }

    #[test]
    fn integers_match_serde_json() {
        let mut out = Vec::new();
        let mut writer = ObjectWriter::open(&mut out);
        writer.integer("a", u64::MAX);
        writer.integer("b", i64::MIN);
        writer.integer("c", 0_u64);
        writer.integer("d", 1_234_567_i64);
        writer.close();
        let expected = json!({"a": u64::MAX, "b": i64::MIN, "c": 0, "d": 1_234_567});
        assert_eq!(out, serde_json::to_vec(&expected).expect("serializes"));
    }

    #[test]
    fn uniform_metadata_matches_render_uniform() {
        let value = json!({"a": null, "b": [1, [2], {"c": true}], "d": {}});
        let mut out = Vec::new();
        write_uniform_metadata(&mut out, &value, 3);
        let expected = serde_json::to_vec(&metadata::render_uniform(&value, 3)).expect("ok");
        assert_eq!(out, expected);
    }
}
