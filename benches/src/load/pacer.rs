//! Open-loop pacing on one dedicated thread, which sends every update of every connection at
//! its scheduled time.
//!
//! tokio's timer rounds every wake-up up to the next millisecond, so a sender task woken by it
//! leaves up to 1 ms late. The pacer instead sleeps with `std::thread::sleep` (nanosleep, with
//! the thread's timer slack lowered to 1 ns) until [`SPIN_WINDOW`] before the next scheduled
//! time, then spins, yielding the core, for the rest. Updates that are due already, because the
//! thread was descheduled or several fall in the same microsecond, leave one after the other
//! without waiting.
//!
//! # Notes
//! - Each update is handed to its connection's rumqttc request channel; the connection's event
//!   loop then writes it. The recorded send lag is measured when the update is handed over, so
//!   it leaves out the event loop's wake-up. Latency still counts from the scheduled time, so
//!   that wake-up is part of every open-loop latency.
//! - A full request channel (the event loop falls behind) blocks the pacer, like the tokio
//!   sender it replaces. The updates due meanwhile leave late, and their lag shows it.
//! - Each update wakes its connection's event loop on another thread, which costs more CPU
//!   per update than the tokio sender (about 2 to 3 times the generator's CPU at 10,000/s).

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use tracing::debug;

use super::connection::{Budget, Clock, ConnectionHandles, Phases, SendPlan, begin_update};

/// Time before an update's scheduled time at which the pacer stops sleeping and starts to spin.
/// On a busy 2-core VM, nanosleep with 1 ns timer slack woke with a median lag under 40 µs.
const SPIN_WINDOW: Duration = Duration::from_micros(40);

/// One connection's schedule: its pacing and the number of its next update, or `None` once it
/// has stopped.
struct Schedule {
    connection: ConnectionHandles,
    plan: SendPlan,
    next_sequence: Option<u64>,
}

impl Schedule {
    /// Scheduled time of the next update in microseconds since the clock start, or `None` when
    /// the connection has stopped.
    fn next_due_us(&self) -> Option<u64> {
        self.next_sequence
            .map(|sequence| (self.plan.offset_ns + sequence * self.plan.period_ns) / 1000)
    }
}

/// Sends the open-loop updates of all `connections`, each paced by its plan, until the send
/// phase ends or the budget is used up. Runs on a thread of its own (it blocks); `runtime` is
/// the runtime of the connections' event loops.
///
/// A connection whose event loop has ended stops sending; its error is in its state.
pub fn pace_open_loop(
    connections: Vec<(ConnectionHandles, SendPlan)>,
    clock: Clock,
    phases: Phases,
    budget: &Budget,
    runtime: &tokio::runtime::Handle,
) {
    lower_timer_slack();
    let mut schedules: Vec<Schedule> = connections
        .into_iter()
        .map(|(connection, plan)| Schedule {
            connection,
            plan,
            next_sequence: Some(0),
        })
        .collect();
    let mut token_text = String::with_capacity(64);
    loop {
        let next = schedules
            .iter_mut()
            .filter_map(|schedule| schedule.next_due_us().map(|due_us| (due_us, schedule)))
            .min_by_key(|(due_us, _)| *due_us);
        let Some((due_us, schedule)) = next else {
            return;
        };
        if due_us >= phases.send_until_us || !budget.take() {
            return;
        }
        wait_until(clock.instant_at(due_us));
        let now_us = clock.now_us();
        // A server slower than the rate holds back `publish`, and the schedule falls behind
        // the clock. Sending still stops at the end of the measured time.
        if now_us >= phases.send_until_us {
            return;
        }
        let lag_us = now_us.saturating_sub(due_us);
        let sequence = schedule.next_sequence.unwrap_or_default();
        let connection = &schedule.connection;
        let (topic, payload) = begin_update(
            connection,
            sequence,
            due_us,
            Some(lag_us),
            phases,
            &mut token_text,
        );
        let sent = runtime.block_on(connection.client.publish(
            topic,
            connection.qos,
            false,
            payload,
        ));
        if sent.is_err() {
            debug!(
                connection = connection.index,
                "the connection's event loop has ended; its open-loop sending stops"
            );
            let mut state = connection
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.stats.error.get_or_insert_with(|| {
                "publishing an update: the connection's event loop has ended".to_owned()
            });
            schedule.next_sequence = None;
        } else {
            schedule.next_sequence = Some(sequence + 1);
        }
    }
}

/// Sleeps until [`SPIN_WINDOW`] before `due`, then spins until `due`.
fn wait_until(due: Instant) {
    loop {
        let now = Instant::now();
        let Some(left) = due
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
        else {
            return;
        };
        if left > SPIN_WINDOW {
            std::thread::sleep(left - SPIN_WINDOW);
        } else {
            std::thread::yield_now();
        }
    }
}

/// Lowers the calling thread's timer slack from Linux's default of 50 µs to 1 ns, so that a
/// sleep ends when asked rather than up to 50 µs later. A failure only costs precision.
fn lower_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes only the calling
    // thread's timer slack.
    let result = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    if result != 0 {
        debug!(
            error = %std::io::Error::last_os_error(),
            "could not lower the pacer's timer slack; its sleeps may end up to 50 µs late"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_ends_at_the_deadline() {
        lower_timer_slack();
        for micros in [0_u64, 10, 200, 2_000] {
            let start = Instant::now();
            let due = start + Duration::from_micros(micros);
            wait_until(due);
            let done = Instant::now();
            assert!(done >= due, "woke {:?} early", due - done);
        }
    }
}
