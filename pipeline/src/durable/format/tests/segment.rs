use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::super::{
    SEGMENT_HEADER_BYTES, SegmentId, SegmentWriter, TornTail, cut_torn_tail, read_segment,
};
use super::{expect_corrupt, frame_offsets, read_all, record, segment_id, write_segment};

#[test]
fn segment_id_name_round_trips() {
    let id = segment_id(3, 1, 2);
    assert_eq!(id.file_name(), "0000000003-0001-0000000002.wal");
    assert_eq!(SegmentId::parse(&id.file_name()), Some(id));

    let large = segment_id(u64::MAX, u32::MAX, u64::MAX);
    assert_eq!(SegmentId::parse(&large.file_name()), Some(large));
}

#[test]
fn segment_id_rejects_other_names() {
    for name in [
        "3-1-2.wal",
        "0000000003-0001-0000000002.wal.tmp",
        "0000000003-0001-0000000002",
        "0000000003-0001-0000000002-0000000001.wal",
        "0000000003-0001-+000000002.wal",
        "000000000a-0001-0000000002.wal",
        "0000000003--0000000002.wal",
        "MANIFEST",
        "",
    ] {
        assert_eq!(SegmentId::parse(name), None, "{name:?}");
    }
}

#[test]
fn written_records_read_back_in_order() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let id = segment_id(1, 0, 0);
    let mut writer = SegmentWriter::create(dir.path(), id, 10).expect("create");
    for lsn in 10..110 {
        writer.push(&record(lsn));
        if lsn % 30 == 0 {
            writer.write().expect("write");
        }
    }
    writer.write().expect("write");
    writer.sync().expect("sync");
    assert_eq!(writer.next_lsn(), 110);
    assert_eq!(writer.synced_lsn(), 110);
    assert_eq!(writer.pending_bytes(), 0);

    let (summary, records) = read_all(writer.path()).expect("read");
    assert_eq!(summary.id, id);
    assert_eq!(summary.first_lsn, 10);
    assert_eq!(summary.next_lsn, 110);
    assert_eq!(summary.good_len, writer.len());
    assert_eq!(summary.torn, None);
    let expected: Vec<_> = (10..110).map(record).collect();
    assert_eq!(records, expected);
}

#[test]
fn create_fails_when_segment_exists() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let id = segment_id(1, 0, 0);
    let path = write_segment(dir.path(), id, 0, 3);
    let error = SegmentWriter::create(dir.path(), id, 0).expect_err("exists");
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    assert!(error.to_string().contains(&id.file_name()), "{error}");
    assert_eq!(read_all(&path).expect("untouched").1.len(), 3);
}

#[test]
fn header_only_segment_has_no_records() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let writer = SegmentWriter::create(dir.path(), segment_id(1, 2, 3), 42).expect("create");
    assert_eq!(writer.len(), SEGMENT_HEADER_BYTES as u64);

    let (summary, records) = read_all(writer.path()).expect("read");
    assert!(records.is_empty());
    assert_eq!((summary.first_lsn, summary.next_lsn), (42, 42));
    assert_eq!(summary.good_len, SEGMENT_HEADER_BYTES as u64);
    assert_eq!(summary.torn, None);
}

/// Writes `bytes` as the segment file of `id` in `dir`.
fn write_file(dir: &Path, id: SegmentId, bytes: &[u8]) -> PathBuf {
    let path = dir.join(id.file_name());
    fs::write(&path, bytes).expect("write file");
    path
}

#[test]
fn empty_and_short_files_are_torn_at_zero() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let id = segment_id(1, 0, 0);
    for len in [0, 1, SEGMENT_HEADER_BYTES - 1] {
        let path = write_file(dir.path(), id, &vec![7; len]);
        let (summary, records) = read_all(&path).expect("torn, not corrupt");
        assert!(records.is_empty(), "{len} bytes");
        assert_eq!(summary.good_len, 0, "{len} bytes");
        let torn = TornTail {
            offset: 0,
            bytes: len as u64,
        };
        assert_eq!(summary.torn, Some(torn), "{len} bytes");
    }
}

#[test]
fn zeroed_header_is_torn_at_zero() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_file(dir.path(), segment_id(1, 0, 0), &[0; 4096]);
    let (summary, _) = read_all(&path).expect("torn, not corrupt");
    assert_eq!(summary.torn.map(|torn| torn.offset), Some(0));
}

