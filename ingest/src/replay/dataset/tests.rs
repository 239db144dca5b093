use serde_json::json;

use super::*;

const BEIJING_HEADER: &str = r#""No","year","month","day","hour","PM2.5","PM10","SO2","NO2","CO","O3","TEMP","PRES","DEWP","RAIN","wd","WSPM","station""#;

const CHICAGO_HEADER: &str = "Beach Name,Measurement Timestamp,Water Temperature,Turbidity,\
Transducer Depth,Wave Height,Wave Period,Battery Life,Measurement Timestamp Label,Measurement ID";

const OCCUPANCY_HEADER: &str = "Date,Time,S1_Temp,S2_Temp,S3_Temp,S4_Temp,S1_Light,S2_Light,\
S3_Light,S4_Light,S1_Sound,S2_Sound,S3_Sound,S4_Sound,S5_CO2,S5_CO2_Slope,S6_PIR,S7_PIR,\
Room_Occupancy_Count";

/// Parses `header` and `rows` as CSV and maps each row with the data set's mapper.
fn map_rows(
    dataset: Dataset,
    header: &str,
    rows: &[&str],
) -> Vec<Result<Vec<ThingUpdate>, SkipReason>> {
    let text = format!("{header}\n{}\n", rows.join("\n"));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().expect("test header parses").clone();
    let mapper = dataset
        .row_mapper(&headers)
        .expect("test header has every column");
    reader
        .records()
        .map(|record| mapper.map_row(&record.expect("test row parses")))
        .collect()
}

/// Maps a single row that must yield updates.
fn map_one(dataset: Dataset, header: &str, row: &str) -> Vec<ThingUpdate> {
    let mut results = map_rows(dataset, header, &[row]);
    assert_eq!(results.len(), 1);
    results.remove(0).expect("row maps to updates")
}

