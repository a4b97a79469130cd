//! The per-cell history of price changes: which decision was in force in a
//! cell at a past time (`GET /v1/price?at=`, `GET /v1/cells/{cell}/history`).
//!
//! Only changes are kept (a decision whose multiplier and model equal the
//! cell's previous one adds nothing), each in 8 bytes: the tick relative to
//! the first tick seen, the multiplier in twentieths and an interned model
//! version. Per cell at most `max_changes_per_cell` are kept (the oldest go
//! first, and the cell's history then starts later); every 64 ticks each
//! shard drops changes older than the retention, keeping the one in force
//! at the horizon. Memory: about `48 + 8 × changes` bytes per cell with a
//! history, plus ~30 of allocator rounding; so at most about
//! `80 + 8 × max_changes_per_cell` (592 B with the default 64, 1.65 GiB at
//! 3 M cells). Measured (`tests/history_memory.rs`): 3 M cells with 4
//! changes each take 235 MiB by the history's count (82 B/cell), 319 MiB of
//! resident set (112 B/cell); `examples/history_3m.rs` (release, mimalloc):
//! 1 change a cell 63 B/cell of resident set (181 MiB), 10 changes 132
//! B/cell (377 MiB); a restore of a 3 M-cell topic peaks at +261 MiB (1
//! record a cell, 2.6 s) and +445 MiB (10 a cell, 33 s), the restore's map
//! of each cell's oldest tick included. Cells back at 1.0 since before the
//! retention hold nothing.
//!
//! An answer is never a guess: a time before what is retained (before the
//! retention, before the first tick this history saw or was restored from,
//! or before a cell's truncated history) is [`HistoryError::Outside`]; a
//! time after what is known of the cell is [`HistoryError::NotYet`].
//!
//! "Known up to" — the rule. By default (one process prices every cell)
//! a cell is known up to the newest tick this history was published.
//! With several instances (Kafka mode) a [`Reach`] is set: a cell this
//! instance prices is known up to its newest published tick (or further,
//! up to what the tail below has proved); another instance's cell only up
//! to the tick `T` through which that instance's prices are proved to be
//! in this history — its durable tick (prices acknowledged by the broker)
//! committed with the cell's input partition, read *before* the tail
//! reached the end the prices topic had after that (see
//! `kafka::price_history`). A time after `T` is `NotYet` (HTTP 422
//! `not_yet_known`, retryable): while the tail is behind, or cannot read,
//! the answer is an error, never the last value this instance knew.
//! Decisions fed by the tail ([`History::record_update`]) never move the
//! newest tick: only this instance's own ticks do.
//!
//! Idempotent with the instance's own ticks: entries are keyed by (cell,
//! tick) and kept in tick order, so a decision read back from the topic
//! that was already published here replaces itself with the same value,
//! and one read late (older than changes already kept) is inserted at its
//! tick, never appended out of order.
//!
//! After a restart the history can be filled from a stream of
//! `PriceUpdate`s (the prices topic read from `now − retention`, or the
//! Redis price table's current state) with [`History::restore`].

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};

use primetime_core::{CellId, PriceDecision, Tick};
use primetime_proto::v1::PriceUpdate;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// `[history]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// How far back decisions are answered. Default 24 h.
    pub retention_ms: i64,
    /// Most changes kept per cell (8 bytes each). Default 64: a cell
    /// changing at every 10 s tick keeps its last ~10 minutes; one changing
    /// every ~20 minutes keeps the whole day.
    pub max_changes_per_cell: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            retention_ms: 24 * 3_600_000,
            max_changes_per_cell: 64,
        }
    }
}

impl HistoryConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(60_000..=30 * 86_400_000).contains(&self.retention_ms) {
            p.push(format!(
                "history.retention_ms: must be in 60000..=2592000000 (1 min to 30 days), got {}",
                self.retention_ms
            ));
        }
        if !(1..=65_536).contains(&self.max_changes_per_cell) {
            p.push(format!(
                "history.max_changes_per_cell: must be in 1..=65536, got {}",
                self.max_changes_per_cell
            ));
        }
        p
    }
}

