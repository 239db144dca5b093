use super::super::frame::{FRAME_HEADER_BYTES, FrameHeader};
use super::super::{DecodeError, LogRecord, MAX_RECORD_BYTES, RecordTooLarge};
use super::record;

/// Splits one frame off the front of `bytes` and decodes it.
fn decode_frame(bytes: &[u8]) -> (LogRecord, &[u8]) {
    let header = FrameHeader::parse(bytes).expect("frame header");
    let end = FRAME_HEADER_BYTES + header.body_len as usize;
    let body = &bytes[FRAME_HEADER_BYTES..end];
    assert!(header.matches(body), "checksum of a fresh frame");
    (
        LogRecord::decode(body).expect("decodable body"),
        &bytes[end..],
    )
}

#[test]
fn record_round_trips_every_field_combination() {
    for lsn in 0..30 {
        let original = record(lsn);
        let mut bytes = Vec::new();
        original.encode_frame(&mut bytes).expect("small record");
        let (decoded, rest) = decode_frame(&bytes);
        assert_eq!(decoded, original, "lsn {lsn}");
        assert!(rest.is_empty(), "lsn {lsn}: one frame only");
    }
}

#[test]
fn record_round_trips_extreme_values() {
    let mut original = record(0);
    original.lsn = u64::MAX;
    original.version = u64::MAX;
    original.accepted_at_ms = i64::MIN;
    original.client_token = Some(String::new());
    original.request_state = Some("null".to_owned());
    original.key.thing_name = "ünïcødé-😀".to_owned();
    let mut bytes = Vec::new();
    original.encode_frame(&mut bytes).expect("small record");
    assert_eq!(decode_frame(&bytes).0, original);
}

#[test]
fn encoding_appends_to_existing_bytes() {
    let mut bytes = b"prefix".to_vec();
    record(1).encode_frame(&mut bytes).expect("small record");
    record(2).encode_frame(&mut bytes).expect("small record");
    assert_eq!(&bytes[..6], b"prefix");
    let (first, rest) = decode_frame(&bytes[6..]);
    let (second, rest) = decode_frame(rest);
    assert_eq!(first, record(1));
    assert_eq!(second, record(2));
    assert!(rest.is_empty());
}

#[test]
fn oversized_record_is_rejected_without_output() {
    let mut large = record(7);
    large.request_state = Some("x".repeat(MAX_RECORD_BYTES));
    let mut bytes = b"kept".to_vec();
    let error = large.encode_frame(&mut bytes).expect_err("too large");
    assert_eq!(bytes, b"kept");
    assert!(error.bytes > MAX_RECORD_BYTES, "{error}");
    assert_eq!(
        error,
        RecordTooLarge {
            lsn: 7,
            bytes: error.bytes,
            max: MAX_RECORD_BYTES,
        }
    );
}

fn encoded_body(record: &LogRecord) -> Vec<u8> {
    let mut bytes = Vec::new();
    record.encode_frame(&mut bytes).expect("small record");
    bytes.split_off(FRAME_HEADER_BYTES)
}

#[test]
fn decode_rejects_every_truncation() {
    let body = encoded_body(&record(6));
    for len in 0..body.len() {
        let result = LogRecord::decode(&body[..len]);
        assert!(
            matches!(result, Err(DecodeError::Truncated { .. })),
            "prefix of {len} bytes: {result:?}"
        );
    }
}

#[test]
fn decode_rejects_trailing_bytes() {
    let mut body = encoded_body(&record(6));
    body.push(0);
    assert_eq!(
        LogRecord::decode(&body),
        Err(DecodeError::TrailingBytes { count: 1 })
    );
}

#[test]
fn decode_rejects_unknown_version_tags_and_flags() {
    let body = encoded_body(&record(6));
    let cases = [
        (0, 2, DecodeError::UnsupportedVersion { version: 2 }),
        (
            1,
            9,
            DecodeError::InvalidTag {
                field: "change",
                value: 9,
            },
        ),
        (
            2,
            3,
            DecodeError::InvalidTag {
                field: "origin",
                value: 3,
            },
        ),
        (
            3,
            0x80 | body[3],
            DecodeError::InvalidTag {
                field: "flags",
                value: 0x80 | body[3],
            },
        ),
    ];
    for (index, value, expected) in cases {
        let mut damaged = body.clone();
        damaged[index] = value;
        assert_eq!(LogRecord::decode(&damaged), Err(expected), "byte {index}");
    }
}

#[test]
fn decode_rejects_invalid_utf8() {
    let mut original = record(1);
    original.key.thing_name = "abc".to_owned();
    let mut body = encoded_body(&original);
    // The thing name starts after the 28 fixed bytes and its 4-byte length.
    body[32] = 0xFF;
    assert_eq!(
        LogRecord::decode(&body),
        Err(DecodeError::InvalidUtf8 {
            field: "thing_name"
        })
    );
}
