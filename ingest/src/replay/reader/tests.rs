use std::collections::BTreeMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use super::*;
use crate::replay::tests::raw_datasets_dir;

const OCCUPANCY_CSV: &str = "Date,Time,S1_Temp,S2_Temp,S3_Temp,S4_Temp,S1_Light,S2_Light,\
S3_Light,S4_Light,S1_Sound,S2_Sound,S3_Sound,S4_Sound,S5_CO2,S5_CO2_Slope,S6_PIR,S7_PIR,\
Room_Occupancy_Count
2017-12-22,10:49:41,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,0.769230769,0,0,1
2017-12-22,10:50:12,24.94,24.75,24.56,25.44,121,33,53,40,0.93,0.05,0.06,0.06,390,0.646153846,0,0,1
2017-12-22,10:50:42,25,24.75,24.5,25.44,121,34,53,40,0.43,0.11,0.08,0.06,390,0.519230769,0,0,1
";

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder
        .write_all(text.as_bytes())
        .expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

fn read_all(paths: &[PathBuf], dataset: Dataset) -> Vec<ReplayRow> {
    DatasetReader::open(paths, dataset)
        .expect("input opens")
        .collect::<Result<_, _>>()
        .expect("input reads without I/O errors")
}

#[test]
fn plain_and_gzip_files_read_alike() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let plain = dir.path().join("plain.csv");
    let gzipped = dir.path().join("gzipped.csv.gz");
    let misnamed = dir.path().join("gzipped-without-extension.csv");
    std::fs::write(&plain, OCCUPANCY_CSV).expect("write plain file");
    std::fs::write(&gzipped, gzip(OCCUPANCY_CSV)).expect("write gzip file");
    std::fs::write(&misnamed, gzip(OCCUPANCY_CSV)).expect("write gzip file");

    let expected: Vec<_> = read_all(std::slice::from_ref(&plain), Dataset::Occupancy)
        .into_iter()
        .map(|row| (row.line, row.outcome))
        .collect();
    assert_eq!(expected.len(), 3);
    for path in [gzipped, misnamed] {
        let rows: Vec<_> = read_all(std::slice::from_ref(&path), Dataset::Occupancy)
            .into_iter()
            .map(|row| (row.line, row.outcome))
            .collect();
        assert_eq!(rows, expected, "file {}", path.display());
    }
}

#[test]
fn crlf_file_reports_record_lines() {
    let text = OCCUPANCY_CSV.replace('\n', "\r\n");
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("crlf.csv");
    std::fs::write(&path, text.trim_end()).expect("write file");

    let rows = read_all(&[path], Dataset::Occupancy);
    let lines: Vec<u64> = rows.iter().map(|row| row.line).collect();
    assert_eq!(lines, [2, 3, 4]);
}

#[test]
fn crlf_last_field_has_no_carriage_return() {
    let text = "Beach Name,Measurement Timestamp,Water Temperature,Turbidity,Transducer Depth,\
Wave Height,Wave Period,Battery Life,Measurement Timestamp Label,Measurement ID\r\n\
Rainbow Beach,06/02/2015 01:00:00 PM,15,1,,,,11,6/2/2015 1:00 PM,\"RainbowBeach201506021300\"\r\n";
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("crlf.csv");
    std::fs::write(&path, text).expect("write file");

    let rows = read_all(&[path], Dataset::Chicago);
    assert_eq!(rows.len(), 1);
    let updates = rows[0].outcome.as_ref().expect("row maps");
    assert_eq!(
        updates[0].reported.get("measurement_id"),
        Some(&json!("RainbowBeach201506021300"))
    );
}

#[test]
fn concatenated_gzip_members_are_read() {
    let (header, body) = OCCUPANCY_CSV.split_once('\n').expect("header line");
    let mut bytes = gzip(&format!("{header}\n"));
    bytes.extend(gzip(body));
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("members.csv.gz");
    std::fs::write(&path, bytes).expect("write gzip file");

    let rows = read_all(&[path], Dataset::Occupancy);
    assert_eq!(rows.len(), 3);
}