/// Why a time cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HistoryError {
    /// Before what is retained; `retained_from_ms` is the earliest time
    /// answered (for this cell), if any.
    #[error("before the retained history (answered from {retained_from_ms:?} ms)")]
    Outside { retained_from_ms: Option<i64> },
    /// After what is known of the cell here (`known_until_ms`, if
    /// anything): the newest fired tick, or for another instance's cell
    /// the tick through which its prices are proved read (see [`Reach`]).
    #[error("after what is known here (known until {known_until_ms:?} ms)")]
    NotYet { known_until_ms: Option<i64> },
}

/// How far a cell's decisions are known, when this history is not the one
/// place every decision is made (Kafka mode: see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Every decision of the cell up to this tick is in the history
    /// (`None`: nothing proved).
    pub through: Option<Tick>,
    /// This instance prices the cell: its own published ticks count too.
    pub owned: bool,
}

/// Answers a cell's [`Reach`]; called on every history read, so cheap.
pub type ReachFn = Box<dyn Fn(CellId) -> Reach + Send + Sync>;

/// One decision as the history knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The tick that decided it: in force from `tick.end_ms(bucket_ms)`.
    pub tick: Tick,
    pub twentieths: u32,
    pub model_version: Arc<str>,
}

/// A stored change: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    /// Relative to [`History::base`].
    tick: i32,
    twentieths: u16,
    model: u16,
}

#[derive(Debug, Default)]
struct CellHistory {
    /// By tick, oldest first; never empty.
    changes: Vec<Packed>,
    /// Relative tick from which this cell's history is complete (after a
    /// truncation), else `i32::MIN`.
    complete_from: i32,
}

/// Lock shards: writers (the clock, one cell at a time) and readers (HTTP)
/// rarely meet on the same shard.
const SHARDS: usize = 64;

/// The history of every cell. Written by the price table's one writer (the
/// clock) and, in Kafka mode, the prices topic's tail; read by HTTP
/// handlers.
pub struct History {
    bucket_ms: i64,
    retention_ticks: i64,
    max_changes: usize,
    /// The first tick recorded: stored ticks are relative to it (i32 holds
    /// ±68 years of 1 s ticks). `i64::MIN` until set.
    base: AtomicI64,
    /// Answers start at this tick (the first published or restored from).
    covered_from: AtomicI64,
    /// The newest tick published (`i64::MIN` before any).
    newest: AtomicI64,
    /// A lock per shard of cells; held for one cell's update or read.
    shards: Box<[RwLock<FxHashMap<u64, CellHistory>>]>,
    /// Interned model versions (a handful per process lifetime); read
    /// under the lock, appended by the writer.
    models: RwLock<Vec<Arc<str>>>,
    /// A cell without a change at or before a time was at 1.0 then: true
    /// when every cell was unpriced as the history began (a fresh start,
    /// the embedded default) or after [`Self::restore`]; false while a
    /// resumed pipeline may hold decisions this history never saw (Kafka
    /// mode before the restore), when such times answer `Outside`.
    unseen_are_unpriced: AtomicBool,
    /// Set once in Kafka mode: how far each cell is known (see [`Reach`]);
    /// unset, every cell is known up to `newest`.
    reach: OnceLock<ReachFn>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("bucket_ms", &self.bucket_ms)
            .field("newest", &self.newest.load(Relaxed))
            .field("reach", &self.reach.get().is_some())
            .finish_non_exhaustive()
    }
}

impl History {
    pub fn new(bucket_ms: i64, config: &HistoryConfig) -> Self {
        let bucket_ms = bucket_ms.max(1);
        Self {
            bucket_ms,
            retention_ticks: config.retention_ms / bucket_ms,
            max_changes: config.max_changes_per_cell.max(1),
            base: AtomicI64::new(i64::MIN),
            covered_from: AtomicI64::new(i64::MAX),
            newest: AtomicI64::new(i64::MIN),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            models: RwLock::default(),
            unseen_are_unpriced: AtomicBool::new(true),
            reach: OnceLock::new(),
        }
    }

