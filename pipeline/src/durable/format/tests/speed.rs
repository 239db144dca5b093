//! Timing runs of encoding and reading, ignored by default. Run them with
//! `cargo test --release -p pipeline durable::format::tests::speed -- --ignored --nocapture`.

use std::convert::Infallible;
use std::time::Instant;

use super::super::{LogRecord, SegmentWriter, read_segment, read_snapshot, write_snapshot};
use super::{segment_id, shadow_at};
use crate::dataflow::ShadowVersion;
use crate::history::{ChangeKind, Origin};
use crate::shadow::ShadowKey;

const RECORDS: u64 = 1_000_000;
const SNAPSHOT_ENTRIES: u64 = 1_000_000;

/// Returns a record of typical size: a 20-byte thing name, a token and a small reported state.
fn typical_record(lsn: u64) -> LogRecord {
    LogRecord {
        lsn,
        key: ShadowKey::classic(format!("sensor-{:013}", lsn % 50_000)),
        change: ChangeKind::Update,
        version: lsn + 1,
        accepted_at_ms: 1_700_000_000_000,
        origin: Origin::Mqtt,
        client_token: Some("a1b2c3d4-e5f6".to_owned()),
        request_state: Some(
            r#"{"reported":{"temperature":21.5,"humidity":40,"battery":87,"fw":"1.4.2"}}"#
                .to_owned(),
        ),
    }
}

fn per_second(count: u64, started: Instant) -> f64 {
    count as f64 / started.elapsed().as_secs_f64()
}

#[test]
#[ignore = "timing run"]
fn encode_and_decode_speed() {
    let records: Vec<_> = (0..RECORDS).map(typical_record).collect();

    let started = Instant::now();
    let mut bytes = Vec::with_capacity(1 << 20);
    let mut total = 0;
    for record in &records {
        if bytes.len() > 1 << 20 {
            total += bytes.len();
            bytes.clear();
        }
        record.encode_frame(&mut bytes).expect("small record");
    }
    total += bytes.len();
    eprintln!(
        "encode: {:.0} records/s, {} bytes per record",
        per_second(RECORDS, started),
        total as u64 / RECORDS
    );

    let mut frame = Vec::new();
    records[0].encode_frame(&mut frame).expect("small record");
    let body = &frame[8..];
    let started = Instant::now();
    for _ in 0..RECORDS {
        std::hint::black_box(LogRecord::decode(std::hint::black_box(body)).expect("decodes"));
    }
    eprintln!("decode: {:.0} records/s", per_second(RECORDS, started));
}

#[test]
#[ignore = "timing run"]
fn segment_write_and_read_speed() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut writer = SegmentWriter::create(dir.path(), segment_id(1, 0, 0), 0).expect("create");
    let started = Instant::now();
    for lsn in 0..RECORDS {
        writer.push(&typical_record(lsn));
        if lsn % 1000 == 999 {
            writer.write().expect("write");
        }
    }
    writer.write().expect("write");
    writer.sync().expect("sync");
    eprintln!(
        "segment write (batches of 1000, one sync): {:.0} records/s, {} MB",
        per_second(RECORDS, started),
        writer.len() >> 20
    );

    let started = Instant::now();
    let mut count = 0;
    read_segment(writer.path(), |_| {
        count += 1;
        Ok::<(), Infallible>(())
    })
    .expect("read");
    assert_eq!(count, RECORDS);
    eprintln!(
        "segment read: {:.0} records/s",
        per_second(RECORDS, started)
    );
}

#[test]
#[ignore = "timing run"]
fn snapshot_write_and_read_speed() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("worker-0000.snap");
    // The long desired value brings an entry to about 500 bytes.
    let version = ShadowVersion::new(
        shadow_at(12, &"desired-mode-".repeat(13)),
        1_700_000_000_000,
        Some("a1b2c3d4-e5f6".to_owned()),
    );
    let keys: Vec<_> = (0..SNAPSHOT_ENTRIES)
        .map(|index| ShadowKey::named(format!("sensor-{index:013}"), "config"))
        .collect();

    let started = Instant::now();
    let entries = keys.iter().map(|key| (key, Some(version.as_ref()), 0));
    let stats = write_snapshot(&path, entries).expect("write");
    eprintln!(
        "snapshot write: {:.0} entries/s, {} bytes per entry",
        per_second(SNAPSHOT_ENTRIES, started),
        stats.bytes / SNAPSHOT_ENTRIES
    );

    let started = Instant::now();
    let read = read_snapshot(&path, |entry| {
        std::hint::black_box(entry);
        Ok::<(), Infallible>(())
    })
    .expect("read");
    assert_eq!(read, SNAPSHOT_ENTRIES);
    eprintln!(
        "snapshot read: {:.0} entries/s, {:.1} s for {SNAPSHOT_ENTRIES} entries",
        per_second(SNAPSHOT_ENTRIES, started),
        started.elapsed().as_secs_f64()
    );
}