#[test]
fn folder_is_expanded_in_name_order() {
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::write(dir.path().join("b.CSV"), OCCUPANCY_CSV).expect("write file");
    std::fs::write(dir.path().join("a.csv.gz"), gzip(OCCUPANCY_CSV)).expect("write file");
    std::fs::write(dir.path().join("notes.txt"), "not data").expect("write file");
    std::fs::create_dir(dir.path().join("nested.csv")).expect("create folder");

    let reader =
        DatasetReader::open(&[dir.path().to_path_buf()], Dataset::Occupancy).expect("folder opens");
    let names: Vec<_> = reader
        .files()
        .iter()
        .map(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["a.csv.gz", "b.CSV"]);

    let row_numbers: Vec<u64> = reader
        .map(|row| row.expect("row reads").row_number)
        .collect();
    assert_eq!(row_numbers, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn empty_folder_is_an_error() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let error = DatasetReader::open(&[dir.path().to_path_buf()], Dataset::Chicago)
        .err()
        .expect("folder has no CSV files");
    assert!(
        matches!(error, ReplayError::NoInputFiles { .. }),
        "got {error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("contains no *.csv or *.csv.gz files")
    );
}

#[test]
fn missing_path_is_an_error() {
    let error = DatasetReader::open(&["/nonexistent/replay-input.csv".into()], Dataset::Chicago)
        .err()
        .expect("path does not exist");
    assert!(matches!(error, ReplayError::Open { .. }), "got {error:?}");
    assert_eq!(
        error.to_string(),
        "opening input /nonexistent/replay-input.csv"
    );
}

#[test]
fn wrong_dataset_names_file_and_column() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("occupancy.csv");
    std::fs::write(&path, OCCUPANCY_CSV).expect("write file");

    let error = DatasetReader::open(std::slice::from_ref(&path), Dataset::Beijing)
        .err()
        .expect("header lacks Beijing columns");
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "message: {message}"
    );
    assert!(
        message.contains("no column `station`"),
        "message: {message}"
    );
    assert!(message.contains("not a beijing file"), "message: {message}");
}

#[test]
fn malformed_record_is_skipped_with_line() {
    let text = format!("{OCCUPANCY_CSV}2017-12-22,10:51:13,25\n2017-12-22,10:51:43,\u{0}\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"2017-12-22,10:52:13,\xff\xfe,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1\n");
    bytes.extend_from_slice(OCCUPANCY_CSV.lines().nth(1).expect("data line").as_bytes());
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("broken.csv");
    std::fs::write(&path, bytes).expect("write file");

    let rows = read_all(&[path], Dataset::Occupancy);
    let outcomes: Vec<_> = rows
        .iter()
        .map(|row| (row.line, row.outcome.as_ref().err().copied()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (2, None),
            (3, None),
            (4, None),
            (5, Some(SkipReason::MalformedRecord)),
            (6, Some(SkipReason::MalformedRecord)),
            (7, Some(SkipReason::MalformedRecord)),
            (8, None),
        ]
    );
}

#[test]
fn truncated_gzip_is_a_read_error() {
    let bytes = gzip(OCCUPANCY_CSV);
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("truncated.csv.gz");
    std::fs::write(&path, &bytes[..bytes.len() - 20]).expect("write file");

    let results: Vec<_> = DatasetReader::open(std::slice::from_ref(&path), Dataset::Occupancy)
        .expect("header is intact")
        .collect();
    let last = results.last().expect("at least one result");
    assert!(
        matches!(last, Err(ReplayError::Read { .. })),
        "got {last:?}"
    );
}

#[test]
fn limit_stops_after_rows_read() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("occupancy.csv");
    std::fs::write(&path, OCCUPANCY_CSV).expect("write file");

    let reader =
        DatasetReader::open(&[path.clone(), path], Dataset::Occupancy).expect("input opens");
    let rows: Vec<_> = reader
        .with_limit(Some(4))
        .map(|row| row.expect("row reads"))
        .collect();
    let positions: Vec<_> = rows.iter().map(|row| (row.row_number, row.line)).collect();
    assert_eq!(positions, [(1, 2), (2, 3), (3, 4), (4, 2)]);
}