    /// Bounds what is answered per cell (Kafka mode; see [`Reach`]). Set
    /// before any restore: from then on, restored and tailed decisions do
    /// not move the newest tick. A second call is ignored (`false`).
    pub fn set_reach(&self, reach: ReachFn) -> bool {
        self.reach.set(reach).is_ok()
    }

    /// Answers start at `tick` at the latest: every cell's decisions from
    /// it on are known (a tail proved them; used when nothing was
    /// restored).
    pub fn cover_from(&self, tick: Tick) {
        self.covered_from.fetch_min(tick.0, Relaxed);
    }

    /// The newest tick whose decisions for `cell` are all known here.
    fn known_tick(&self, cell: CellId) -> Option<i64> {
        let newest = self.newest.load(Relaxed);
        let newest = (newest != i64::MIN).then_some(newest);
        match self.reach.get().map(|r| r(cell)) {
            None => newest,
            Some(Reach { through, owned }) => {
                let through = through.map(|t| t.0);
                if owned { through.max(newest) } else { through }
            }
        }
    }

    /// Records one decision read from the prices topic (any instance's,
    /// this one's included, in any order): idempotent with what this
    /// instance published, keyed by (cell, tick). Does not move the newest
    /// tick; `false` when it does not parse.
    pub fn record_update(&self, u: &PriceUpdate) -> bool {
        self.parse_and_record(u).is_some()
    }

    /// See [`History`]'s `unseen_are_unpriced`: `false` for a pipeline
    /// resumed from a snapshot or committed offsets, until restored.
    pub fn set_unseen_are_unpriced(&self, v: bool) {
        self.unseen_are_unpriced.store(v, Relaxed);
    }

    pub fn bucket_ms(&self) -> i64 {
        self.bucket_ms
    }

    /// Records one published tick: its decisions, and that every cell
    /// without one kept its multiplier. Prunes one shard.
    pub fn publish(&self, tick: Tick, decisions: &[PriceDecision]) {
        self.covered_from.fetch_min(tick.0, Relaxed);
        for d in decisions {
            self.record(
                d.cell.as_u64(),
                d.tick,
                d.multiplier.twentieths(),
                &d.model_version,
            );
        }
        self.newest.fetch_max(tick.0, Relaxed);
        let shard = tick.0.rem_euclid(SHARDS as i64) as usize;
        self.prune_shard(shard, Tick(tick.0.saturating_sub(self.retention_ticks)));
    }

