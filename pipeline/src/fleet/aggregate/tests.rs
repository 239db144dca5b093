use proptest::prelude::*;
use serde_json::json;

use super::*;

fn numbers(values: &[f64]) -> ValueCounts {
    values
        .iter()
        .copied()
        .map(AggregationValue::number)
        .collect()
}

fn strings(values: &[&str]) -> ValueCounts {
    values
        .iter()
        .map(|value| AggregationValue::String((*value).to_owned()))
        .collect()
}

#[test]
fn statistics_reproduce_aws_example() {
    // The AWS developer guide page "Querying for aggregate data" shows count 3, sum 100 and sum
    // of squares 43750 without the values; -125, 75 and 150 give those sums.
    let document =
        Statistics::compute(&numbers(&[-125.0, 75.0, 150.0]), FieldType::Number).to_document();
    assert_eq!(
        document,
        json!({"statistics": {
            "count": 3,
            "average": 33.333333333333336,
            "sum": 100.0,
            "minimum": -125.0,
            "maximum": 150.0,
            "sumOfSquares": 43750.0,
            "variance": 13472.22222222222,
            "stdDeviation": 116.06990230986766
        }})
    );
    assert_eq!(
        serde_json::to_string(&document["statistics"]["sum"]).expect("serializes"),
        "100.0"
    );
}

#[test]
fn string_statistics_have_count_only() {
    let values = strings(&["a", "b", "a"]);
    assert_eq!(
        Statistics::compute(&values, FieldType::String).to_document(),
        json!({"statistics": {"count": 3}})
    );
}

#[test]
fn boolean_statistics_count_true_as_one() {
    let values: ValueCounts = [true, true, false]
        .map(AggregationValue::Bool)
        .into_iter()
        .collect();
    let statistics = Statistics::compute(&values, FieldType::Boolean);
    assert_eq!(statistics.count, 3);
    assert_eq!(statistics.sum, Some(2.0));
    assert_eq!(statistics.minimum, Some(0.0));
    assert_eq!(statistics.maximum, Some(1.0));
    assert_eq!(statistics.average, Some(2.0 / 3.0));

    let all_true: ValueCounts = [true, true]
        .map(AggregationValue::Bool)
        .into_iter()
        .collect();
    let statistics = Statistics::compute(&all_true, FieldType::Boolean);
    assert_eq!(
        (statistics.minimum, statistics.maximum),
        (Some(1.0), Some(1.0))
    );
}

#[test]
fn number_statistics_ignore_other_types() {
    let mut values = numbers(&[1.0, 3.0]);
    values.insert(AggregationValue::String("7".to_owned()));
    values.insert(AggregationValue::Bool(true));
    let statistics = Statistics::compute(&values, FieldType::Number);
    assert_eq!(statistics.count, 2);
    assert_eq!(statistics.average, Some(2.0));
}

#[test]
fn empty_or_overflowing_statistics_have_count_only() {
    assert_eq!(
        Statistics::compute(&ValueCounts::new(), FieldType::Number).to_document(),
        json!({"statistics": {"count": 0}})
    );
    assert_eq!(
        Statistics::compute(&numbers(&[1e308, 1e308]), FieldType::Number).to_document(),
        json!({"statistics": {"count": 2}})
    );
}

#[test]
fn field_type_infers_from_values() {
    assert_eq!(FieldType::infer(&numbers(&[1.0])), FieldType::Number);
    assert_eq!(
        FieldType::infer(&[AggregationValue::Bool(false)].into_iter().collect()),
        FieldType::Boolean
    );
    assert_eq!(FieldType::infer(&strings(&["x"])), FieldType::String);
    assert_eq!(FieldType::infer(&ValueCounts::new()), FieldType::String);
}

#[test]
fn percentiles_reproduce_aws_example() {
    let values = numbers(&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0]);
    let percents = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0];
    let expected = [1.0, 1.0, 1.4, 2.0, 2.0, 2.0, 2.6, 3.0, 3.0, 3.0];
    let pairs = percentiles(&values, &percents);
    assert_eq!(pairs.len(), percents.len());
    for ((pair, percent), value) in pairs.iter().zip(percents).zip(expected) {
        assert_eq!(pair.percent, percent);
        assert!(
            (pair.value - value).abs() < 1e-9,
            "percentile {percent}: {}",
            pair.value
        );
    }
}

#[test]
fn percentiles_cover_edges() {
    let values = numbers(&[10.0, 20.0, 30.0, 40.0]);
    let pairs = percentiles(&values, &[0.0, 50.0, 100.0, 150.0]);
    let got: Vec<f64> = pairs.iter().map(|pair| pair.value).collect();
    assert_eq!(got, vec![10.0, 25.0, 40.0, 40.0]);

    let single = percentiles(&numbers(&[7.0]), &DEFAULT_PERCENTS);
    assert!(single.iter().all(|pair| pair.value == 7.0));
    assert_eq!(single.len(), 7);
}