fn reported(value: serde_json::Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

#[test]
fn dataset_names_parse_and_display() {
    for dataset in Dataset::ALL {
        assert_eq!(dataset.name().parse::<Dataset>(), Ok(dataset));
        assert_eq!(dataset.to_string(), dataset.name());
    }
    assert_eq!("Beijing".parse::<Dataset>(), Ok(Dataset::Beijing));
    assert_eq!(
        "intel".parse::<Dataset>(),
        Err(ConfigError::UnknownDataset {
            name: "intel".to_owned()
        })
    );
}

#[test]
fn thing_names_are_sanitised() {
    assert_eq!(sanitize_thing_name("63rd Street"), "63rd-Street");
    assert_eq!(
        sanitize_thing_name(" Ohio Street Beach "),
        "Ohio-Street-Beach"
    );
    assert_eq!(sanitize_thing_name("a/b+c#d"), "a-b-c-d");
    assert_eq!(sanitize_thing_name("Dongsi"), "Dongsi");
    assert_eq!(sanitize_thing_name("node:1_x-y"), "node:1_x-y");
    assert_eq!(
        sanitize_thing_name("Café"),
        "Caf-",
        "one dash per character, not per byte"
    );
}

#[test]
fn beijing_row_nests_wind() {
    let updates = map_one(
        Dataset::Beijing,
        BEIJING_HEADER,
        r#"1,2013,3,1,0,9,9,3,17,300,89,-0.5,1024.5,-21.4,0,"NNW",5.7,"Dongsi""#,
    );
    let expected = reported(json!({
        "pm25": 9, "pm10": 9, "so2": 3, "no2": 17, "co": 300, "o3": 89,
        "temp": -0.5, "pres": 1024.5, "dewp": -21.4, "rain": 0,
        "wind": {"dir": "NNW", "speed": 5.7},
        "observed_at": "2013-03-01T00:00:00+08:00",
    }));
    assert_eq!(
        updates,
        vec![ThingUpdate {
            thing_name: "Dongsi".to_owned(),
            reported: expected
        }]
    );
}

#[test]
fn beijing_na_values_are_left_out() {
    let updates = map_one(
        Dataset::Beijing,
        BEIJING_HEADER,
        r#"2,2014,12,31,23,NA,12,NA,NA,NA,NA,1.5,NA,NA,NA,NA,2.2,"Wanliu""#,
    );
    let expected = reported(json!({
        "pm10": 12, "temp": 1.5,
        "wind": {"speed": 2.2},
        "observed_at": "2014-12-31T23:00:00+08:00",
    }));
    assert_eq!(updates[0].reported, expected);
}

#[test]
fn beijing_wind_without_values_is_dropped() {
    let updates = map_one(
        Dataset::Beijing,
        BEIJING_HEADER,
        r#"3,2015,6,1,5,20,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,"Tiantan""#,
    );
    assert!(!updates[0].reported.contains_key("wind"));
    assert_eq!(updates[0].reported.get("pm25"), Some(&json!(20)));
}

#[test]
fn beijing_row_without_values_is_skipped() {
    let results = map_rows(
        Dataset::Beijing,
        BEIJING_HEADER,
        &[r#"4,2015,6,1,5,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,"Tiantan""#],
    );
    assert_eq!(results, vec![Err(SkipReason::NoMeasurement)]);
}

#[test]
fn beijing_bad_number_skips_row() {
    let results = map_rows(
        Dataset::Beijing,
        BEIJING_HEADER,
        &[
            r#"5,2015,6,1,5,12x,9,3,17,300,89,1,1000,1,0,"N",1,"Tiantan""#,
            r#"6,2015,6,1,5,12,9,3,17,300,89,1,1000,1,0,"N",NaN,"Tiantan""#,
        ],
    );
    assert_eq!(
        results[0],
        Err(SkipReason::InvalidNumber { column: "PM2.5" })
    );
    assert_eq!(
        results[1],
        Err(SkipReason::InvalidNumber { column: "WSPM" })
    );
}

#[test]
fn beijing_bad_time_skips_row() {
    let results = map_rows(
        Dataset::Beijing,
        BEIJING_HEADER,
        &[
            r#"7,2015,2,29,5,12,9,3,17,300,89,1,1000,1,0,"N",1,"Tiantan""#,
            r#"8,2015,2,28,24,12,9,3,17,300,89,1,1000,1,0,"N",1,"Tiantan""#,
            r#"9,2015,2,NA,1,12,9,3,17,300,89,1,1000,1,0,"N",1,"Tiantan""#,
            r#"10,2015,2,1.5,1,12,9,3,17,300,89,1,1000,1,0,"N",1,"Tiantan""#,
            r#"11,2015,2,1,1,12,9,3,17,300,89,1,1000,1,0,"N",1,NA"#,
        ],
    );
    assert_eq!(
        results[0],
        Err(SkipReason::InvalidTimestamp { column: "day" })
    );
    assert_eq!(
        results[1],
        Err(SkipReason::InvalidTimestamp { column: "hour" })
    );
    assert_eq!(results[2], Err(SkipReason::MissingValue { column: "day" }));
    assert_eq!(
        results[3],
        Err(SkipReason::InvalidTimestamp { column: "day" })
    );
    assert_eq!(
        results[4],
        Err(SkipReason::MissingValue { column: "station" })
    );
}

#[test]
fn beijing_header_may_be_reordered() {
    let header = r#""station","wd","WSPM","hour","day","month","year","PM2.5","PM10","SO2","NO2","CO","O3","TEMP","PRES","DEWP","RAIN""#;
    let updates = map_one(
        Dataset::Beijing,
        header,
        r#""Dongsi","E",1.5,7,2,3,2016,1,NA,NA,NA,NA,NA,NA,NA,NA,NA"#,
    );
    let expected = reported(json!({
        "pm25": 1,
        "wind": {"dir": "E", "speed": 1.5},
        "observed_at": "2016-03-02T07:00:00+08:00",
    }));
    assert_eq!(updates[0].reported, expected);
}

#[test]
fn chicago_row_maps_with_cdt_offset() {
    let updates = map_one(
        Dataset::Chicago,
        CHICAGO_HEADER,
        "Montrose Beach,08/30/2013 08:00:00 AM,20.3,1.18,0.891,0.08,3,9.4,8/30/2013 8:00 AM,MontroseBeach201308300800",
    );
    let expected = reported(json!({
        "water_temperature": 20.3, "turbidity": 1.18, "transducer_depth": 0.891,
        "wave_height": 0.08, "wave_period": 3, "battery_life": 9.4,
        "observed_at": "2013-08-30T08:00:00-05:00",
        "measurement_id": "MontroseBeach201308300800",
    }));
    assert_eq!(
        updates,
        vec![ThingUpdate {
            thing_name: "Montrose-Beach".to_owned(),
            reported: expected
        }]
    );
}

#[test]
fn chicago_pm_and_empty_depth() {
    let updates = map_one(
        Dataset::Chicago,
        CHICAGO_HEADER,
        "63rd Street Beach,12/01/2016 12:30:00 PM,14.4,1.23,,0.111,4,12.4,12/1/2016 12:30 PM,63rdStreetBeach201612011230",
    );
    assert_eq!(updates[0].thing_name, "63rd-Street-Beach");
    assert!(!updates[0].reported.contains_key("transducer_depth"));
    assert_eq!(
        updates[0].reported.get("observed_at"),
        Some(&json!("2016-12-01T12:30:00-06:00"))
    );
}

#[test]
fn chicago_midnight_is_hour_zero() {
    let updates = map_one(
        Dataset::Chicago,
        CHICAGO_HEADER,
        "Calumet Beach,06/02/2015 12:00:00 AM,15,1,,,,11,6/2/2015 12:00 AM,CalumetBeach201506020000",
    );
    assert_eq!(
        updates[0].reported.get("observed_at"),
        Some(&json!("2015-06-02T00:00:00-05:00"))
    );
}

#[test]
fn chicago_row_with_only_ids_is_skipped() {
    let results = map_rows(
        Dataset::Chicago,
        CHICAGO_HEADER,
        &["Montrose Beach,,,,,,,,,MontroseBeach"],
    );
    assert_eq!(results, vec![Err(SkipReason::NoMeasurement)]);
}

#[test]
fn chicago_bad_fields_skip_row() {
    let results = map_rows(
        Dataset::Chicago,
        CHICAGO_HEADER,
        &[
            "Rainbow Beach,06/02/2015 01:00:00 PM,warm,1,,,,11,x,RainbowBeach201506021300",
            "Rainbow Beach,06/31/2015 01:00:00 PM,15,1,,,,11,x,RainbowBeach201506311300",
            "Rainbow Beach,06/02/2015 13:00:00 PM,15,1,,,,11,x,RainbowBeach201506021300",
            "Rainbow Beach,,15,1,,,,11,x,RainbowBeach",
            ",06/02/2015 01:00:00 PM,15,1,,,,11,x,Beach201506021300",
        ],
    );
    assert_eq!(
        results[0],
        Err(SkipReason::InvalidNumber {
            column: "Water Temperature"
        })
    );
    assert_eq!(
        results[1],
        Err(SkipReason::InvalidTimestamp {
            column: "Measurement Timestamp"
        })
    );
    assert_eq!(
        results[2],
        Err(SkipReason::InvalidTimestamp {
            column: "Measurement Timestamp"
        })
    );
    assert_eq!(
        results[3],
        Err(SkipReason::MissingValue {
            column: "Measurement Timestamp"
        })
    );
    assert_eq!(
        results[4],
        Err(SkipReason::MissingValue {
            column: "Beach Name"
        })
    );
}

#[test]
fn occupancy_row_splits_into_seven_things() {
    let updates = map_one(
        Dataset::Occupancy,
        OCCUPANCY_HEADER,
        "2017-12-22,10:49:41,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,0.769230769,0,1,1",
    );
    let names: Vec<&str> = updates
        .iter()
        .map(|update| update.thing_name.as_str())
        .collect();
    assert_eq!(names, ["S1", "S2", "S3", "S4", "S5", "S6", "S7"]);

    let at = "2017-12-22T10:49:41";
    let expected = [
        json!({"temperature": 24.94, "light": 121, "sound": 0.08, "observed_at": at}),
        json!({"temperature": 24.75, "light": 34, "sound": 0.19, "observed_at": at}),
        json!({"temperature": 24.56, "light": 53, "sound": 0.06, "observed_at": at}),
        json!({"temperature": 25.38, "light": 40, "sound": 0.06, "observed_at": at}),
        json!({"co2": 390, "co2_slope": 0.769230769, "observed_at": at}),
        json!({"pir": 0, "observed_at": at}),
        json!({"pir": 1, "observed_at": at}),
    ];
    for (update, expected) in updates.iter().zip(expected) {
        assert_eq!(
            update.reported,
            reported(expected),
            "thing {}",
            update.thing_name
        );
    }
}

#[test]
fn occupancy_ground_truth_is_not_reported() {
    let updates = map_one(
        Dataset::Occupancy,
        OCCUPANCY_HEADER,
        "2017-12-22,10:49:41,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,0.769230769,0,1,3",
    );
    for update in &updates {
        let has_count = update.reported.values().any(|value| value == &json!(3));
        assert!(
            !has_count,
            "thing {} reports the occupancy count",
            update.thing_name
        );
    }
}

#[test]
fn occupancy_node_without_values_is_left_out() {
    let updates = map_one(
        Dataset::Occupancy,
        OCCUPANCY_HEADER,
        "2017-12-22,14:40:28,26,26.25,,26.38,17,21,,58,0.07,0.05,,0.07,830,-5.738461538,0,0,0",
    );
    let names: Vec<&str> = updates
        .iter()
        .map(|update| update.thing_name.as_str())
        .collect();
    assert_eq!(names, ["S1", "S2", "S4", "S5", "S6", "S7"]);
}

#[test]
fn occupancy_partial_node_keeps_present_values() {
    let updates = map_one(
        Dataset::Occupancy,
        OCCUPANCY_HEADER,
        "2017-12-22,10:54:47,25.06,24.81,24.56,25.44,122,35,,43,2.2,0.31,0.33,0.21,390,-0.276923077,1,1,1",
    );
    let s3 = &updates[2];
    assert_eq!(s3.thing_name, "S3");
    assert_eq!(
        s3.reported,
        reported(
            json!({"temperature": 24.56, "sound": 0.33, "observed_at": "2017-12-22T10:54:47"})
        )
    );
}

#[test]
fn occupancy_bad_fields_skip_row() {
    let results = map_rows(
        Dataset::Occupancy,
        OCCUPANCY_HEADER,
        &[
            "2017-12-22,10:49:41,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,inf,0,1,1",
            "2017-12-32,10:49:41,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,1,0,1,1",
            "2017-12-22,10:61:41,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,1,0,1,1",
            "2017-12-22,,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,1,0,1,1",
            "2017-12-22,10:49:41,,,,,,,,,,,,,,,,,1",
        ],
    );
    assert_eq!(
        results[0],
        Err(SkipReason::InvalidNumber {
            column: "S5_CO2_Slope"
        })
    );
    assert_eq!(
        results[1],
        Err(SkipReason::InvalidTimestamp { column: "Date" })
    );
    assert_eq!(
        results[2],
        Err(SkipReason::InvalidTimestamp { column: "Time" })
    );
    assert_eq!(results[3], Err(SkipReason::MissingValue { column: "Time" }));
    assert_eq!(results[4], Err(SkipReason::NoMeasurement));
}

#[test]
fn missing_column_is_named() {
    let headers = StringRecord::from(vec!["Date", "Time", "S1_Temp"]);
    let error = Dataset::Occupancy
        .row_mapper(&headers)
        .expect_err("columns are missing");
    assert_eq!(error, "S1_Light");

    let beijing_headers = StringRecord::from(vec!["Beach Name", "Measurement Timestamp"]);
    let error = Dataset::Beijing
        .row_mapper(&beijing_headers)
        .expect_err("wrong data set");
    assert_eq!(error, "station");
}

#[test]
fn header_with_byte_order_mark_is_found() {
    let header = format!("\u{feff}{OCCUPANCY_HEADER}");
    let row =
        "2017-12-22,10:49:41,24.94,24.75,24.56,25.38,121,34,53,40,0.08,0.19,0.06,0.06,390,1,0,1,1";
    let updates = map_one(Dataset::Occupancy, &header, row);
    assert_eq!(updates.len(), 7);
}

#[test]
fn skip_reasons_display_the_column() {
    assert_eq!(SkipReason::NoMeasurement.to_string(), "no measured value");
    assert_eq!(
        SkipReason::InvalidNumber { column: "PM2.5" }.to_string(),
        "invalid number in column PM2.5"
    );
    assert_eq!(
        SkipReason::MissingValue { column: "Time" }.to_string(),
        "missing value in column Time"
    );
}

#[test]
fn overlong_thing_name_skips_row() {
    let longest = "B".repeat(MAX_THING_NAME_LENGTH);
    let too_long = "B".repeat(MAX_THING_NAME_LENGTH + 1);
    let row = |name: &str| format!("{name},06/02/2015 01:00:00 PM,15,1,,,,11,x,id");
    let results = map_rows(
        Dataset::Chicago,
        CHICAGO_HEADER,
        &[&row(&longest), &row(&too_long)],
    );

    let updates = results[0]
        .as_ref()
        .expect("a 128-character name is allowed");
    assert_eq!(updates[0].thing_name, longest);
    assert_eq!(results[1], Err(SkipReason::ThingNameTooLong));
}

#[test]
fn integers_and_floats_keep_their_json_type() {
    assert_eq!(parse_number("300"), Some(Number::from(300)));
    assert_eq!(parse_number("-7"), Some(Number::from(-7)));
    assert_eq!(parse_number("0.769230769"), Number::from_f64(0.769230769));
    assert_eq!(parse_number("1e3"), Number::from_f64(1000.0));
    assert_eq!(parse_number("1e400"), None, "infinite after parsing");
    assert_eq!(parse_number("NaN"), None);
    assert_eq!(parse_number("12x"), None);
}
