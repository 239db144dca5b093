//! Benchmarks of the steps of one `/update`: decode, merge, delta, metadata and responses.

use std::hint::black_box;
use std::sync::OnceLock;

use criterion::{BenchmarkId, Criterion, Throughput};
use pipeline::shadow::{
    accepted_json, apply_update, compute_delta, decode_update, delta_json, documents_json, get_json,
};

use crate::inputs::{NOW_S, ShadowCase, shadow_cases};

/// Returns the inputs, built on first use and shared by every group.
fn cases() -> &'static [ShadowCase] {
    static CASES: OnceLock<Vec<ShadowCase>> = OnceLock::new();
    CASES.get_or_init(shadow_cases)
}

/// `decode_update`: parse and validate an `/update` payload. Throughput in payload bytes.
pub fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline::shadow::decode_update");
    for case in cases() {
        group.throughput(Throughput::Bytes(case.payload.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(&case.slug), case, |b, case| {
            b.iter(|| decode_update(black_box(&case.payload), &case.limits));
        });
    }
    group.finish();
}

/// `apply_update`: merge a decoded update into the stored shadow, stamping the metadata of
/// every leaf it writes. Throughput in payload bytes.
pub fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline::shadow::apply_update");
    for case in cases() {
        group.throughput(Throughput::Bytes(case.payload.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(&case.slug), case, |b, case| {
            b.iter(|| {
                apply_update(
                    Some(black_box(&case.stored)),
                    0,
                    &case.request,
                    NOW_S,
                    &case.limits,
                )
            });
        });
    }
    group.finish();
}

/// `compute_delta` on the updated shadow with a quarter of its keys desired otherwise, plus
/// the delta's compact JSON as the history row stores it.
pub fn delta(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline::shadow::compute_delta");
    group.throughput(Throughput::Elements(1));
    for case in cases() {
        group.bench_with_input(BenchmarkId::from_parameter(&case.slug), case, |b, case| {
            b.iter(|| compute_delta(black_box(&case.with_desired)).map(|d| d.state_json()));
        });
    }
    group.finish();
}

/// Metadata cost. `pipeline::shadow` has no separate metadata function, so this compares two
/// encodings of the same shadow. `state_json` is the compact JSON of the state alone
/// (`desired_json` plus `reported_json`, as the history row takes it). `state_and_metadata_json`
/// is `Shadow`'s serde form with the metadata, as the log and checkpoints write it.
pub fn metadata(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline::shadow::metadata");
    group.throughput(Throughput::Elements(1));
    for case in cases() {
        let shadow = &case.with_desired;
        group.bench_with_input(
            BenchmarkId::new("state_json", &case.slug),
            shadow,
            |b, s| {
                b.iter(|| (black_box(s).desired_json(), s.reported_json()));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("state_and_metadata_json", &case.slug),
            shadow,
            |b, s| {
                b.iter(|| serde_json::to_vec(black_box(s)).expect("a shadow always serialises"));
            },
        );
    }
    group.finish();
}

/// Response documents, written as JSON bytes by the encoders the dataflow publishes with.
/// Throughput in encoded bytes.
pub fn responses(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline::shadow::documents");
    for case in cases() {
        let token = case.request.client_token();
        let version = case.updated.version();
        let delta = compute_delta(&case.with_desired).expect("the case has a delta");
        let encoders: [(&str, Encoder<'_>); 4] = [
            (
                "update_accepted",
                Box::new(|| accepted_json(&case.request, version, NOW_S)),
            ),
            (
                "update_documents",
                Box::new(|| documents_json(Some(&case.stored), &case.updated, NOW_S, token)),
            ),
            (
                "update_delta",
                Box::new(|| delta_json(&delta, version, NOW_S, token)),
            ),
            (
                "get_accepted",
                Box::new(|| get_json(&case.with_desired, Some(&delta), NOW_S, token)),
            ),
        ];
        for (name, encoder) in &encoders {
            group.throughput(Throughput::Bytes(encoder().len() as u64));
            group.bench_function(BenchmarkId::new(*name, &case.slug), |b| b.iter(encoder));
        }
    }
    group.finish();
}

/// Writes one response document.
type Encoder<'a> = Box<dyn Fn() -> Vec<u8> + 'a>;
