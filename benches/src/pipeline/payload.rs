//! Request payloads of the pipeline bench: the load-phase creation of each sensor shadow, and
//! the measured sensor reports with a client token that carries the update's sequence number.
//!
//! A measured report is about 200 bytes of `reported` state: the four changing readings of
//! [`sensor::reading_json`] plus pressure, firmware, status, door and location. The payloads
//! are built once, before the measured phase, as a pool of variants. Each update copies one
//! variant and writes its sequence number into the fixed-width token in place.

use crate::recovery::sensor;

/// Prefix of the client tokens of measured updates. The rest of the token is the update's
/// sequence number in [`TOKEN_DIGITS`] decimal digits.
pub const TOKEN_PREFIX: &str = "pl-";

/// Decimal digits of the sequence number in a client token.
pub const TOKEN_DIGITS: usize = 12;

/// The text before a client token's value in compact JSON.
const TOKEN_KEY: &str = r#""clientToken":""#;

/// [`TOKEN_KEY`] followed by [`TOKEN_PREFIX`]: the text before the digits of a measured token.
const TOKEN_NEEDLE: &[u8] = br#""clientToken":"pl-"#;

/// Returns the load-phase payload of sensor `n`: its full reported state and the desired
/// settings. The desired `sampling_interval_s` and `led` are never reported, so every later
/// version of the shadow has a delta.
pub fn creation_payload(n: u64) -> Vec<u8> {
    let desired = sensor::desired_json(n);
    let reported = sensor::full_reported_json(n);
    format!(r#"{{"state":{{"desired":{desired},"reported":{reported}}}}}"#).into_bytes()
}

/// A pool of measured report payloads, each with a token placeholder at a known offset.
pub struct ReportPool {
    variants: Vec<Vec<u8>>,
    /// Offset of the first sequence digit in every variant.
    digits_at: Vec<usize>,
}

impl ReportPool {
    /// Builds `variants` distinct reports.
    pub fn new(variants: usize) -> Self {
        let mut pool = ReportPool {
            variants: Vec::with_capacity(variants),
            digits_at: Vec::with_capacity(variants),
        };
        for v in 0..variants as u64 {
            let bits = sensor::mix(v ^ 0x0EF0_5EED);
            let reading = sensor::reading_json(v, v);
            let reading = reading.trim_start_matches('{').trim_end_matches('}');
            let pressure = 990.0 + (bits % 400) as f64 / 10.0;
            let door = if bits & 1 == 0 { "closed" } else { "open" };
            let (building, floor) = ((bits >> 8) % 12, (bits >> 16) % 9);
            let placeholder = "0".repeat(TOKEN_DIGITS);
            let text = format!(
                r#"{{"state":{{"reported":{{{reading},"pressure":{pressure:.1},"firmware":"2.4.1","status":"ok","door":"{door}","location":"building-{building}/floor-{floor}"}}}},{TOKEN_KEY}{TOKEN_PREFIX}{placeholder}"}}"#
            );
            let digits_at = text.len() - 2 - TOKEN_DIGITS;
            pool.variants.push(text.into_bytes());
            pool.digits_at.push(digits_at);
        }
        pool
    }

    /// Returns the payload of measured update `sequence`: variant `sequence % variants` with
    /// the sequence number as its token.
    pub fn report(&self, sequence: u64) -> Vec<u8> {
        let index = (sequence % self.variants.len() as u64) as usize;
        let mut payload = self.variants[index].clone();
        let start = self.digits_at[index];
        write_digits(&mut payload[start..start + TOKEN_DIGITS], sequence);
        payload
    }
}

/// Writes `value` as fixed-width decimal digits into `digits`, keeping the lowest digits.
fn write_digits(digits: &mut [u8], mut value: u64) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Returns the sequence number in the client token of a response document, or `None` when
/// the document has no token of a measured update.
///
/// Response documents have their keys in sorted order, so `clientToken` comes first and the
/// search from the start ends early.
pub fn token_sequence(document: &[u8]) -> Option<u64> {
    let start = document
        .windows(TOKEN_NEEDLE.len())
        .position(|window| window == TOKEN_NEEDLE)?
        + TOKEN_NEEDLE.len();
    let digits = document.get(start..start + TOKEN_DIGITS)?;
    digits.iter().try_fold(0_u64, |value, digit| {
        digit
            .is_ascii_digit()
            .then(|| value * 10 + u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_valid_json_with_token() {
        let pool = ReportPool::new(3);
        let payload = pool.report(1_234_567);
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("valid JSON");
        assert_eq!(value["clientToken"], "pl-000001234567");
        let state = value["state"]["reported"].to_string();
        assert!((150..=240).contains(&state.len()), "{state}");
    }

    #[test]
    fn token_sequence_reads_back_report_token() {
        let pool = ReportPool::new(2);
        for sequence in [0, 7, 999_999_999_999] {
            assert_eq!(token_sequence(&pool.report(sequence)), Some(sequence));
        }
        assert_eq!(token_sequence(br#"{"clientToken":"other"}"#), None);
        assert_eq!(token_sequence(br#"{"clientToken":"pl-12x"}"#), None);
    }

    #[test]
    fn needle_is_key_and_prefix() {
        assert_eq!(
            TOKEN_NEEDLE,
            format!("{TOKEN_KEY}{TOKEN_PREFIX}").as_bytes()
        );
    }

    #[test]
    fn creation_payload_has_desired_and_reported() {
        let value: serde_json::Value =
            serde_json::from_slice(&creation_payload(5)).expect("valid JSON");
        assert!(value["state"]["desired"]["led"].is_string());
        assert!(value["state"]["reported"]["temperature"].is_number());
    }
}