#[test]
fn damaged_header_is_corrupt() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_segment(dir.path(), segment_id(1, 0, 0), 0, 3);
    let mut bytes = fs::read(&path).expect("read");
    for index in [0, 9, 20, 35, 43] {
        let mut damaged = bytes.clone();
        damaged[index] ^= 0x10;
        fs::write(&path, &damaged).expect("write");
        let (error_path, offset, reason) = expect_corrupt(read_all(&path));
        assert_eq!(
            (error_path.as_path(), offset),
            (path.as_path(), 0),
            "{reason}"
        );
    }

    // A valid header of another segment, under this segment's name.
    bytes.truncate(SEGMENT_HEADER_BYTES);
    let other = write_file(dir.path(), segment_id(1, 0, 9), &bytes);
    let (_, offset, reason) = expect_corrupt(read_all(&other));
    assert_eq!(offset, 12);
    assert!(
        reason.contains("0000000001-0000-0000000000.wal"),
        "{reason}"
    );
}

#[test]
fn last_frame_cut_anywhere_is_torn() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let id = segment_id(1, 0, 0);
    let path = write_segment(dir.path(), id, 0, 6);
    let bytes = fs::read(&path).expect("read");
    let (offsets, len) = frame_offsets(&path);
    let last = offsets[5];

    for cut in last + 1..len {
        fs::write(&path, &bytes[..cut as usize]).expect("write prefix");
        let (summary, records) =
            read_all(&path).unwrap_or_else(|error| panic!("cut {cut}: {error}"));
        assert_eq!(records, (0..5).map(record).collect::<Vec<_>>(), "cut {cut}");
        assert_eq!(summary.next_lsn, 5, "cut {cut}");
        assert_eq!(summary.good_len, last, "cut {cut}");
        let torn = TornTail {
            offset: last,
            bytes: cut - last,
        };
        assert_eq!(summary.torn, Some(torn), "cut {cut}");
    }
}

#[test]
fn partial_frame_followed_by_zeros_is_torn() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_segment(dir.path(), segment_id(1, 0, 0), 0, 6);
    let (offsets, len) = frame_offsets(&path);
    let last = offsets[5];
    let bytes = fs::read(&path).expect("read");

    // Half of the last frame survived, and the file system filled the rest of its block with
    // zeros, so the length field points into zeros.
    for zeros in [1, 8, 4096] {
        let mut damaged = bytes[..(last + (len - last) / 2) as usize].to_vec();
        damaged.extend(std::iter::repeat_n(0, zeros));
        fs::write(&path, &damaged).expect("write");
        let (summary, records) = read_all(&path).expect("torn, not corrupt");
        assert_eq!(records.len(), 5, "{zeros} zeros");
        assert_eq!(
            summary.torn.map(|torn| torn.offset),
            Some(last),
            "{zeros} zeros"
        );
    }
}

#[test]
fn zero_filled_tail_is_torn() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_segment(dir.path(), segment_id(1, 0, 0), 0, 6);
    let len = fs::metadata(&path).expect("metadata").len();
    OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(&[0; 5000]))
        .expect("append zeros");

    let (summary, records) = read_all(&path).expect("torn, not corrupt");
    assert_eq!(records.len(), 6);
    let torn = TornTail {
        offset: len,
        bytes: 5000,
    };
    assert_eq!(summary.torn, Some(torn));
}

#[test]
fn bad_checksum_in_last_frame_is_torn() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_segment(dir.path(), segment_id(1, 0, 0), 0, 6);
    let (offsets, _) = frame_offsets(&path);
    let mut bytes = fs::read(&path).expect("read");
    bytes[offsets[5] as usize + 20] ^= 1;
    fs::write(&path, &bytes).expect("write");

    let (summary, records) = read_all(&path).expect("torn, not corrupt");
    assert_eq!(records.len(), 5);
    assert_eq!(summary.torn.map(|torn| torn.offset), Some(offsets[5]));
}

#[test]
fn mid_file_checksum_mismatch_is_corrupt() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_segment(dir.path(), segment_id(3, 1, 2), 0, 10);
    let (offsets, _) = frame_offsets(&path);
    let mut bytes = fs::read(&path).expect("read");
    bytes[offsets[4] as usize + 20] ^= 1;
    fs::write(&path, &bytes).expect("write");

    let mut visited = 0;
    let result = read_segment(&path, |_| {
        visited += 1;
        Ok::<(), std::convert::Infallible>(())
    });
    let error = result.expect_err("corrupt");
    assert_eq!(visited, 4, "records before the damage are visited");
    let message = error.to_string();
    let (error_path, offset, reason) = expect_corrupt(Err::<(), _>(error));
    assert_eq!(error_path, path);
    assert_eq!(offset, offsets[4]);
    assert!(reason.starts_with("checksum mismatch"), "{reason}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("byte {}", offsets[4])),
        "{message}"
    );
    assert!(
        message.contains("Restore the file from a backup"),
        "{message}"
    );
}

