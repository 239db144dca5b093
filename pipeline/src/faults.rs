//! Fault injection, for tests that need failures which correct code never produces.
//!
//! Built on the `fail` crate and compiled in only with the `failpoints` feature; without it,
//! every function here does nothing and costs nothing. Test builds of the `shadowflow` binary
//! enable the feature, and the `FAILPOINTS` environment variable configures the points, for
//! example `FAILPOINTS='shadow-update=return(crash-me)'`.
//!
//! # Points
//! - `shadow-update`: panics while an update is computed, when the request's `clientToken`
//!   equals the point's argument. The service must reject that request with 500 and leave the
//!   shadow unchanged.

/// Keeps the points configured from `FAILPOINTS` active while it lives.
#[must_use = "the fault points are cleared when the guard is dropped"]
pub struct FaultScenario {
    #[cfg(feature = "failpoints")]
    _scenario: fail::FailScenario<'static>,
}

impl FaultScenario {
    /// Configures the points named in `FAILPOINTS`.
    ///
    /// # Panics
    /// Panics when `FAILPOINTS` is malformed, so that a test never runs without its faults.
    pub fn from_env() -> Self {
        FaultScenario {
            #[cfg(feature = "failpoints")]
            _scenario: fail::FailScenario::setup(),
        }
    }

    /// Returns whether this build can inject faults.
    pub const fn enabled() -> bool {
        cfg!(feature = "failpoints")
    }
}

/// Panics at `shadow-update` when that point is configured with this `client_token`.
pub(crate) fn shadow_update(client_token: Option<&str>) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("shadow-update", |trigger: Option<String>| {
        if trigger.is_some() && trigger.as_deref() == client_token {
            panic!("fault injected at shadow-update for clientToken {client_token:?}");
        }
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = client_token;
}
