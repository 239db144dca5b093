//! Reading the compact JSON text of a stored section without building values.
//!
//! A stored section or delta keeps the text that `serde_json` wrote for a state object: no
//! whitespace, keys in sorted order, and each key appearing once. Merges and deltas walk that
//! text member by member with [`Members`], copy the members they keep as they are, and parse
//! only the values they must compare. Because `serde_json` writes a parsed value back to the
//! same text, a copied member has the bytes that serializing its parsed value would give.
//!
//! The text is trusted: on text that `serde_json` did not write for an object, these functions
//! may panic or return wrong members.

use std::borrow::Cow;

/// One member of a stored object.
pub(crate) struct Member<'t> {
    /// The key as written, with its quotes and escapes.
    pub(crate) raw_key: &'t str,
    /// The key's value, as written.
    pub(crate) value: &'t str,
    /// Whether the key has escapes.
    escaped_key: bool,
}

impl<'t> Member<'t> {
    /// Returns the key without its quotes, unescaped when it has escapes.
    pub(crate) fn key(&self) -> Cow<'t, str> {
        if !self.escaped_key {
            return Cow::Borrowed(&self.raw_key[1..self.raw_key.len() - 1]);
        }
        Cow::Owned(serde_json::from_str(self.raw_key).expect("a stored key is a JSON string"))
    }

    /// Returns true when the value is an object.
    pub(crate) fn is_object(&self) -> bool {
        self.value.starts_with('{')
    }

    /// Appends `"key":value` to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.raw_key.as_bytes());
        out.push(b':');
        out.extend_from_slice(self.value.as_bytes());
    }
}

/// Iterates over the members of a stored object, in the order of the text.
pub(crate) struct Members<'t> {
    text: &'t str,
    at: usize,
}

impl<'t> Members<'t> {
    /// Starts at the members of `object`, the text of a JSON object.
    pub(crate) fn new(object: &'t str) -> Self {
        Members {
            text: object,
            at: 1,
        }
    }
}

impl<'t> Iterator for Members<'t> {
    type Item = Member<'t>;

    fn next(&mut self) -> Option<Member<'t>> {
        let bytes = self.text.as_bytes();
        match bytes.get(self.at) {
            Some(b',') => self.at += 1,
            Some(b'"') => {}
            _ => return None,
        }
        let key_start = self.at;
        let (key_end, escaped_key) = skip_string(bytes, key_start);
        let value_start = key_end + 1;
        let value_end = skip_value(bytes, value_start);
        self.at = value_end;
        Some(Member {
            raw_key: &self.text[key_start..key_end],
            value: &self.text[value_start..value_end],
            escaped_key,
        })
    }
}

/// Counts the leaves of a stored value: 1 for a scalar or an array, the sum over its members
/// for an object.
pub(crate) fn leaf_count(value: &str) -> usize {
    if !value.starts_with('{') {
        return 1;
    }
    Members::new(value)
        .map(|member| leaf_count(member.value))
        .sum()
}

/// Returns the position just after the string that starts at `start`, and whether the string
/// has escapes.
fn skip_string(bytes: &[u8], start: usize) -> (usize, bool) {
    let mut at = start + 1;
    let mut escaped = false;
    loop {
        match bytes[at] {
            b'"' => return (at + 1, escaped),
            b'\\' => {
                escaped = true;
                at += 2;
            }
            _ => at += 1,
        }
    }
}

/// Returns the position just after the value that starts at `start`.
fn skip_value(bytes: &[u8], start: usize) -> usize {
    match bytes[start] {
        b'"' => skip_string(bytes, start).0,
        b'{' | b'[' => {
            let mut depth = 0_usize;
            let mut at = start;
            loop {
                match bytes[at] {
                    b'"' => {
                        at = skip_string(bytes, at).0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return at + 1;
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let mut at = start;
            while !matches!(bytes.get(at), None | Some(b',' | b'}' | b']')) {
                at += 1;
            }
            at
        }
    }
}
