use std::collections::BTreeMap;
use std::fs;

use super::super::{LogError, ReplayFrom, remove_segments_covered_by, replay_log, segments};
use super::{
    expect_corrupt, frame_offsets, position, record, replay_all, segment_id, write_segment,
    write_segment_with,
};

fn replay_from(generation: u64, next_lsn: &[(u32, u64)]) -> ReplayFrom {
    ReplayFrom {
        generation,
        next_lsn: next_lsn.iter().copied().collect(),
    }
}

#[test]
fn log_without_checkpoint_replays_in_order() {
    let dir = tempfile::tempdir().expect("temporary folder");
    // Written out of order, so the listing must sort them.
    write_segment(dir.path(), segment_id(2, 0, 0), 0, 2);
    write_segment(dir.path(), segment_id(1, 1, 0), 0, 3);
    write_segment(dir.path(), segment_id(1, 0, 1), 4, 2);
    write_segment(dir.path(), segment_id(1, 0, 0), 0, 4);

    let (report, visited) = replay_all(dir.path(), None).expect("replay");
    let positions: Vec<_> = visited.iter().map(|(position, _)| *position).collect();
    let mut expected: Vec<_> = (0..6).map(|lsn| position(1, 0, lsn)).collect();
    expected.extend((0..3).map(|lsn| position(1, 1, lsn)));
    expected.extend((0..2).map(|lsn| position(2, 0, lsn)));
    assert_eq!(positions, expected);

    assert_eq!(report.segments, 4);
    assert_eq!(report.records_visited, 11);
    assert_eq!(report.records_skipped, 0);
    assert!(report.torn_tails.is_empty());
    assert_eq!(report.max_generation, 2);
    let last = BTreeMap::from([((1, 0), 6), ((1, 1), 3), ((2, 0), 2)]);
    assert_eq!(report.last, last);
}

#[test]
fn missing_folder_replays_nothing() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (report, visited) = replay_all(&dir.path().join("wal"), None).expect("replay");
    assert!(visited.is_empty());
    assert_eq!(report.max_generation, 0);
    assert!(report.last.is_empty());
}

#[test]
fn replay_from_skips_what_the_checkpoint_contains() {
    let dir = tempfile::tempdir().expect("temporary folder");
    write_segment(dir.path(), segment_id(1, 0, 0), 0, 5);
    write_segment(dir.path(), segment_id(2, 0, 0), 0, 4);
    write_segment(dir.path(), segment_id(2, 0, 1), 4, 4);
    write_segment(dir.path(), segment_id(2, 1, 0), 0, 3);
    write_segment(dir.path(), segment_id(3, 0, 0), 0, 2);

    let from = replay_from(2, &[(0, 5)]);
    let (report, visited) = replay_all(dir.path(), Some(&from)).expect("replay");
    let positions: Vec<_> = visited.iter().map(|(position, _)| *position).collect();
    let mut expected: Vec<_> = (5..8).map(|lsn| position(2, 0, lsn)).collect();
    expected.extend((0..3).map(|lsn| position(2, 1, lsn)));
    expected.extend((0..2).map(|lsn| position(3, 0, lsn)));
    assert_eq!(positions, expected);

    assert_eq!(
        report.records_skipped, 5,
        "lsns 0 to 4 of generation 2, worker 0"
    );
    assert_eq!(
        report.max_generation, 3,
        "counts the skipped generation too"
    );
    assert!(
        !report.last.contains_key(&(1, 0)),
        "generation 1 is not read"
    );
    assert_eq!(report.last[&(2, 0)], 8);
}

#[test]
fn checkpoint_past_the_log_end_replays_nothing() {
    let dir = tempfile::tempdir().expect("temporary folder");
    write_segment(dir.path(), segment_id(1, 0, 0), 0, 4);
    let from = replay_from(1, &[(0, 4)]);
    let (report, visited) = replay_all(dir.path(), Some(&from)).expect("replay");
    assert!(visited.is_empty());
    assert_eq!(report.records_skipped, 4);
    assert_eq!(report.last[&(1, 0)], 4);
}