#[test]
fn mid_file_length_flip_is_corrupt() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_segment(dir.path(), segment_id(1, 0, 0), 0, 10);
    let (offsets, _) = frame_offsets(&path);
    let mut bytes = fs::read(&path).expect("read");
    // A high bit in the length makes the frame run past the end of the file, like a torn frame.
    bytes[offsets[3] as usize + 2] ^= 0x40;
    fs::write(&path, &bytes).expect("write");

    let (_, offset, reason) = expect_corrupt(read_all(&path));
    assert_eq!(offset, offsets[3]);
    assert!(reason.contains("a valid record follows"), "{reason}");
}

#[test]
fn out_of_order_lsn_is_corrupt() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_segment(dir.path(), segment_id(1, 0, 0), 0, 3);
    let before = fs::metadata(&path).expect("metadata").len();
    let mut frame = Vec::new();
    record(4).encode_frame(&mut frame).expect("small record");
    OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(&frame))
        .expect("append");

    let (_, offset, reason) = expect_corrupt(read_all(&path));
    assert_eq!(offset, before);
    assert_eq!(reason, "record has lsn 4, expected 3");
}

#[test]
fn cut_torn_tail_leaves_a_clean_segment() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = write_segment(dir.path(), segment_id(1, 0, 0), 0, 4);
    let (offsets, _) = frame_offsets(&path);
    let bytes = fs::read(&path).expect("read");
    fs::write(&path, &bytes[..bytes.len() - 3]).expect("tear");

    let (summary, _) = read_all(&path).expect("torn");
    assert_eq!(summary.good_len, offsets[3]);
    cut_torn_tail(&path, summary.good_len).expect("cut");
    let (summary, records) = read_all(&path).expect("clean");
    assert_eq!(summary.torn, None);
    assert_eq!(records.len(), 3);
    assert_eq!(fs::metadata(&path).expect("metadata").len(), offsets[3]);
}

#[test]
fn truncate_to_synced_drops_unsynced_records() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut writer = SegmentWriter::create(dir.path(), segment_id(1, 0, 0), 0).expect("create");
    for lsn in 0..5 {
        writer.push(&record(lsn));
    }
    writer.write().expect("write");
    writer.sync().expect("sync");
    let synced_len = writer.len();
    for lsn in 5..8 {
        writer.push(&record(lsn));
    }
    writer.write().expect("write");
    writer.push(&record(8));
    assert_eq!((writer.next_lsn(), writer.synced_lsn()), (9, 5));

    writer.truncate_to_synced().expect("truncate");
    assert_eq!(writer.next_lsn(), 5);
    assert_eq!(writer.len(), synced_len);
    assert_eq!(writer.pending_bytes(), 0);
    assert_eq!(
        fs::metadata(writer.path()).expect("metadata").len(),
        synced_len
    );

    // The writer continues at the synced lsn, right after the last synced frame.
    for lsn in 5..7 {
        writer.push(&record(lsn));
    }
    writer.write().expect("write");
    writer.sync().expect("sync");
    let (summary, records) = read_all(writer.path()).expect("read");
    assert_eq!(records, (0..7).map(record).collect::<Vec<_>>());
    assert_eq!(summary.torn, None);
}

#[test]
fn failed_write_on_full_device_poisons_writer() {
    // Writes to /dev/full fail with ENOSPC, and a character device cannot be cut back with
    // `set_len`, so this is the path where cutting back fails too.
    let file = OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let id = segment_id(1, 0, 0);
    let mut writer = SegmentWriter::from_file(file, PathBuf::from("/dev/full"), id, 7, 44);
    writer.push(&record(7));
    writer.push(&record(8));

    let error = writer.write().expect_err("device is full");
    assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
    assert!(error.to_string().contains("/dev/full"), "{error}");
    assert!(writer.is_poisoned(), "cutting back failed: {error}");
    assert_eq!(writer.next_lsn(), 7);
    assert_eq!(writer.pending_bytes(), 0);

    // Every later call fails without touching the file.
    writer.push(&record(7));
    for result in [writer.write(), writer.sync(), writer.truncate_to_synced()] {
        let error = result.expect_err("poisoned");
        assert!(
            error.to_string().contains("takes no more writes"),
            "{error}"
        );
    }
}

#[test]
fn oversized_record_fails_the_next_write_only() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut writer = SegmentWriter::create(dir.path(), segment_id(1, 0, 0), 0).expect("create");
    writer.push(&record(0));
    writer.write().expect("write");
    let len = writer.len();

    let mut large = record(1);
    large.request_state = Some("x".repeat(super::super::MAX_RECORD_BYTES));
    writer.push(&large);
    writer.push(&record(2));
    let error = writer.write().expect_err("too large");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("log record 1"), "{error}");
    assert!(!writer.is_poisoned());
    assert_eq!((writer.next_lsn(), writer.len()), (1, len));

    writer.push(&record(1));
    writer.write().expect("write");
    writer.sync().expect("sync");
    assert_eq!(
        read_all(writer.path()).expect("read").1,
        vec![record(0), record(1)]
    );
}
