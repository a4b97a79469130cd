//! The embedded operator-control log (DESIGN §6a, issue 18): the
//! in-memory `primetime.controls.v1` of the embedded default. It owns the
//! log's records and the stamp every new record gets — the first tick the
//! clock has not started to fire — and hands the clock an immutable
//! [`ControlSet`] for each tick it fires.
//!
//! Why this is deterministic: the clock calls [`ControlLog::for_tick`]
//! before it sends `FireTick(k)`; under one lock that returns the set every
//! shard prices tick `k` with and moves the stamp to `k + 1`. A record
//! appended concurrently is therefore either in the set for `k` (stamped
//! `<= k`) or stamped `> k` — never stamped `k` but missed by it. The
//! stamps are in the records, so `replay` with the same log (applied before
//! the input, e.g. with [`primetime_core::Engine::apply_control`]) prices
//! every tick under the same controls.
//!
//! Not persistent: a restart starts with an empty log (Kafka mode's log,
//! `crate::kafka::controls`, is the topic and survives restarts).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use primetime_core::{Control, ControlId, ControlRecord, ControlSet, LogError, Tick};

/// The in-memory control log, shared by HTTP (appends, reads) and the
/// clock (a set per tick).
#[derive(Debug)]
pub struct ControlLog {
    /// One lock for the set and the stamp: stamping and snapshotting must
    /// be atomic with respect to each other (see the module doc). Held for
    /// an append or an `Arc` clone, never across I/O or an await.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Copied on write when a tick still prices with the previous set.
    set: Arc<ControlSet>,
    /// The first tick the clock has not started to fire.
    first_unfired: Tick,
}

impl ControlLog {
    /// An empty log for ticks of `bucket_ms`.
    pub fn new(bucket_ms: i64) -> Self {
        Self {
            state: Mutex::new(State {
                set: Arc::new(ControlSet::new(bucket_ms)),
                first_unfired: Tick(i64::MIN),
            }),
        }
    }

    /// A log holding `records` (a replay's controls), before any tick.
    pub fn from_records(
        bucket_ms: i64,
        records: impl IntoIterator<Item = ControlRecord>,
    ) -> Result<Self, LogError> {
        let mut set = ControlSet::new(bucket_ms);
        for r in records {
            set.apply(r, Tick(i64::MIN))?;
        }
        Ok(Self {
            state: Mutex::new(State {
                set: Arc::new(set),
                first_unfired: Tick(i64::MIN),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the set half-changed
        // (`ControlSet` checks before it mutates), so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `control`, stamped with the first unfired tick.
    pub fn issue(&self, control: Control, recorded_at: i64) -> Result<ControlRecord, LogError> {
        let mut s = self.lock();
        let tick = s.first_unfired;
        Arc::make_mut(&mut s.set).issue(control, tick, recorded_at)
    }

    /// Appends the revocation of `id`, from the first unfired tick on.
    pub fn revoke(
        &self,
        id: ControlId,
        recorded_at: i64,
        author: String,
        reason: String,
    ) -> Result<ControlRecord, LogError> {
        let mut s = self.lock();
        let tick = s.first_unfired;
        Arc::make_mut(&mut s.set).revoke(id, tick, recorded_at, author, reason)
    }

    /// The current set (for reads: the API's listings).
    pub fn snapshot(&self) -> Arc<ControlSet> {
        Arc::clone(&self.lock().set)
    }

    /// The first tick not yet fired (records appended now are stamped so).
    pub fn first_unfired(&self) -> Tick {
        self.lock().first_unfired
    }

    /// For the clock, before it fires `tick`: the set to price it with;
    /// records appended from now on are stamped after `tick`.
    pub fn for_tick(&self, tick: Tick) -> Arc<ControlSet> {
        let mut s = self.lock();
        s.first_unfired = s.first_unfired.max(tick.next());
        Arc::clone(&s.set)
    }
}

#[cfg(test)]
mod tests {
    use primetime_core::controls::AreaSpec;
    use primetime_core::{ControlKind, ControlLimits, ControlSpec};

    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn control() -> Control {
        ControlSpec {
            area: AreaSpec {
                cells: Some(vec!["88283082adfffff".to_owned()]),
                bbox: None,
            },
            kind: ControlKind::Cap,
            multiplier: Some(1.5),
            from: T0,
            to: T0 + 3_600_000,
            reason: "storm".to_owned(),
            author: "ops".to_owned(),
        }
        .validate(&ControlLimits::new(8, T0))
        .expect("valid")
    }

    #[test]
    fn records_are_stamped_after_the_last_tick_handed_to_the_clock() {
        let log = ControlLog::new(10_000);
        let k = Tick(T0 / 10_000);
        let before = log.for_tick(k);
        let rec = log.issue(control(), T0).expect("issued");
        assert_eq!(rec.tick(), k.next());
        // The set tick k prices with is unchanged; the next one has it.
        assert!(before.records().is_empty());
        assert_eq!(log.for_tick(k.next()).records().len(), 1);
        let rev = log
            .revoke(ControlId(1), T0, "ops".into(), "over".into())
            .expect("revoked");
        assert_eq!(rev.tick(), Tick(k.0 + 2));
        let replayed =
            ControlLog::from_records(10_000, log.snapshot().records().to_vec()).expect("replays");
        assert_eq!(*replayed.snapshot(), *log.snapshot());
    }
}