#[test]
fn percentiles_document_matches_aws_shape() {
    assert_eq!(
        percentiles_document(&percentiles(&numbers(&[1.0, 3.0]), &[50.0])),
        json!({"percentiles": [{"percent": 50.0, "value": 2.0}]})
    );
    assert_eq!(
        percentiles_document(&percentiles(&strings(&["a"]), &DEFAULT_PERCENTS)),
        json!({"percentiles": []})
    );
}

#[test]
fn cardinality_counts_distinct_values() {
    let mut values = numbers(&[1.0, 1.0, 0.0, -0.0, 2.5]);
    values.insert(AggregationValue::String("1".to_owned()));
    assert_eq!(cardinality_document(&values), json!({"cardinality": 4}));
    assert_eq!(
        cardinality_document(&ValueCounts::new()),
        json!({"cardinality": 0})
    );
}

#[test]
fn buckets_order_by_count_then_value() {
    let mut values = strings(&["red", "red", "blue", "green", "green", "green", "75"]);
    values.insert(AggregationValue::number(75.0));
    let all = buckets(&values, DEFAULT_MAX_BUCKETS);
    let keys: Vec<(&str, u64)> = all
        .iter()
        .map(|bucket| (bucket.key_value.as_str(), bucket.count))
        .collect();
    assert_eq!(keys, vec![("green", 3), ("75", 2), ("red", 2), ("blue", 1)]);

    assert_eq!(
        buckets_document(&buckets(&values, 2), 6),
        json!({"totalCount": 6, "buckets": [
            {"keyValue": "green", "count": 3},
            {"keyValue": "75", "count": 2}
        ]})
    );
}

#[test]
fn key_values_print_like_json() {
    assert_eq!(AggregationValue::number(75.0).key_value(), "75");
    assert_eq!(AggregationValue::number(-1.5).key_value(), "-1.5");
    assert_eq!(AggregationValue::Bool(true).key_value(), "true");
    assert_eq!(
        AggregationValue::String("Red".to_owned()).key_value(),
        "Red"
    );
}

#[test]
fn retracting_missing_value_changes_nothing() {
    let mut values = numbers(&[1.0]);
    let before = values.clone();
    let error = values
        .retract(AggregationValue::number(2.0))
        .expect_err("2 is not counted");
    assert_eq!(error.present, 0);
    let error = values
        .update(AggregationValue::number(1.0), -2)
        .expect_err("1 is counted once");
    assert_eq!((error.present, error.requested), (1, 2));
    assert_eq!(values, before);

    values
        .update(AggregationValue::number(1.0), -1)
        .expect("1 is counted once");
    assert!(values.is_empty());
    assert_eq!(values.total(), 0);
}

fn value_strategy() -> impl Strategy<Value = AggregationValue> {
    prop_oneof![
        any::<bool>().prop_map(AggregationValue::Bool),
        (-5_i32..5).prop_map(|value| AggregationValue::number(f64::from(value))),
        (-1e6_f64..1e6).prop_map(AggregationValue::number),
        "[a-c]{0,2}".prop_map(AggregationValue::String),
    ]
}

/// Renders every document, so a test can compare all of them at once.
fn all_documents(values: &ValueCounts) -> Vec<serde_json::Value> {
    vec![
        Statistics::compute(values, FieldType::Number).to_document(),
        Statistics::compute(values, FieldType::Boolean).to_document(),
        Statistics::compute(values, FieldType::String).to_document(),
        percentiles_document(&percentiles(values, &DEFAULT_PERCENTS)),
        cardinality_document(values),
        buckets_document(&buckets(values, 3), values.total()),
    ]
}

proptest! {
    #[test]
    fn retracting_subset_equals_computing_rest(
        entries in prop::collection::vec((value_strategy(), any::<bool>()), 0..40),
        seed in any::<u64>(),
    ) {
        let mut values: ValueCounts = entries.iter().map(|(value, _)| value.clone()).collect();
        let mut retracted: Vec<&AggregationValue> =
            entries.iter().filter(|(_, retract)| *retract).map(|(value, _)| value).collect();
        // Retract in an order other than insertion order.
        if !retracted.is_empty() {
            let len = retracted.len();
            retracted.rotate_left((seed % len as u64) as usize);
        }
        for value in retracted {
            values.retract(value.clone()).expect("the value was inserted");
        }
        let rest: ValueCounts =
            entries.iter().filter(|(_, retract)| !*retract).map(|(value, _)| value.clone()).collect();
        prop_assert_eq!(&values, &rest);
        prop_assert_eq!(all_documents(&values), all_documents(&rest));
    }

    #[test]
    fn differential_updates_equal_counts(
        changes in prop::collection::vec((value_strategy(), 1_i64..4), 0..30),
    ) {
        let mut values = ValueCounts::new();
        for (value, diff) in &changes {
            values.update(value.clone(), *diff).expect("adding never fails");
        }
        let built = ValueCounts::from_counts(changes.iter().map(|(value, diff)| (value.clone(), *diff as u64)));
        prop_assert_eq!(&values, &built);
        for (value, diff) in &changes {
            values.update(value.clone(), -diff).expect("the value was added");
        }
        prop_assert!(values.is_empty());
        prop_assert_eq!(values.total(), 0);
    }
}