/// Returns records whose version encodes the segment they were written to.
fn marked(segment: u64) -> impl Fn(u64) -> super::LogRecord {
    move |lsn| {
        let mut record = record(lsn);
        record.version = segment * 1000 + lsn;
        record
    }
}

#[test]
fn later_segment_supersedes_an_abandoned_one() {
    let dir = tempfile::tempdir().expect("temporary folder");
    // Segment 0 was abandoned after lsn 6 failed to sync, so lsns 6 to 9 were never
    // acknowledged. Segment 1 is empty: it was abandoned right after it was created. Segment 2
    // continues at lsn 6.
    write_segment_with(dir.path(), segment_id(1, 0, 0), 0, 10, marked(0));
    write_segment_with(dir.path(), segment_id(1, 0, 1), 6, 0, marked(1));
    write_segment_with(dir.path(), segment_id(1, 0, 2), 6, 5, marked(2));

    let (report, visited) = replay_all(dir.path(), None).expect("replay");
    let expected: Vec<_> = (0..6)
        .map(|lsn| (position(1, 0, lsn), lsn))
        .chain((6..11).map(|lsn| (position(1, 0, lsn), 2000 + lsn)))
        .collect();
    assert_eq!(visited, expected);
    assert_eq!(
        report.segments, 2,
        "the empty segment 1 is superseded and not read"
    );
    assert_eq!(report.last[&(1, 0)], 11);
}

#[test]
fn damage_in_a_superseded_part_is_ignored() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let abandoned = write_segment(dir.path(), segment_id(1, 0, 0), 0, 10);
    write_segment(dir.path(), segment_id(1, 0, 1), 7, 2);
    let (offsets, _) = frame_offsets(&abandoned);
    let mut bytes = fs::read(&abandoned).expect("read");
    bytes[offsets[8] as usize + 20] ^= 1;
    fs::write(&abandoned, &bytes).expect("write");

    let (_, visited) = replay_all(dir.path(), None).expect("replay");
    let lsns: Vec<_> = visited.iter().map(|(position, _)| position.lsn).collect();
    assert_eq!(lsns, (0..9).collect::<Vec<_>>());
}

#[test]
fn gap_between_segments_is_corrupt() {
    let dir = tempfile::tempdir().expect("temporary folder");
    write_segment(dir.path(), segment_id(1, 0, 0), 0, 5);
    let later = write_segment(dir.path(), segment_id(1, 0, 1), 7, 2);

    let (path, offset, reason) = expect_corrupt(replay_all(dir.path(), None));
    assert_eq!(path, later);
    assert_eq!(offset, 32, "the first_lsn field of the header");
    assert!(reason.contains("records 5 to 6 are missing"), "{reason}");
}

#[test]
fn log_starting_after_the_checkpoint_is_corrupt() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let first = write_segment(dir.path(), segment_id(2, 0, 3), 10, 2);

    let (path, _, reason) = expect_corrupt(replay_all(dir.path(), None));
    assert_eq!(path, first);
    assert!(reason.contains("records 0 to 9 are missing"), "{reason}");

    let from = replay_from(2, &[(0, 10)]);
    let (_, visited) = replay_all(dir.path(), Some(&from)).expect("covered by the checkpoint");
    assert_eq!(visited.len(), 2);
}

#[test]
fn torn_tails_are_cut_and_torn_segments_removed() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let torn = write_segment(dir.path(), segment_id(1, 0, 0), 0, 5);
    let (offsets, len) = frame_offsets(&torn);
    let bytes = fs::read(&torn).expect("read");
    fs::write(&torn, &bytes[..len as usize - 5]).expect("tear the last frame");
    // The crash came while the next segment was being created.
    let empty = dir.path().join(segment_id(1, 0, 1).file_name());
    fs::write(&empty, b"").expect("empty segment");

    let (report, visited) = replay_all(dir.path(), None).expect("replay");
    assert_eq!(visited.len(), 4);
    assert_eq!(
        report.torn_tails,
        vec![(torn.clone(), offsets[4]), (empty.clone(), 0)]
    );
    assert_eq!(fs::metadata(&torn).expect("metadata").len(), offsets[4]);
    assert!(!empty.exists(), "the torn empty segment is removed");
    assert_eq!(report.last[&(1, 0)], 4);

    // A second replay finds a clean log.
    let (report, visited) = replay_all(dir.path(), None).expect("replay again");
    assert_eq!(visited.len(), 4);
    assert!(report.torn_tails.is_empty());
}