#[test]
fn beijing_real_files_have_all_rows() {
    let dir = raw_datasets_dir().join("beijing-multisite-air-quality");
    let reader = DatasetReader::open(&[dir], Dataset::Beijing).expect("Beijing files open");
    assert_eq!(reader.files().len(), 12);

    let mut rows_per_station: BTreeMap<String, u64> = BTreeMap::new();
    let mut skipped = 0;
    for row in reader {
        match row.expect("row reads").outcome {
            Ok(updates) => {
                *rows_per_station
                    .entry(updates[0].thing_name.clone())
                    .or_default() += 1
            }
            Err(_) => skipped += 1,
        }
    }
    assert_eq!(skipped, 0);
    assert_eq!(rows_per_station.values().sum::<u64>(), 420_768);
    assert_eq!(rows_per_station.len(), 12);
    for (station, rows) in &rows_per_station {
        assert_eq!(*rows, 35_064, "station {station}");
    }
}

#[test]
fn beijing_last_dongsi_row_maps() {
    let path = raw_datasets_dir()
        .join("beijing-multisite-air-quality/PRSA_Data_Dongsi_20130301-20170228.csv.gz");
    let last = read_all(&[path], Dataset::Beijing)
        .pop()
        .expect("file has rows");

    // Expected from the file's last line (zcat | tail -1):
    // 35064,2017,2,28,23,30,71,11,87,1200,4,8.6,1014.1,-15.9,0,"NNE",1.3,"Dongsi"
    assert_eq!(last.row_number, 35_064);
    assert_eq!(last.line, 35_065);
    let updates = last.outcome.expect("row maps");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].thing_name, "Dongsi");
    let expected = json!({
        "pm25": 30, "pm10": 71, "so2": 11, "no2": 87, "co": 1200, "o3": 4,
        "temp": 8.6, "pres": 1014.1, "dewp": -15.9, "rain": 0,
        "wind": {"dir": "NNE", "speed": 1.3},
        "observed_at": "2017-02-28T23:00:00+08:00",
    });
    assert_eq!(
        serde_json::Value::Object(updates[0].reported.clone()),
        expected
    );
}

#[test]
fn chicago_real_file_skips_id_only_rows() {
    let dir = raw_datasets_dir().join("chicago-beach-water-sensors");
    let rows = read_all(&[dir], Dataset::Chicago);
    assert_eq!(rows.len(), 34_923);

    let mut updates_per_beach: BTreeMap<String, u64> = BTreeMap::new();
    let mut skipped: Vec<(u64, SkipReason)> = Vec::new();
    for row in &rows {
        match &row.outcome {
            Ok(updates) => {
                *updates_per_beach
                    .entry(updates[0].thing_name.clone())
                    .or_default() += 1
            }
            Err(reason) => skipped.push((row.line, *reason)),
        }
    }
    let expected_skips: Vec<_> = [30543, 30544, 31201, 31311, 31312, 32354]
        .into_iter()
        .map(|line| (line, SkipReason::NoMeasurement))
        .collect();
    assert_eq!(skipped, expected_skips);

    let expected_beaches = BTreeMap::from([
        ("63rd-Street-Beach".to_owned(), 3_419),
        ("Calumet-Beach".to_owned(), 7_569),
        ("Montrose-Beach".to_owned(), 7_268),
        ("Ohio-Street-Beach".to_owned(), 9_342),
        ("Osterman-Beach".to_owned(), 4_022),
        ("Rainbow-Beach".to_owned(), 3_297),
    ]);
    assert_eq!(updates_per_beach, expected_beaches);
}

#[test]
fn occupancy_real_file_splits_rows() {
    let dir = raw_datasets_dir().join("uci-room-occupancy-estimation");
    let rows = read_all(&[dir], Dataset::Occupancy);
    assert_eq!(rows.len(), 10_129);

    let mut updates = 0;
    let mut short_rows = Vec::new();
    for row in &rows {
        let row_updates = row
            .outcome
            .as_ref()
            .expect("every occupancy row has a measurement");
        updates += row_updates.len();
        if row_updates.len() != 7 {
            short_rows.push((row.line, row_updates.len()));
        }
    }
    // Line 396 (2017-12-22 14:40:28) has S3_Temp, S3_Light and S3_Sound all empty, so S3
    // gets no update for that row: 10,129 * 7 - 1 updates.
    assert_eq!(short_rows, [(396, 6)]);
    assert_eq!(updates, 70_902);
}
