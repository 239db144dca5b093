use std::convert::Infallible;
use std::fs;

use proptest::prelude::*;

use super::super::frame::{FRAME_HEADER_BYTES, FrameHeader};
use super::super::header::SegmentHeader;
use super::super::{LogError, LogRecord, SEGMENT_HEADER_BYTES, read_snapshot, write_snapshot};
use super::{read_all, record, segment_id, shadow_at};
use crate::dataflow::ShadowVersion;
use crate::history::{ChangeKind, Origin};
use crate::shadow::ShadowKey;

fn arbitrary_record() -> impl Strategy<Value = LogRecord> {
    let key = ("\\PC{0,20}", proptest::option::of("\\PC{0,20}"));
    let numbers = (
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<bool>(),
        0..3_usize,
    );
    let texts = (
        proptest::option::of("\\PC{0,12}"),
        proptest::option::of("\\PC{0,60}"),
    );
    (key, numbers, texts).prop_map(
        |((thing_name, shadow_name), (lsn, version, accepted_at_ms, delete, origin), texts)| {
            LogRecord {
                lsn,
                key: ShadowKey {
                    thing_name,
                    shadow_name,
                },
                change: if delete {
                    ChangeKind::Delete
                } else {
                    ChangeKind::Update
                },
                version,
                accepted_at_ms,
                origin: [Origin::Mqtt, Origin::Http, Origin::Replay][origin],
                client_token: texts.0,
                request_state: texts.1,
            }
        },
    )
}

/// Returns the bytes of a segment of generation 1, worker 0, sequence 0 with `count` records.
fn segment_bytes(count: u64) -> Vec<u8> {
    let header = SegmentHeader {
        id: segment_id(1, 0, 0),
        first_lsn: 0,
    };
    let mut bytes = header.encode().to_vec();
    for lsn in 0..count {
        record(lsn).encode_frame(&mut bytes).expect("small record");
    }
    bytes
}

proptest! {
    #[test]
    fn any_record_round_trips(original in arbitrary_record()) {
        let mut bytes = Vec::new();
        original.encode_frame(&mut bytes).expect("small record");
        let header = FrameHeader::parse(&bytes).expect("frame header");
        let body = &bytes[FRAME_HEADER_BYTES..];
        prop_assert_eq!(header.body_len as usize, body.len());
        prop_assert!(header.matches(body));
        prop_assert_eq!(LogRecord::decode(body).expect("decodes"), original);
    }

    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = LogRecord::decode(&bytes);
    }

    /// Flipped bytes anywhere in a segment give corruption, a torn tail or an intact prefix,
    /// and never a record that was not written.
    #[test]
    fn damaged_segment_yields_only_written_records(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255_u8), 1..4)
    ) {
        let mut bytes = segment_bytes(12);
        for (index, mask) in &flips {
            let at = index.index(bytes.len());
            bytes[at] ^= mask;
        }
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join(segment_id(1, 0, 0).file_name());
        fs::write(&path, &bytes).expect("write");

        match read_all(&path) {
            Ok((summary, records)) => {
                let written: Vec<_> = (0..records.len() as u64).map(record).collect();
                prop_assert_eq!(&records, &written);
                prop_assert_eq!(summary.next_lsn, records.len() as u64);
            }
            Err(LogError::Corrupt { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// A crash can cut a segment anywhere after its header; what remains is never corruption.
    #[test]
    fn cut_segment_is_never_corrupt(cut in SEGMENT_HEADER_BYTES..2000_usize) {
        let bytes = segment_bytes(12);
        let cut = cut.min(bytes.len());
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join(segment_id(1, 0, 0).file_name());
        fs::write(&path, &bytes[..cut]).expect("write");

        let (summary, records) = read_all(&path).expect("torn at most");
        prop_assert_eq!(summary.good_len + summary.torn.map_or(0, |torn| torn.bytes), cut as u64);
        let written: Vec<_> = (0..records.len() as u64).map(record).collect();
        prop_assert_eq!(records, written);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A damaged snapshot is always rejected: it has no torn tail.
    #[test]
    fn damaged_snapshot_is_rejected(
        index in any::<prop::sample::Index>(),
        mask in 1..=255_u8,
    ) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("worker-0000.snap");
        let version = ShadowVersion::new(shadow_at(2, "on"), 5, Some("t".to_owned()));
        let keys = [ShadowKey::classic("a"), ShadowKey::named("b", "c")];
        let entries = keys.iter().map(|key| (key, Some(version.as_ref()), 1));
        write_snapshot(&path, entries).expect("write");
        let mut bytes = fs::read(&path).expect("read");
        let at = index.index(bytes.len());
        bytes[at] ^= mask;
        fs::write(&path, &bytes).expect("write");

        let result = read_snapshot(&path, |_| Ok::<(), Infallible>(()));
        prop_assert!(matches!(result, Err(LogError::Corrupt { .. })), "{result:?}");
    }
}