    /// Fills the history from `PriceUpdate`s (any order; e.g. the prices
    /// topic read from `now − retention`, or the Redis price table), which
    /// hold every change from tick `complete_from` on and, for every cell
    /// not at 1.0 then, the change in force at it (the compacted topic from
    /// its start, or Redis's current table for `complete_from` = its
    /// newest tick). Answers then start
    /// at `complete_from` (or earlier, if this process had published
    /// earlier ticks). Updates that do not parse are skipped and counted.
    pub fn restore<'a>(
        &self,
        updates: impl IntoIterator<Item = &'a PriceUpdate>,
        complete_from: Tick,
    ) -> RestoreStats {
        let mut stats = RestoreStats::default();
        let mut newest = i64::MIN;
        for u in updates {
            match self.restore_one(u) {
                Some(_) => {
                    stats.applied += 1;
                    newest = newest.max(u.tick);
                }
                None => stats.skipped += 1,
            }
        }
        self.finish_restore(complete_from, newest);
        stats
    }

    /// Records one update; its cell, or `None` when it does not parse.
    /// Without a [`Reach`] (one process prices everything) a restored
    /// tick is known everywhere, so it moves the newest tick.
    fn restore_one(&self, u: &PriceUpdate) -> Option<u64> {
        let cell = self.parse_and_record(u)?;
        if self.reach.get().is_none() {
            self.newest.fetch_max(u.tick, Relaxed);
        }
        Some(cell)
    }

    fn parse_and_record(&self, u: &PriceUpdate) -> Option<u64> {
        let cell = u64::from_str_radix(&u.cell, 16)
            .ok()
            .and_then(CellId::from_u64)?;
        let twentieths = (u.multiplier * 20.0).round();
        if !(twentieths.is_finite() && (20.0..=65_535.0).contains(&twentieths)) {
            return None;
        }
        self.record(
            cell.as_u64(),
            Tick(u.tick),
            twentieths as u32,
            &u.model_version,
        );
        Some(cell.as_u64())
    }

    /// `newest_restored`: the newest tick among the restored updates
    /// (the retention is counted back from it when no tick was published).
    fn finish_restore(&self, complete_from: Tick, newest_restored: i64) {
        self.covered_from.fetch_min(complete_from.0, Relaxed);
        self.unseen_are_unpriced.store(true, Relaxed);
        let newest = self.newest.load(Relaxed).max(newest_restored);
        if newest == i64::MIN {
            return;
        }
        let horizon = Tick(newest.saturating_sub(self.retention_ticks));
        for shard in 0..SHARDS {
            self.prune_shard(shard, horizon);
        }
    }

    /// Restores from a compacted prices topic (keyed by cell) read from its
    /// start: feed every update to [`CompactedRestore::add`], then
    /// [`CompactedRestore::finish`]. Compaction keeps at least the newest
    /// record of every cell and removes a cell's records oldest first (a
    /// record goes only when a newer one of its cell exists, and the
    /// cleaner then removes every older one too), so a cell's history is
    /// complete from its oldest record still on the topic: earlier times
    /// answer `Outside` for it, never a guess. A cell with no record was
    /// never priced (1.0). Updates are consumed one by one, so the topic
    /// is never held in memory.
    pub fn restore_compacted(&self) -> CompactedRestore<'_> {
        CompactedRestore {
            history: self,
            oldest: FxHashMap::default(),
            newest: i64::MIN,
            stats: RestoreStats::default(),
        }
    }

    fn rel(&self, tick: Tick) -> Option<i32> {
        let base = match self
            .base
            .compare_exchange(i64::MIN, tick.0, Relaxed, Relaxed)
        {
            Ok(_) => tick.0,
            Err(b) => b,
        };
        i32::try_from(tick.0.checked_sub(base)?).ok()
    }

    fn abs(&self, rel: i32) -> Tick {
        Tick(self.base.load(Relaxed).saturating_add(i64::from(rel)))
    }

    fn model_index(&self, version: &str) -> u16 {
        if let Ok(models) = self.models.read()
            && let Some(i) = models.iter().position(|m| &**m == version)
        {
            return i as u16;
        }
        let Ok(mut models) = self.models.write() else {
            return 0;
        };
        if let Some(i) = models.iter().position(|m| &**m == version) {
            return i as u16;
        }
        // More than 65,535 model versions in one process: the last slot is
        // reused (a wrong version label, never a wrong multiplier).
        if models.len() < usize::from(u16::MAX) {
            models.push(Arc::from(version));
        }
        (models.len() - 1) as u16
    }

    fn shard(&self, cell: u64) -> &RwLock<FxHashMap<u64, CellHistory>> {
        // H3 indexes share their high bits: mix before taking the shard.
        let mixed = cell.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        &self.shards[mixed as usize % SHARDS]
    }

    fn record(&self, cell: u64, tick: Tick, twentieths: u32, model: &str) {
        let Some(rel) = self.rel(tick) else {
            return;
        };
        let change = Packed {
            tick: rel,
            twentieths: u16::try_from(twentieths).unwrap_or(u16::MAX),
            model: self.model_index(model),
        };
        let Ok(mut shard) = self.shard(cell).write() else {
            return;
        };
        let h = shard.entry(cell).or_insert_with(|| CellHistory {
            changes: Vec::new(),
            complete_from: i32::MIN,
        });
        insert_change(h, change, self.max_changes);
    }

    /// Drops what lies before `horizon`, keeping the change in force then;
    /// a cell whose only change is a 1.0 in force since before the horizon
    /// is dropped (no history answers 1.0 the same way).
    fn prune_shard(&self, shard: usize, horizon: Tick) {
        let base = self.base.load(Relaxed);
        if base == i64::MIN {
            return;
        }
        let horizon = horizon
            .0
            .saturating_sub(base)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        let Ok(mut cells) = self.shards[shard].write() else {
            return;
        };
        cells.retain(|_, h| {
            let keep_from = h.changes.partition_point(|c| c.tick <= horizon);
            if keep_from > 1 {
                h.changes.drain(..keep_from - 1);
                h.changes.shrink_to_fit();
            }
            !(h.changes.len() == 1 && h.changes[0].tick <= horizon && h.changes[0].twentieths == 20)
        });
    }

    /// The change in force at event time `at_ms` (`None`: the cell was at
    /// 1.0, unpriced).
    pub fn at(&self, cell: CellId, at_ms: i64) -> Result<Option<Change>, HistoryError> {
        let k = self.tick_at(cell, at_ms)?;
        let (changes, complete_from) = self.cell_changes(cell);
        self.check_cell(complete_from, k)?;
        let change = changes.iter().rev().find(|c| c.tick <= k).cloned();
        self.check_unseen(change.is_some(), &changes)?;
        Ok(change)
    }

    /// No change at or before the time asked: 1.0 only if unseen cells
    /// are known to be unpriced.
    fn check_unseen(&self, found: bool, changes: &[Change]) -> Result<(), HistoryError> {
        if found || self.unseen_are_unpriced.load(Relaxed) {
            return Ok(());
        }
        Err(HistoryError::Outside {
            retained_from_ms: changes.first().map(|c| c.tick.end_ms(self.bucket_ms)),
        })
    }

    /// The change in force at `from_ms` and every change after it up to
    /// `to_ms` (inclusive), oldest first; `to_ms` may lie after what is
    /// known (see [`Self::known_until_ms`]): the caller caps it.
    pub fn range(
        &self,
        cell: CellId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Option<Change>, Vec<Change>), HistoryError> {
        let k = self.tick_at(cell, from_ms)?;
        let (changes, complete_from) = self.cell_changes(cell);
        self.check_cell(complete_from, k)?;
        let at_from = changes.iter().rev().find(|c| c.tick <= k).cloned();
        self.check_unseen(at_from.is_some(), &changes)?;
        let after = changes
            .into_iter()
            .filter(|c| c.tick > k && c.tick.end_ms(self.bucket_ms) <= to_ms)
            .collect();
        Ok((at_from, after))
    }

    /// The end of the newest tick whose decisions for `cell` are all
    /// known here: answers for it stop there (see [`Reach`]).
    pub fn known_until_ms(&self, cell: CellId) -> Option<i64> {
        self.known_tick(cell)
            .map(|n| Tick(n).end_ms(self.bucket_ms))
    }

    /// The earliest time answered for any cell.
    pub fn retained_from_ms(&self) -> Option<i64> {
        let n = self.newest.load(Relaxed);
        let c = self.covered_from.load(Relaxed);
        (n != i64::MIN && c != i64::MAX)
            .then(|| Tick(c.max(n.saturating_sub(self.retention_ticks))).end_ms(self.bucket_ms))
    }

    /// The tick in force at `at_ms`: the newest whose end is at or before
    /// it, if retained and known for `cell`.
    fn tick_at(&self, cell: CellId, at_ms: i64) -> Result<Tick, HistoryError> {
        let k = Tick(at_ms.div_euclid(self.bucket_ms) - 1);
        let Some(known) = self.known_tick(cell).filter(|&n| k.0 <= n) else {
            return Err(HistoryError::NotYet {
                known_until_ms: self.known_until_ms(cell),
            });
        };
        let newest = self.newest.load(Relaxed).max(known);
        let horizon = self
            .covered_from
            .load(Relaxed)
            .max(newest.saturating_sub(self.retention_ticks));
        if k.0 < horizon {
            return Err(HistoryError::Outside {
                retained_from_ms: self.retained_from_ms(),
            });
        }
        Ok(k)
    }

    fn check_cell(&self, complete_from: Option<Tick>, k: Tick) -> Result<(), HistoryError> {
        match complete_from {
            Some(from) if k < from => {
                let global = self.retained_from_ms().unwrap_or(i64::MIN);
                Err(HistoryError::Outside {
                    retained_from_ms: Some(from.end_ms(self.bucket_ms).max(global)),
                })
            }
            _ => Ok(()),
        }
    }

    /// A cell's changes, and the tick from which they are complete when
    /// truncated.
    fn cell_changes(&self, cell: CellId) -> (Vec<Change>, Option<Tick>) {
        let key = cell.as_u64();
        let Ok(shard) = self.shard(key).read() else {
            return (Vec::new(), None);
        };
        let Some(h) = shard.get(&key) else {
            return (Vec::new(), None);
        };
        let models = self.models.read().map(|m| m.clone()).unwrap_or_default();
        let changes = h
            .changes
            .iter()
            .map(|c| Change {
                tick: self.abs(c.tick),
                twentieths: u32::from(c.twentieths),
                model_version: models
                    .get(usize::from(c.model))
                    .cloned()
                    .unwrap_or_else(|| Arc::from("")),
            })
            .collect();
        let complete_from = (h.complete_from != i32::MIN).then(|| self.abs(h.complete_from));
        (changes, complete_from)
    }

    /// Cells with a history, and the bytes they hold (hash tables at their
    /// capacity, change vectors at theirs; allocator overhead excluded).
    pub fn footprint(&self) -> (usize, usize) {
        let entry = std::mem::size_of::<(u64, CellHistory)>() + 1;
        let mut cells = 0;
        let mut bytes = 0;
        for s in &self.shards {
            if let Ok(map) = s.read() {
                cells += map.len();
                bytes += map.capacity() * entry;
                bytes += map
                    .values()
                    .map(|h| h.changes.capacity() * std::mem::size_of::<Packed>())
                    .sum::<usize>();
            }
        }
        (cells, bytes)
    }
}