#[test]
fn torn_tail_followed_by_a_gap_is_corrupt() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let torn = write_segment(dir.path(), segment_id(1, 0, 0), 0, 5);
    let bytes = fs::read(&torn).expect("read");
    fs::write(&torn, &bytes[..bytes.len() - 5]).expect("tear lsn 4");
    // The next segment claims lsn 4 was synced, but it is torn: an acknowledged record is lost.
    write_segment(dir.path(), segment_id(1, 0, 1), 5, 1);

    let (_, _, reason) = expect_corrupt(replay_all(dir.path(), None));
    assert!(reason.contains("record 4 is missing"), "{reason}");
}

#[test]
fn visitor_error_stops_replay() {
    let dir = tempfile::tempdir().expect("temporary folder");
    write_segment(dir.path(), segment_id(1, 0, 0), 0, 5);
    let mut visited = 0;
    let result = replay_log(dir.path(), None, |position, _| {
        visited += 1;
        if position.lsn == 2 {
            return Err(format!("cannot apply lsn {}", position.lsn));
        }
        Ok(())
    });
    assert!(matches!(result, Err(LogError::Visit(ref message)) if message == "cannot apply lsn 2"));
    assert_eq!(visited, 3);
    let error = result.expect_err("visitor error");
    assert_eq!(error.to_string(), "cannot apply lsn 2");
}

#[test]
fn listing_ignores_other_files() {
    let dir = tempfile::tempdir().expect("temporary folder");
    write_segment(dir.path(), segment_id(2, 0, 0), 0, 1);
    write_segment(dir.path(), segment_id(1, 3, 10), 0, 1);
    write_segment(dir.path(), segment_id(1, 3, 9), 0, 1);
    fs::write(dir.path().join("notes.txt"), b"x").expect("other file");
    fs::write(dir.path().join("1-3-9.wal"), b"x").expect("other spelling");

    let ids: Vec<_> = segments(dir.path())
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        vec![
            segment_id(1, 3, 9),
            segment_id(1, 3, 10),
            segment_id(2, 0, 0)
        ]
    );
}

#[test]
fn removal_keeps_what_replay_still_needs() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let old = write_segment(dir.path(), segment_id(1, 0, 0), 0, 5);
    let w0_a = write_segment(dir.path(), segment_id(2, 0, 0), 0, 5);
    let w0_b = write_segment(dir.path(), segment_id(2, 0, 1), 5, 5);
    let w0_c = write_segment(dir.path(), segment_id(2, 0, 2), 10, 2);
    let w1_a = write_segment(dir.path(), segment_id(2, 1, 0), 0, 5);
    let w1_b = write_segment(dir.path(), segment_id(2, 1, 1), 5, 5);
    let w2_a = write_segment(dir.path(), segment_id(2, 2, 0), 0, 5);
    let newer = write_segment(dir.path(), segment_id(3, 0, 0), 0, 1);

    let from = replay_from(2, &[(0, 10), (1, 3), (2, 5)]);
    let removed = remove_segments_covered_by(dir.path(), &from).expect("remove");
    assert_eq!(removed, 4);
    assert!(!old.exists(), "older generation");
    assert!(!w0_a.exists(), "all below lsn 10");
    assert!(!w0_b.exists(), "all below lsn 10");
    assert!(w0_c.exists(), "contains lsn 10 on");
    assert!(w1_a.exists(), "lsns 3 and 4 are still needed");
    assert!(w1_b.exists(), "the newest segment holds lsns from 5 on");
    assert!(!w2_a.exists(), "the newest segment, but all below lsn 5");
    assert!(newer.exists(), "newer generation");

    let (report, visited) = replay_all(dir.path(), Some(&from)).expect("replay after removal");
    // Worker 0 replays lsns 10 and 11, worker 1 lsns 3 to 9, worker 2 nothing, and
    // generation 3 its one record.
    assert_eq!(report.records_visited, 10);
    assert_eq!(visited.len(), 10);
}
