//! The dedup set of one partition: event keys with the time they were
//! accepted, expiring by time.
//!
//! A linear-probing table of 16-byte slots (key and time side by side), so
//! a lookup usually costs one cache miss — half of what a SwissTable costs
//! with its separate control bytes. Dedup is the largest random memory
//! access per event, so this is the engine's hot spot. Expired keys are
//! removed by [`DedupSet::sweep`] with backward-shift deletion: no
//! tombstones, and the sweep walks memory sequentially.

use crate::EventKey;

const EMPTY: u64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    key: u64,
    at: i64,
}

/// Keys with their acceptance time. Load factor kept at or below 1/2.
#[derive(Debug, Clone)]
pub struct DedupSet {
    slots: Vec<Slot>,
    len: usize,
}

impl Default for DedupSet {
    fn default() -> Self {
        Self::new()
    }
}

/// The key as stored: `EMPTY` marks a free slot, so key 0 is stored as 1
/// (one more 2⁻⁶⁴ collision).
fn stored(key: EventKey) -> u64 {
    if key.0 == EMPTY { 1 } else { key.0 }
}

impl DedupSet {
    pub fn new() -> Self {
        Self {
            slots: vec![Slot { key: EMPTY, at: 0 }; 16],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Home slot. Keys are XXH3 hashes; the multiply spreads any structure
    /// left in the low bits.
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask()
    }

    /// Loads the home slot of `key` (a prefetch in safe code: independent
    /// loads of a batch overlap their cache misses).
    pub fn touch(&self, key: EventKey) -> u64 {
        self.slots[self.home(stored(key))].key
    }

    /// The time `key` was accepted, if remembered.
    pub fn get(&self, key: EventKey) -> Option<i64> {
        let key = stored(key);
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s.key == key {
                return Some(s.at);
            }
            if s.key == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask();
        }
    }

    /// If `key` is remembered with a time `>= cutoff`, returns `true`
    /// (a duplicate) and changes nothing. Otherwise remembers it at `at`
    /// and returns `false`.
    pub fn check_insert(&mut self, key: EventKey, at: i64, cutoff: i64) -> bool {
        let key = stored(key);
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let s = &mut self.slots[i];
            if s.key == key {
                if s.at >= cutoff {
                    return true;
                }
                s.at = at;
                return false;
            }
            if s.key == EMPTY {
                *s = Slot { key, at };
                self.len += 1;
                if self.len * 2 > self.slots.len() {
                    self.resize(self.slots.len() * 2);
                }
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    /// Every remembered key (as stored) with its time, in table order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != EMPTY)
            .map(|s| (s.key, s.at))
    }

    /// A set holding exactly `entries` (as [`Self::entries`] gives them;
    /// a repeated key keeps its last time).
    pub fn from_entries(entries: &[(u64, i64)]) -> Self {
        let mut set = Self::new();
        let capacity = (entries.len() * 2 + 1).next_power_of_two().max(16);
        if capacity > set.slots.len() {
            set.resize(capacity);
        }
        for &(key, at) in entries {
            // `i64::MAX` as cutoff: never "a duplicate", always (re)set.
            set.check_insert(EventKey(key), at, i64::MAX);
        }
        set
    }

    /// Forgets every key accepted before `cutoff`; shrinks the table when
    /// it is mostly empty.
    pub fn sweep(&mut self, cutoff: i64) {
        let n = self.slots.len();
        for i in 0..n {
            while self.slots[i].key != EMPTY && self.slots[i].at < cutoff {
                self.delete(i);
            }
        }
        if self.slots.len() > 16 && self.len * 8 < self.slots.len() {
            self.resize((self.len * 4).next_power_of_two().max(16));
        }
    }

    /// Backward-shift deletion: pull later members of the probe cluster
    /// into the hole so lookups never need tombstones.
    fn delete(&mut self, mut hole: usize) {
        let mask = self.mask();
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.key == EMPTY {
                break;
            }
            let home = self.home(s.key);
            // `s` may move into the hole unless its home lies cyclically in
            // (hole, j]: then it would end up before its home.
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = Slot { key: EMPTY, at: 0 };
    }

    fn resize(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot { key: EMPTY, at: 0 }; capacity]);
        let mask = self.mask();
        for s in old.into_iter().filter(|s| s.key != EMPTY) {
            let mut i = self.home(s.key);
            while self.slots[i].key != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, i64, i64),
        Sweep(i64),
        Get(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct keys (and key 0) so that collisions, clusters and
        // re-inserts happen often.
        let key = prop_oneof![Just(0u64), 0u64..64, any::<u64>()];
        prop_oneof![
            8 => (key.clone(), 0i64..1_000, 0i64..1_000).prop_map(|(k, a, c)| Op::Insert(k, a, c)),
            1 => (0i64..1_000).prop_map(Op::Sweep),
            3 => key.prop_map(Op::Get),
        ]
    }

    proptest! {
        /// Behaves exactly like a HashMap with the same rules.
        #[test]
        fn matches_a_hash_map_model(ops in prop::collection::vec(op(), 0..2_000)) {
            let mut set = DedupSet::new();
            let mut model: HashMap<u64, i64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, at, cutoff) => {
                        let k = if k == 0 { 1 } else { k };
                        let expected = match model.get(&k) {
                            Some(&a) if a >= cutoff => true,
                            _ => {
                                model.insert(k, at);
                                false
                            }
                        };
                        prop_assert_eq!(set.check_insert(EventKey(k), at, cutoff), expected);
                    }
                    Op::Sweep(cutoff) => {
                        set.sweep(cutoff);
                        model.retain(|_, a| *a >= cutoff);
                    }
                    Op::Get(k) => {
                        let k = if k == 0 { 1 } else { k };
                        prop_assert_eq!(set.get(EventKey(k)), model.get(&k).copied());
                    }
                }
                prop_assert_eq!(set.len(), model.len());
            }
        }
    }

    #[test]
    fn grows_and_shrinks() {
        let mut set = DedupSet::new();
        for k in 1..10_000u64 {
            assert!(!set.check_insert(EventKey(k), k as i64, 0));
        }
        assert_eq!(set.len(), 9_999);
        assert!(set.check_insert(EventKey(5), 0, 0));
        set.sweep(9_990);
        assert_eq!(set.len(), 10);
        assert!(set.slots.len() <= 64);
        assert_eq!(set.get(EventKey(9_995)), Some(9_995));
        assert_eq!(set.get(EventKey(5)), None);
    }
}