/// Inserts a change in tick order: a change equal to the one before it
/// adds nothing; one at the same tick replaces it; above `max` the oldest
/// goes and the cell's history starts at the new oldest.
fn insert_change(h: &mut CellHistory, change: Packed, max: usize) {
    let at = h.changes.partition_point(|c| c.tick <= change.tick);
    if at > 0 {
        let prev = h.changes[at - 1];
        if prev.tick == change.tick {
            h.changes[at - 1] = change;
            return;
        }
        if (prev.twentieths, prev.model) == (change.twentieths, change.model) {
            return;
        }
    }
    // Exact growth: a cell's vector is small, rewritten rarely (once per
    // change), and doubling would waste up to half of the history's memory.
    h.changes.reserve_exact(1);
    h.changes.insert(at, change);
    if h.changes.len() > max {
        h.changes.remove(0);
        h.complete_from = h.changes[0].tick;
    }
}

/// A restore from a compacted topic in progress (see
/// [`History::restore_compacted`]).
#[derive(Debug)]
pub struct CompactedRestore<'h> {
    history: &'h History,
    /// Each restored cell's oldest tick: its history is complete from it.
    oldest: FxHashMap<u64, i64>,
    /// The newest tick restored.
    newest: i64,
    stats: RestoreStats,
}

impl CompactedRestore<'_> {
    pub fn add(&mut self, u: &PriceUpdate) {
        match self.history.restore_one(u) {
            Some(cell) => {
                self.stats.applied += 1;
                self.newest = self.newest.max(u.tick);
                let t = self.oldest.entry(cell).or_insert(u.tick);
                *t = (*t).min(u.tick);
            }
            None => self.stats.skipped += 1,
        }
    }

    /// Answers start at the oldest tick restored (each cell at its own).
    pub fn finish(self) -> RestoreStats {
        let h = self.history;
        let first = self.oldest.values().copied().min().unwrap_or(i64::MAX);
        h.finish_restore(Tick(first), self.newest);
        for (cell, tick) in self.oldest {
            let Some(rel) = h.rel(Tick(tick)) else {
                continue;
            };
            let Ok(mut shard) = h.shard(cell).write() else {
                continue;
            };
            if let Some(c) = shard.get_mut(&cell) {
                c.complete_from = c.complete_from.max(rel);
            }
        }
        self.stats
    }
}

/// What [`History::restore`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub applied: u64,
    pub skipped: u64,
}

#[cfg(test)]
mod tests;
