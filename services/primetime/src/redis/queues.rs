//! The store's coalescing queues: what `put_prices` and `put_snapshot`
//! leave for the writer threads. Pure data structures (no Redis, no
//! locks: the store holds each in a mutex), so their rules are unit tested
//! without a server.

use std::collections::{BTreeMap, btree_map, hash_map};

use primetime_core::Tick;
use rustc_hash::FxHashMap;

use super::{SnapshotPart, StoredPrice};

/// Queue sequence numbers: `flush` waits for `written` to reach the
/// `queued` it saw.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Puts so far.
    pub(super) queued: u64,
    /// Every put up to this one is written.
    pub(super) written: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingPrice {
    tick: Tick,
    payload: Vec<u8>,
}

/// Prices not yet written, one entry per cell (newest tick).
#[derive(Debug, Default)]
pub(super) struct PriceQueue {
    pending: FxHashMap<String, PendingPrice>,
    /// Cells taken by the writer and not yet written.
    in_flight: usize,
    pub(super) progress: Progress,
}

impl PriceQueue {
    /// Keeps the newer tick of a cell; an equal tick keeps the first
    /// payload (as Redis would). True for an equal tick with another payload.
    pub(super) fn push(&mut self, price: StoredPrice) -> bool {
        let StoredPrice {
            cell,
            tick,
            payload,
        } = price;
        match self.pending.entry(cell) {
            hash_map::Entry::Vacant(entry) => {
                entry.insert(PendingPrice { tick, payload });
                false
            }
            hash_map::Entry::Occupied(mut entry) => {
                let queued = entry.get_mut();
                if tick > queued.tick {
                    *queued = PendingPrice { tick, payload };
                    false
                } else {
                    tick == queued.tick && payload != queued.payload
                }
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes every pending cell for the writer; they count as in flight
    /// until [`Self::written`] or [`Self::requeue`].
    pub(super) fn take_all(&mut self) -> Vec<StoredPrice> {
        let batch: Vec<StoredPrice> = self
            .pending
            .drain()
            .map(|(cell, p)| StoredPrice {
                cell,
                tick: p.tick,
                payload: p.payload,
            })
            .collect();
        self.in_flight = batch.len();
        batch
    }

    /// `cells` of the taken batch are written.
    pub(super) fn written(&mut self, cells: usize) {
        self.in_flight = self.in_flight.saturating_sub(cells);
    }

    /// Gives back cells the writer failed to write; newer puts since win.
    /// Returns the conflicts found.
    pub(super) fn requeue(&mut self, cells: Vec<StoredPrice>) -> u64 {
        self.in_flight = 0;
        let mut conflicts = 0;
        for price in cells {
            let failed = PendingPrice {
                tick: price.tick,
                payload: price.payload,
            };
            match self.pending.entry(price.cell) {
                hash_map::Entry::Vacant(entry) => {
                    entry.insert(failed);
                }
                hash_map::Entry::Occupied(mut entry) => {
                    let queued = entry.get_mut();
                    // The failed one was put first, so it wins an equal tick.
                    if failed.tick >= queued.tick {
                        if failed.tick == queued.tick && failed.payload != queued.payload {
                            conflicts += 1;
                        }
                        *queued = failed;
                    }
                }
            }
        }
        conflicts
    }

    /// Cells queued or in flight (the `pending_cells` gauge).
    pub(super) fn cells(&self) -> u64 {
        (self.pending.len() + self.in_flight) as u64
    }
}

/// One queued snapshot: every part of a group at one tick.
#[derive(Debug)]
pub(super) struct SnapshotJob {
    pub(super) tick: Tick,
    pub(super) parts: Vec<SnapshotPart>,
}

impl SnapshotJob {
    /// Total blob bytes (the `last_snapshot_bytes` gauge).
    pub(super) fn bytes(&self) -> usize {
        self.parts.iter().map(|part| part.blob.len()).sum()
    }
}

/// Snapshots not yet written: the newest per group.
#[derive(Debug, Default)]
pub(super) struct SnapshotQueue {
    pending: BTreeMap<String, SnapshotJob>,
    pub(super) progress: Progress,
}

impl SnapshotQueue {
    /// Keeps the newer snapshot of a group (the later one for equal ticks).
    pub(super) fn push(&mut self, group: String, job: SnapshotJob) {
        match self.pending.entry(group) {
            btree_map::Entry::Vacant(entry) => {
                entry.insert(job);
            }
            btree_map::Entry::Occupied(mut entry) => {
                if job.tick >= entry.get().tick {
                    tracing::debug!(
                        group = entry.key(),
                        replaced = entry.get().tick.0,
                        tick = job.tick.0,
                        "queued snapshot replaced by a newer one"
                    );
                    entry.insert(job);
                }
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes every queued snapshot for the writer.
    pub(super) fn take_all(&mut self) -> BTreeMap<String, SnapshotJob> {
        std::mem::take(&mut self.pending)
    }

    /// Gives back a job the writer failed to write, unless a newer one of
    /// its group was queued since.
    pub(super) fn requeue(&mut self, group: String, job: SnapshotJob) {
        match self.pending.entry(group) {
            btree_map::Entry::Vacant(entry) => {
                entry.insert(job);
            }
            btree_map::Entry::Occupied(mut entry) => {
                if job.tick > entry.get().tick {
                    entry.insert(job);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(cell: &str, tick: i64, payload: &[u8]) -> StoredPrice {
        StoredPrice {
            cell: cell.to_owned(),
            tick: Tick(tick),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn queue_coalesces_per_cell_to_the_newest_tick() {
        let mut queue = PriceQueue::default();
        assert!(!queue.push(price("a", 5, b"a5")));
        assert!(!queue.push(price("a", 6, b"a6")));
        assert!(!queue.push(price("a", 4, b"a4")));
        assert!(!queue.push(price("a", 6, b"a6")), "replay");
        assert!(queue.push(price("a", 6, b"other")), "conflict");
        assert!(!queue.push(price("b", 1, b"b1")));
        assert_eq!(queue.cells(), 2);
        assert_eq!(queue.pending["a"].tick, Tick(6));
        assert_eq!(queue.pending["a"].payload, b"a6");

        // A failed batch comes back under newer puts made meanwhile.
        let taken = queue.take_all();
        assert_eq!(queue.cells(), 2, "in flight still counts");
        queue.push(price("a", 7, b"a7"));
        queue.push(price("b", 1, b"b1-other"));
        assert_eq!(queue.requeue(taken), 1);
        assert_eq!(queue.cells(), 2);
        assert_eq!(queue.pending["a"].tick, Tick(7));
        assert_eq!(
            queue.pending["b"].payload, b"b1",
            "the first put wins a tie"
        );
    }

    #[test]
    fn written_cells_leave_the_gauge() {
        let mut queue = PriceQueue::default();
        queue.push(price("a", 1, b"a"));
        queue.push(price("b", 1, b"b"));
        let taken = queue.take_all();
        assert!(queue.is_empty());
        queue.push(price("c", 1, b"c"));
        assert_eq!(queue.cells(), 3);
        queue.written(taken.len());
        assert_eq!(queue.cells(), 1);
    }

    fn job(tick: i64, blob: &[u8]) -> SnapshotJob {
        SnapshotJob {
            tick: Tick(tick),
            parts: vec![SnapshotPart {
                partition: 0,
                blob: blob.to_vec(),
            }],
        }
    }

    #[test]
    fn snapshot_queue_keeps_the_newest_per_group() {
        let mut queue = SnapshotQueue::default();
        queue.push("g".to_owned(), job(1, b"one"));
        queue.push("g".to_owned(), job(2, b"two"));
        queue.push("g".to_owned(), job(1, b"stale"));
        queue.push("h".to_owned(), job(1, b"h"));
        let taken = queue.take_all();
        assert!(queue.is_empty());
        assert_eq!(taken["g"].tick, Tick(2));
        assert_eq!(taken["g"].bytes(), 3);

        // A failed job comes back unless its group has a newer one queued.
        queue.push("g".to_owned(), job(3, b"three"));
        for (group, job) in taken {
            queue.requeue(group, job);
        }
        let again = queue.take_all();
        assert_eq!(again["g"].tick, Tick(3));
        assert_eq!(again["h"].tick, Tick(1));
    }
}
