//! The ingest-ordered output queue: generated records wait in a timing
//! wheel keyed by ingest time and are emitted in (ingest time,
//! generation number) order.

use super::*;

/// Width of one slot of the output wheel.
pub(super) const WHEEL_SLOT_MS: i64 = 64;
/// Slots of the output wheel: 4096 × 64 ms ≈ 262 s ahead.
pub(super) const WHEEL_SLOTS: usize = 4096;
/// Longest a record can wait between the start of the step that generated
/// it and its ingest: a step, then the late fault's 120 s, or the network
/// delay plus the duplicate gap.
pub(super) const MAX_WAIT_MS: i64 = STEP_MS + LATE_MS.1;
// The wheel must reach past every record's ingest time, counted from the
// end of the drained range (at most a step behind the generating step).
const _: () = assert!(
    MAX_WAIT_MS + STEP_MS < WHEEL_SLOT_MS * WHEEL_SLOTS as i64
        && DUPLICATE_GAP_MS.1 + DELAY_MAX_MS < LATE_MS.1
);

/// A generated record waiting for its ingest time.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) ingest_ms: i64,
    /// Order of generation: the deterministic tie-break.
    pub(super) seq: u64,
    pub(super) partition: u32,
    pub(super) topic: Topic,
    pub(super) label: Label,
    pub(super) payload: Vec<u8>,
}

/// Records waiting for their ingest time, in a timing wheel: slot
/// `(ingest / 64 ms) mod 4096` holds the records due in that 64 ms, in
/// generation order. Draining sorts a slot by (ingest time, generation
/// number) — a total order, so the result is deterministic. Every pending
/// record is due within the wheel's span of the drained time (checked at
/// compile time above), so slots never mix laps. Unlike a binary heap this
/// is O(1) per record, and the records of a slot stay together in memory.
#[derive(Debug)]
pub(super) struct Wheel {
    pub(super) slots: Vec<Vec<Pending>>,
    /// Every record due before this has been drained.
    pub(super) drained_ms: i64,
    pub(super) len: usize,
}

impl Wheel {
    pub(super) fn new(start_ms: i64) -> Self {
        Self {
            slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            drained_ms: start_ms,
            len: 0,
        }
    }

    pub(super) fn slot(ingest_ms: i64) -> usize {
        (ingest_ms.div_euclid(WHEEL_SLOT_MS) as usize) % WHEEL_SLOTS
    }

    pub(super) fn push(&mut self, p: Pending) {
        debug_assert!(p.ingest_ms >= self.drained_ms);
        debug_assert!(p.ingest_ms < self.drained_ms + WHEEL_SLOT_MS * WHEEL_SLOTS as i64);
        self.slots[Self::slot(p.ingest_ms)].push(p);
        self.len += 1;
    }

    /// Calls `emit` on every record due before `until_ms`, in order.
    pub(super) fn drain(&mut self, until_ms: i64, mut emit: impl FnMut(Pending)) {
        while self.drained_ms < until_ms {
            let slot_end = (self.drained_ms.div_euclid(WHEEL_SLOT_MS) + 1) * WHEEL_SLOT_MS;
            let limit = slot_end.min(until_ms);
            let slot = &mut self.slots[Self::slot(self.drained_ms)];
            if !slot.is_empty() {
                slot.sort_unstable_by_key(|p| (p.ingest_ms, p.seq));
                let due = slot.partition_point(|p| p.ingest_ms < limit);
                self.len -= due;
                slot.drain(..due).for_each(&mut emit);
            }
            self.drained_ms = limit;
        }
    }
}
