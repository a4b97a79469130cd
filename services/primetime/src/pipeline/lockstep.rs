//! Lockstep between a closed-loop input and the clock (DESIGN §7a).
//!
//! In the closed-loop market the simulated riders and drivers react to the
//! prices the pipeline publishes, so the input must not run ahead of the
//! decisions: before it steps its world further, every tick that the
//! records it already delivered make fireable must have fired, and the
//! world must have seen their decisions. Which ticks those are is a pure
//! function of the records (the service watermark after them), so the
//! whole loop stays a pure function of its inputs, however many shards
//! run and however the threads are scheduled.
//!
//! The protocol, one round per poll of the input:
//! 1. the source publishes its progress (watermark `W`) after enqueuing
//!    every batch, then calls [`Lockstep::published`] with `W`;
//! 2. the clock fires every tick ending at or before `W`, handing each
//!    tick's decisions to [`Lockstep::fired`] (and to the sink), then calls
//!    [`Lockstep::settled`] with `W`;
//! 3. the input's next poll calls [`Lockstep::wait`], which returns once
//!    the settled watermark has reached the published one, with the
//!    decisions fired since the last round, in tick order.
//!
//! The input runs on the source thread, so its wait blocks only that
//! thread; the clock's calls never block (a mutex held for a push).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use primetime_core::{PriceDecision, Watermark};

/// Shared by the source, the clock and a closed-loop input.
#[derive(Debug, Default)]
pub struct Lockstep {
    state: Mutex<State>,
    /// Signalled when the clock settles a watermark or stops.
    settled_cv: Condvar,
}

#[derive(Debug)]
struct State {
    /// The newest watermark the source published.
    published: Watermark,
    /// The newest watermark the clock has fired every tick up to.
    settled: Watermark,
    /// Decisions fired since the input last took them, in tick order.
    fired: Vec<PriceDecision>,
    /// The clock stopped: nothing more will settle.
    closed: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            published: Watermark::MIN,
            settled: Watermark::MIN,
            fired: Vec::new(),
            closed: false,
        }
    }
}

/// What [`Lockstep::wait`] saw.
#[derive(Debug, PartialEq)]
pub enum Round {
    /// Everything published is settled: these decisions fired since the
    /// last round (tick order; possibly none).
    Settled(Vec<PriceDecision>),
    /// Not settled yet within the timeout (poll again, or stop).
    Pending,
    /// The clock stopped.
    Closed,
}

impl Lockstep {
    /// The source published watermark `wm` (after enqueuing every batch).
    pub(super) fn published(&self, wm: Watermark) {
        let mut s = self.lock();
        s.published = s.published.max(wm);
    }

    /// The clock fired a tick with these changed decisions.
    pub(super) fn fired(&self, decisions: &[PriceDecision]) {
        self.lock().fired.extend_from_slice(decisions);
    }

    /// The clock fired every tick ending at or before `wm`.
    pub(super) fn settled(&self, wm: Watermark) {
        let mut s = self.lock();
        s.settled = s.settled.max(wm);
        drop(s);
        self.settled_cv.notify_all();
    }

    /// The clock stopped (end of input, failure or shutdown).
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.settled_cv.notify_all();
    }

    /// Waits up to `timeout` until everything published is settled.
    pub fn wait(&self, timeout: Duration) -> Round {
        let guard = self.lock();
        let (mut s, _) = self
            .settled_cv
            .wait_timeout_while(guard, timeout, |s| !s.closed && s.settled < s.published)
            .unwrap_or_else(PoisonError::into_inner);
        if s.settled >= s.published {
            Round::Settled(std::mem::take(&mut s.fired))
        } else if s.closed {
            Round::Closed
        } else {
            Round::Pending
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_waits_for_the_clock_to_settle_what_was_published() {
        let l = Lockstep::default();
        assert_eq!(l.wait(Duration::ZERO), Round::Settled(Vec::new()));
        l.published(Watermark(20_000));
        assert_eq!(l.wait(Duration::from_millis(1)), Round::Pending);
        l.settled(Watermark(10_000));
        assert_eq!(l.wait(Duration::from_millis(1)), Round::Pending);
        l.settled(Watermark(20_000));
        assert_eq!(l.wait(Duration::ZERO), Round::Settled(Vec::new()));
        l.published(Watermark(30_000));
        l.close();
        assert_eq!(l.wait(Duration::from_secs(5)), Round::Closed);
    }

    #[test]
    fn a_waiting_input_wakes_when_the_clock_settles() {
        let l = std::sync::Arc::new(Lockstep::default());
        l.published(Watermark(5));
        let clock = std::sync::Arc::clone(&l);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            clock.settled(Watermark(5));
        });
        assert_eq!(l.wait(Duration::from_secs(10)), Round::Settled(Vec::new()));
        t.join().expect("clock thread");
    }
}
