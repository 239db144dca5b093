//! Memory per shadow: the state the `memory` tool loads, a counting allocator and `/proc` readings.
//!
//! The `memory` binary builds many shadows and reports the bytes each one costs, in two ways:
//!
//! - resident memory (`VmRSS` and the peak `VmHWM` of `/proc/self/status`) after loading, minus
//!   a baseline read before, which includes allocator overhead and fragmentation;
//! - live heap bytes and live allocations, counted by [`CountingAllocator`] when the binary
//!   installs it as its global allocator, which isolate what each structure requests.
//!
//! # Notes
//! - The counters are process-wide, so a figure counts every thread's allocations, including
//!   those of the dataflow workers and of the request channel.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::io;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::recovery::sensor;

/// Returns the `reported` section of a sensor with ten numeric leaves and one nested object, as
/// compact JSON of about 200 bytes. Every value is a pure function of `n` and `sequence`.
pub fn nested_reported_json(n: u64, sequence: u64) -> String {
    let bits = sensor::mix(n.wrapping_mul(0x1_0000_0001) ^ sequence);
    let temperature = 15.0 + (bits % 1500) as f64 / 100.0;
    let humidity = 30.0 + ((bits >> 12) % 400) as f64 / 10.0;
    let pressure = 990.0 + ((bits >> 20) % 400) as f64 / 10.0;
    let battery = 100 - (bits >> 28) % 60;
    let rssi = -40 - ((bits >> 34) % 50) as i64;
    let co2 = 400 + (bits >> 40) % 800;
    let pm25 = ((bits >> 44) % 500) as f64 / 10.0;
    let uptime_s = (bits >> 16) % 10_000_000;
    let latitude = 48.0 + ((n * 7919) % 10_000) as f64 / 10_000.0;
    let longitude = 11.0 + ((n * 104_729) % 10_000) as f64 / 10_000.0;
    format!(
        r#"{{"temperature_c":{temperature:.2},"humidity_pct":{humidity:.1},"pressure_hpa":{pressure:.1},"battery_pct":{battery},"rssi_dbm":{rssi},"co2_ppm":{co2},"pm25_ugm3":{pm25:.1},"uptime_s":{uptime_s},"location":{{"latitude":{latitude:.4},"longitude":{longitude:.4}}}}}"#
    )
}

/// Shape of the state each shadow gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StateShape {
    /// `reported` only: ten numbers, two of them in a nested `location` object (about 200 bytes).
    Nested,
    /// The `recovery` sensors: 8 reported fields (numbers and strings) and 3 desired settings,
    /// so every shadow has a delta.
    Sensor,
}

impl StateShape {
    /// Returns the `state` node of the update that creates shadow `n`, as compact JSON.
    pub fn state_json(self, n: u64) -> String {
        match self {
            StateShape::Nested => {
                format!(r#"{{"reported":{}}}"#, nested_reported_json(n, 0))
            }
            StateShape::Sensor => format!(
                r#"{{"desired":{},"reported":{}}}"#,
                sensor::desired_json(n),
                sensor::full_reported_json(n)
            ),
        }
    }
}

/// Live heap bytes and allocations counted by [`CountingAllocator`].
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCATIONS: AtomicI64 = AtomicI64::new(0);

/// mimalloc, the service's allocator, counting live bytes (as requested, before the
/// allocator's own rounding) and live allocations.
pub struct CountingAllocator;

// SAFETY: every call forwards to `MiMalloc` with the same arguments; the counters have no
// influence on the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `MiMalloc` shares.
        let pointer = unsafe { MiMalloc.alloc(layout) };
        if !pointer.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` was allocated by `alloc` above with this layout.
        unsafe { MiMalloc.dealloc(pointer, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which `MiMalloc` shares.
        let moved = unsafe { MiMalloc.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        moved
    }
}

/// A reading of the live heap counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapCount {
    /// Bytes requested and not yet freed.
    pub bytes: i64,
    /// Allocations not yet freed.
    pub allocations: i64,
}

impl HeapCount {
    /// Reads the counters; both stay 0 unless [`CountingAllocator`] is the global allocator.
    pub fn now() -> Self {
        HeapCount {
            bytes: LIVE_BYTES.load(Ordering::Relaxed),
            allocations: LIVE_ALLOCATIONS.load(Ordering::Relaxed),
        }
    }

    /// Returns the change from `earlier` to `self`.
    pub fn since(self, earlier: HeapCount) -> HeapCount {
        HeapCount {
            bytes: self.bytes - earlier.bytes,
            allocations: self.allocations - earlier.allocations,
        }
    }
}

/// Resident memory of this process, from `/proc/self/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resident {
    /// `VmRSS`: resident now, in bytes.
    pub current: u64,
    /// `VmHWM`: the peak resident size so far, in bytes.
    pub peak: u64,
}

impl Resident {
    /// Reads `VmRSS` and `VmHWM`.
    ///
    /// # Errors
    /// Fails when `/proc/self/status` cannot be read or lacks either line, as on systems other
    /// than Linux.
    pub fn now() -> io::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| {
            status_kib(&status, name).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("/proc/self/status has no valid {name} line"),
                )
            })
        };
        Ok(Resident {
            current: field("VmRSS:")? * 1024,
            peak: field("VmHWM:")? * 1024,
        })
    }
}

/// Reads a `NAME:  123456 kB` line of a `/proc/PID/status` text, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_in_kib() {
        let status = "Name:\tmemory\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn nested_state_is_about_200_bytes() {
        for n in [0, 1, 999_999] {
            let bytes = nested_reported_json(n, 0).len();
            assert!((180..=240).contains(&bytes), "sensor {n}: {bytes} bytes");
            let value: serde_json::Value =
                serde_json::from_str(&nested_reported_json(n, 0)).expect("valid JSON");
            assert!(value["location"].is_object());
        }
    }
}
