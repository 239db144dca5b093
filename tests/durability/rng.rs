//! A small seeded random number generator, so a failing run can be repeated from its seed.
//!
//! xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators,
//! scrambled", 2016) seeded through SplitMix64, which turns any seed, 0 included, into a
//! non-zero state. The tests need reproducible choices, not statistical quality.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Environment variable that fixes the seed of the durability tests.
pub const SEED_VARIABLE: &str = "SHADOWFLOW_DURABILITY_SEED";

/// Returns the seed from [`SEED_VARIABLE`], or one derived from the clock.
///
/// # Panics
///
/// Panics when the variable is set but is not an unsigned 64-bit integer.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_VARIABLE) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("invalid {SEED_VARIABLE} {text:?}: expected an integer")),
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970");
            now.as_nanos() as u64
        }
    }
}

/// xorshift64* generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// Generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut mixed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^= mixed >> 31;
        Rng { state: mixed | 1 }
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Generator for `seed` and the test `name`, so that tests sharing one seed make different
    /// choices. The name is mixed in with 64-bit FNV-1a.
    pub fn for_test(seed: u64, name: &str) -> Rng {
        let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
        }
        Rng::new(seed ^ hash)
    }

    /// Returns a number in `0..bound`; `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Returns true with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Returns a duration between `min` and `max`, both included, in whole milliseconds.
    pub fn duration_between(&mut self, min: Duration, max: Duration) -> Duration {
        let min_ms = min.as_millis() as u64;
        let max_ms = max.as_millis() as u64;
        Duration::from_millis(min_ms + self.below(max_ms - min_ms + 1))
    }

    /// Returns an independent generator seeded from this one, for another thread.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}
