//! Micro benchmarks of the per-update steps and of the Parquet archive writer.
//!
//! `cargo bench -p shadowflow-benches --bench micro` runs every group (about 3 to 4 minutes);
//! `cargo bench -p shadowflow-benches --bench micro -- decode_update` runs the groups whose
//! name matches. Groups:
//!
//! - `pipeline::shadow::decode_update`, `apply_update` (merge with metadata stamping),
//!   `compute_delta`, `metadata`, and `documents` (the `/update/accepted`,
//!   `/update/documents`, `/update/delta` and `/get/accepted` responses, encoded to bytes);
//! - `sinks::parquet_archive::write`: one row group of history rows through a real writer.
//!
//! Inputs are one update of each real data set on its device's shadow, read from
//! `$SHADOWFLOW_DATASETS` (default `../shared/datasets/raw` beside the workspace), and
//! synthetic documents of 1 KB and 8 KB. A data set whose folder is missing is skipped with a
//! line on stderr. Each shadow case measures for 3 s after 0.5 s of warm-up, and the archive
//! case takes 10 samples of one write each.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "micro/archive.rs"]
mod archive;
#[path = "micro/inputs.rs"]
mod inputs;
#[path = "micro/shadow.rs"]
mod shadow;

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = shadow_steps;
    config = config();
    targets = shadow::decode, shadow::merge, shadow::delta, shadow::metadata, shadow::responses
}
criterion_group! {
    name = archive_writer;
    config = config();
    targets = archive::write
}
criterion_main!(shadow_steps, archive_writer);
