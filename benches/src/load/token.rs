//! Client tokens that carry an update's connection, sequence number and send time.
//!
//! The service copies `clientToken` into `/update/accepted` and `/update/rejected`, so a reply
//! names the update it replies to without any lookup by topic. The token is
//! `{connection}.{sequence}.{sent_at_us}`, where `sent_at_us` counts microseconds since the
//! generator started. The maximum token length, with the largest numbers, is 52 bytes, within the
//! 64-byte `clientToken` limit of AWS IoT.

use std::fmt::Write;

/// The facts a client token carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientToken {
    /// Index of the connection that sent the update.
    pub connection: u32,

    /// Number of the update within its connection, from 0.
    pub sequence: u64,

    /// Send time of the update (the scheduled time in open-loop mode), in microseconds since
    /// the generator's start.
    pub sent_at_us: u64,
}

impl ClientToken {
    /// Appends the token text to `out`.
    pub fn write_to(&self, out: &mut String) {
        write!(
            out,
            "{}.{}.{}",
            self.connection, self.sequence, self.sent_at_us
        )
        .expect("writing to a String cannot fail");
    }

    /// Parses a token written by [`ClientToken::write_to`], or returns `None` for any other
    /// text.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let token = ClientToken {
            connection: parts.next()?.parse().ok()?,
            sequence: parts.next()?.parse().ok()?,
            sent_at_us: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let token = ClientToken {
            connection: 7,
            sequence: 123_456,
            sent_at_us: 35_000_001,
        };
        let mut text = String::new();
        token.write_to(&mut text);
        assert_eq!(text, "7.123456.35000001");
        assert_eq!(ClientToken::parse(&text), Some(token));
    }

    #[test]
    fn longest_token_fits_aws_limit() {
        let token = ClientToken {
            connection: u32::MAX,
            sequence: u64::MAX,
            sent_at_us: u64::MAX,
        };
        let mut text = String::new();
        token.write_to(&mut text);
        assert!(text.len() <= 64, "{text} has {} bytes", text.len());
    }

    #[test]
    fn foreign_tokens_do_not_parse() {
        for text in ["", "replay-42", "1.2", "1.2.3.4", "a.b.c", "1.2.-3"] {
            assert_eq!(ClientToken::parse(text), None, "{text:?}");
        }
    }
}
