//! The single-threaded reference engine: records in, ordered price
//! decisions out. Every deployment of primetime (actors, Kafka, several
//! instances) must reproduce its output exactly.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::controls::{Control, ControlId, ControlRecord, ControlSet, Effect, LogError};
use crate::features::{FeatureRow, Features};
use crate::geo::{CellId, Geo, RegionId};
use crate::model::{FormulaModel, PriceModel};
use crate::partition::PartitionState;
use crate::policy::{Adjustment, Multiplier, Policy};
use crate::record::{RawRecord, Reason, RejectCounts, ValidEvent, Validator};
use crate::time::{IngestTime, Tick, Watermark};
use crate::window::{Shard, Summary, TickRow};

/// Why a decision has the value it has (DESIGN §1.6).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub features: Features,
    /// The model's raw output (the formula's when `fallback`).
    pub raw: f64,
    /// The fallback formula replaced a failed or non-finite model output.
    pub fallback: bool,
    /// The multiplier before this tick.
    pub previous: Multiplier,
    /// Every guardrail that changed the value, in order.
    pub guardrails: Vec<Adjustment>,
    /// The operator controls that decided the value, when one changed it
    /// (absent otherwise, so decisions without controls serialise as
    /// before).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<ControlId>,
}

/// A published price: the multiplier of `cell` from `tick` on. Keyed and
/// versioned by `(cell, tick)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceDecision {
    pub cell: CellId,
    pub tick: Tick,
    pub multiplier: Multiplier,
    pub model_version: Arc<str>,
    pub explanation: Explanation,
}

/// Counters an operator (and a test) can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub accepted: u64,
    pub rejected: RejectCounts,
    /// Ticks fired. Ticks while no cell is active are skipped; which of
    /// those exist can depend on arrival order, so this count (unlike the
    /// decisions) is not part of the deterministic output.
    pub ticks_fired: u64,
    /// Ticks whose batch the model failed (priced by the formula).
    pub model_failures: u64,
    pub decisions: u64,
}

/// Which of `shards` shards owns `region`. A fixed, documented hash so that
/// every component routes the same way.
///
/// Fibonacci hashing: the product's top 32 bits depend on every bit of the
/// region, and they are scaled to `0..shards` (multiply-shift) rather than
/// reduced modulo. `(mixed >> 32) % shards` kept bit 32 alone for two
/// shards, which depends only on the region's last H3 digit (the lower
/// digits of a resolution-5 index are all 7): 3 of 7 sibling regions went
/// to one shard and 4 to the other, a 43/57 split of any city's cells.
pub fn shard_of(region: RegionId, shards: usize) -> usize {
    debug_assert!(shards > 0);
    let mixed = region.as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Both factors are below 2^32: the product fits, the result is below
    // `shards`.
    (((mixed >> 32) * (shards as u64 & 0xFFFF_FFFF)) >> 32) as usize
}

/// The reference engine. `M` is the pricing model; [`FormulaModel`] by
/// default.
///
/// Input is `(partition, offset, ingest time, record)` in any interleaving
/// of partitions that keeps each partition's own order; the decisions are
/// the same for every such interleaving and every shard count.
pub struct Engine<M: PriceModel = FormulaModel> {
    config: Config,
    geo: Geo,
    validator: Validator,
    partitions: Vec<PartitionState>,
    shards: Vec<Shard>,
    pricer: TickPricer,
    model: M,
    /// The next tick to fire; `None` while no cell is active (the first
    /// tick then is the oldest bucket holding data).
    next_tick: Option<i64>,
    /// The oldest bucket that received an event while `next_tick` was
    /// `None`: where ticking starts.
    first_bucket: Option<i64>,
    finished: bool,
    stats: EngineStats,
    out: Vec<PriceDecision>,
    rows: Vec<Vec<TickRow>>,
    /// Every fired tick's feature rows, when recording (datasets).
    recorded: Option<Vec<(Tick, TickRow)>>,
}

impl Engine<FormulaModel> {
    /// An engine priced by the fallback formula.
    pub fn with_formula(
        config: Config,
        partitions: u32,
        shards: usize,
    ) -> Result<Self, ConfigError> {
        let model = FormulaModel::new(config.policy.fallback);
        Self::new(config, partitions, shards, model)
    }
}

impl<M: PriceModel> Engine<M> {
    /// An engine over `partitions` input partitions (numbered from 0) and
    /// `shards` cell shards (at least 1; results do not depend on it).
    pub fn new(
        config: Config,
        partitions: u32,
        shards: usize,
        model: M,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let geo = config.geo();
        let shards = shards.max(1);
        Ok(Self {
            validator: Validator::new(geo, config.max_future_skew_ms, config.max_event_delay_ms),
            partitions: (0..partitions)
                .map(|_| PartitionState::new(config.partition_params()))
                .collect(),
            shards: (0..shards)
                .map(|_| Shard::new(geo, config.window_params()))
                .collect(),
            pricer: TickPricer::new(Policy::new(config.policy), model.version())
                .with_controls(Arc::new(ControlSet::new(config.bucket_ms))),
            model,
            geo,
            config,
            next_tick: None,
            first_bucket: None,
            finished: false,
            stats: EngineStats::default(),
            out: Vec::new(),
            rows: vec![Vec::new(); shards],
            recorded: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The first tick that has not fired: no tick before it will ever fire
    /// (its end is at or below the service watermark, or it is before the
    /// next tick). Where the control log stamps records (DESIGN §6a).
    pub fn first_unfired_tick(&self) -> Tick {
        let wm = self.service_watermark();
        let by_wm = if wm == Watermark::MIN {
            i64::MIN
        } else {
            wm.0.div_euclid(self.config.bucket_ms)
        };
        Tick(self.next_tick.map_or(by_wm, |n| n.max(by_wm)))
    }

    /// The operator controls this engine prices under.
    pub fn controls(&self) -> &ControlSet {
        self.pricer.controls()
    }

    /// Issues `control` as the log's authority: it applies from
    /// [`Self::first_unfired_tick`] on, and its record says so.
    pub fn issue_control(
        &mut self,
        control: Control,
        recorded_at: i64,
    ) -> Result<ControlRecord, LogError> {
        let tick = self.first_unfired_tick();
        self.pricer.controls_mut().issue(control, tick, recorded_at)
    }

    /// Revokes control `id` from [`Self::first_unfired_tick`] on.
    pub fn revoke_control(
        &mut self,
        id: ControlId,
        recorded_at: i64,
        author: String,
        reason: String,
    ) -> Result<ControlRecord, LogError> {
        let tick = self.first_unfired_tick();
        self.pricer
            .controls_mut()
            .revoke(id, tick, recorded_at, author, reason)
    }

    /// Applies a record stamped elsewhere (a replay applies the whole log
    /// before its input); refused if its tick has already fired here.
    pub fn apply_control(&mut self, record: ControlRecord) -> Result<(), LogError> {
        let tick = self.first_unfired_tick();
        self.pricer.controls_mut().apply(record, tick)
    }

    pub fn geo(&self) -> &Geo {
        &self.geo
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Processes one record. Ticks whose end the service watermark passes
    /// fire before this returns; their decisions wait in
    /// [`Self::take_decisions`].
    ///
    /// # Panics
    /// If `partition >= partition_count()`: the partition set is fixed at
    /// construction (a partition appearing later could hold records older
    /// than ticks already fired), so this is a caller bug, not bad input.
    pub fn push(
        &mut self,
        partition: u32,
        offset: i64,
        ingest: IngestTime,
        record: &RawRecord,
    ) -> Result<(), Reason> {
        let validated = self.validator.validate(ingest, record);
        self.admit(partition, offset, validated)
    }

    /// Processes records in order, exactly as the same sequence of
    /// [`Self::push`] calls would (same decisions, same counters), but
    /// faster: it validates a block of records first (H3 indexing is pure
    /// computation) and touches the dedup and cell memory each will need,
    /// so those cache misses overlap instead of stalling one by one.
    /// Appends one outcome per record to `outcomes`.
    ///
    /// # Panics
    /// As [`Self::push`], on an unknown partition.
    pub fn push_batch<'r, I>(&mut self, records: I, outcomes: &mut Vec<Result<(), Reason>>)
    where
        I: IntoIterator<Item = (u32, i64, IngestTime, &'r RawRecord)>,
    {
        const BLOCK: usize = 128;
        let mut block: Vec<(u32, i64, Result<ValidEvent, Reason>)> = Vec::with_capacity(BLOCK);
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            block.clear();
            block.extend(records.by_ref().take(BLOCK).map(
                |(partition, offset, ingest, record)| {
                    (partition, offset, self.validator.validate(ingest, record))
                },
            ));
            // A tight loop of independent loads, separate from the
            // validation above: short iterations let the CPU keep many
            // cache misses in flight at once.
            let mut touched = 0u64;
            for (partition, _, validated) in &block {
                if let Ok(e) = validated {
                    touched ^= self.partitions[*partition as usize].touch(e.key);
                }
            }
            for (_, _, validated) in &block {
                if let Ok(e) = validated {
                    touched ^= self.shards[self.shard_index(e.cell)].touch(e.cell);
                }
            }
            std::hint::black_box(touched);
            for (partition, offset, validated) in block.drain(..) {
                outcomes.push(self.admit(partition, offset, validated));
            }
        }
    }

    fn admit(
        &mut self,
        partition: u32,
        offset: i64,
        validated: Result<ValidEvent, Reason>,
    ) -> Result<(), Reason> {
        let p = &mut self.partitions[partition as usize];
        if self.finished {
            // Every tick has fired: nothing can be counted any more.
            p.observe_offset(offset);
            self.stats.rejected.add(Reason::Late);
            return Err(Reason::Late);
        }
        let event = match validated {
            Ok(e) => e,
            Err(reason) => {
                p.observe_offset(offset);
                self.stats.rejected.add(reason);
                return Err(reason);
            }
        };
        let before = p.watermark();
        let event = match p.admit(offset, event) {
            Ok(e) => e,
            Err(reason) => {
                self.stats.rejected.add(reason);
                return Err(reason);
            }
        };
        let advanced = p.watermark() > before;
        let shard = self.shard_index(event.cell);
        self.shards[shard].apply(&event);
        if self.next_tick.is_none() {
            let b = crate::time::bucket_of(event.time.0, self.config.bucket_ms);
            self.first_bucket = Some(self.first_bucket.map_or(b, |f| f.min(b)));
        }
        self.stats.accepted += 1;
        if advanced {
            self.advance();
        }
        Ok(())
    }

    /// Counts a record that could not be decoded at all.
    pub fn push_malformed(&mut self, partition: u32, offset: i64) {
        self.partitions[partition as usize].observe_offset(offset);
        self.stats.rejected.add(Reason::Malformed);
    }

    /// End of input: every partition's watermark goes to +∞ and ticks fire
    /// until no cell is active (windows empty, every multiplier back to 1.0).
    pub fn finish(&mut self) {
        self.finished = true;
        self.advance();
    }

    /// Records the feature rows of every cell at every tick from now on
    /// (the training dataset: same code path as serving), for
    /// [`Self::take_rows`].
    pub fn record_rows(&mut self) {
        self.recorded.get_or_insert_with(Vec::new);
    }

    /// Rows recorded since the last call, by tick then cell.
    pub fn take_rows(&mut self) -> Vec<(Tick, TickRow)> {
        self.recorded
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Decisions made so far, in order: by tick, then by cell.
    pub fn take_decisions(&mut self) -> Vec<PriceDecision> {
        std::mem::take(&mut self.out)
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Min over partition watermarks (`MAX` after [`Self::finish`]).
    pub fn service_watermark(&self) -> Watermark {
        if self.finished {
            return Watermark::MAX;
        }
        self.partitions
            .iter()
            .map(PartitionState::watermark)
            .min()
            .unwrap_or(Watermark::MIN)
    }

    /// The per-partition state (watermark, last offset).
    pub fn partition(&self, partition: u32) -> Option<&PartitionState> {
        self.partitions.get(partition as usize)
    }

    /// Cells currently holding window state or a multiplier above 1.0.
    pub fn active_cells(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }

    /// The next tick that will fire, if any cell is active.
    pub fn next_tick(&self) -> Option<Tick> {
        self.next_tick.map(Tick)
    }

    /// The cell's state as of the last fired tick.
    pub fn summary(&self, cell: CellId) -> Summary {
        self.shards[self.shard_index(cell)]
            .summary(cell)
            .unwrap_or_default()
    }

    /// The engine's state as a plain image (between two records).
    pub fn export(&self) -> crate::snapshot::EngineImage {
        crate::snapshot::EngineImage {
            partitions: self.partitions.iter().map(PartitionState::export).collect(),
            cells: self.shards.iter().flat_map(Shard::export).collect(),
            next_tick: self.next_tick,
            first_bucket: self.first_bucket,
        }
    }

    /// Replaces a fresh engine's state with `image`; feeding it the
    /// records after the image's point gives the decisions the exported
    /// engine gives. On error the engine is unchanged.
    pub fn import(
        &mut self,
        image: &crate::snapshot::EngineImage,
    ) -> Result<(), crate::snapshot::ImageError> {
        let n = self.shards.len();
        let mut per_shard = vec![Vec::new(); n];
        for c in &image.cells {
            let shard = match CellId::from_u64(c.cell) {
                Some(id) if n > 1 => shard_of(self.geo.region_of(id), n),
                _ => 0,
            };
            per_shard[shard].push(c.clone());
        }
        let mut shards: Vec<Shard> = (0..n)
            .map(|_| Shard::new(self.geo, self.config.window_params()))
            .collect();
        for (shard, cells) in shards.iter_mut().zip(&per_shard) {
            shard.import(cells)?;
        }
        self.shards = shards;
        let params = self.config.partition_params();
        for (p, img) in self.partitions.iter_mut().zip(&image.partitions) {
            *p = PartitionState::import(params, img);
        }
        self.next_tick = image.next_tick;
        self.first_bucket = image.first_bucket;
        Ok(())
    }

    fn shard_index(&self, cell: CellId) -> usize {
        if self.shards.len() == 1 {
            0
        } else {
            shard_of(self.geo.region_of(cell), self.shards.len())
        }
    }

    fn advance(&mut self) {
        let wm = self.service_watermark();
        if wm == Watermark::MIN {
            return;
        }
        let bucket_ms = self.config.bucket_ms;
        loop {
            if self.active_cells() == 0 {
                // Empty ticks would change nothing: start again from the
                // oldest bucket of the next data.
                self.next_tick = None;
                self.first_bucket = None;
                return;
            }
            let Some(k) = self.next_tick.or(self.first_bucket) else {
                return;
            };
            if Tick(k).end_ms(bucket_ms) > wm.0 {
                return;
            }
            self.fire(Tick(k));
            self.next_tick = Some(k + 1);
        }
    }

    fn fire(&mut self, tick: Tick) {
        for shard in &mut self.shards {
            shard.close_tick(tick);
        }
        {
            let shards = &self.shards;
            let geo = &self.geo;
            let n = shards.len();
            for (i, rows) in self.rows.iter_mut().enumerate() {
                rows.clear();
                shards[i].feature_rows(
                    |c| {
                        if n == 1 {
                            None
                        } else {
                            shards[shard_of(geo.region_of(c), n)].summary(c)
                        }
                    },
                    rows,
                );
            }
        }
        if let Some(recorded) = &mut self.recorded {
            let first = recorded.len();
            recorded.extend(self.rows.iter().flatten().map(|r| (tick, *r)));
            recorded[first..].sort_unstable_by_key(|(_, r)| r.cell);
        }
        let first = self.out.len();
        let mut failed = false;
        for (i, rows) in self.rows.iter().enumerate() {
            let priced = self.pricer.price(&self.model, tick, rows, &mut self.out);
            failed |= priced.model_failed;
            self.shards[i].commit(tick, priced.changed);
        }
        if failed {
            self.stats.model_failures += 1;
        }
        self.out[first..].sort_unstable_by_key(|d| d.cell);
        self.stats.ticks_fired += 1;
        self.stats.decisions += (self.out.len() - first) as u64;
    }
}

/// What pricing one shard's rows produced.
#[derive(Debug, Default)]
pub struct Priced {
    /// Cells whose multiplier changed, for [`Shard::commit`].
    pub changed: Vec<(CellId, Multiplier)>,
    /// The model failed for this batch; the formula priced it.
    pub model_failed: bool,
}

/// Model + policy over a batch of [`TickRow`]s, producing decisions for
/// the cells whose multiplier changes. Shared by the reference engine and
/// the service's shard actors, so both price with the same code.
#[derive(Debug)]
pub struct TickPricer {
    policy: Policy,
    model_version: Arc<str>,
    /// Model input of one chunk.
    input: Vec<FeatureRow>,
    /// Model output of one chunk.
    chunk_raw: Vec<f32>,
    /// Model output of every row.
    raw: Vec<f32>,
    /// Every row's new multiplier.
    multipliers: Vec<Multiplier>,
    /// The operator controls (DESIGN §6a); shared, replaced on change.
    controls: Arc<ControlSet>,
    /// Every row's control effect at the tick being priced (empty when no
    /// control is in force).
    effects: Vec<Option<Effect>>,
}

impl TickPricer {
    /// Rows per model call (a multiple of the ONNX model's largest plan,
    /// 4,096 rows).
    const MODEL_CHUNK: usize = 16_384;

    pub fn new(policy: Policy, model_version: &str) -> Self {
        Self {
            policy,
            model_version: Arc::from(model_version),
            input: Vec::new(),
            chunk_raw: Vec::new(),
            raw: Vec::new(),
            multipliers: Vec::new(),
            controls: Arc::new(ControlSet::new(1)),
            effects: Vec::new(),
        }
    }

    /// Prices under `controls` (whose `bucket_ms` must be the ticks'):
    /// a new pricer has an empty set.
    pub fn with_controls(mut self, controls: Arc<ControlSet>) -> Self {
        self.controls = controls;
        self
    }

    /// Prices under `controls` from now on (every tick after this call).
    pub fn set_controls(&mut self, controls: Arc<ControlSet>) {
        self.controls = controls;
    }

    pub fn controls(&self) -> &Arc<ControlSet> {
        &self.controls
    }

    /// The control set, to append to (copied first if shared).
    pub fn controls_mut(&mut self) -> &mut ControlSet {
        Arc::make_mut(&mut self.controls)
    }

    pub fn model_version(&self) -> &Arc<str> {
        &self.model_version
    }

    /// Prices `rows` at `tick`; appends a decision per changed cell to `out`
    /// (in row order). The model's output for a row must depend on that
    /// row only (see [`PriceModel`]).
    pub fn price<M: PriceModel + ?Sized>(
        &mut self,
        model: &M,
        tick: Tick,
        rows: &[TickRow],
        out: &mut Vec<PriceDecision>,
    ) -> Priced {
        // The model sees the rows in chunks: the input rows of one chunk stay
        // in cache, and a row's output depends on that row only (the
        // `PriceModel` contract), so chunking changes no value. A failure
        // of any chunk fails the whole batch, as one call would.
        self.raw.clear();
        let mut ok = true;
        // An empty batch is still one call, as before chunking: a failed
        // model reports its failure for it.
        let empty: &[TickRow] = &[];
        let chunks = rows.chunks(Self::MODEL_CHUNK);
        let chunks = chunks.chain(rows.is_empty().then_some(empty));
        for chunk in chunks {
            self.input.clear();
            self.input.extend(chunk.iter().map(|r| r.features.to_row()));
            ok = matches!(model.predict(&self.input, &mut self.chunk_raw), Ok(()) if self.chunk_raw.len() == chunk.len());
            if !ok {
                break;
            }
            self.raw.extend_from_slice(&self.chunk_raw);
        }
        let raw = |j: usize| ok.then(|| f64::from(self.raw[j]));
        // Controls in force at this tick, looked up per row only when there
        // are any (the common case prices without a lookup).
        self.effects.clear();
        let active = self.controls.at(tick);
        if !active.is_empty() {
            self.effects
                .extend(rows.iter().map(|row| active.effect(row.cell)));
        }
        let effects = &self.effects;
        let effect = |j: usize| effects.get(j).and_then(Option::as_ref);
        // Two passes: the first computes every multiplier without
        // recording guardrails and counts the changed cells, so that `out`
        // and `changed` grow once, to their exact size (growing by doubling
        // copied and page-faulted hundreds of MB on big ticks); the second
        // decides only the changed rows again (the same code, so the same
        // multiplier) and builds their decisions.
        self.multipliers.clear();
        self.multipliers
            .extend(rows.iter().enumerate().map(|(j, row)| {
                self.policy.multiplier_controlled(
                    &row.features,
                    raw(j),
                    row.neighbour_multiplier,
                    row.prev,
                    effect(j),
                )
            }));
        let changes = rows
            .iter()
            .zip(&self.multipliers)
            .filter(|(row, m)| **m != row.prev)
            .count();
        let mut changed = Vec::with_capacity(changes);
        out.reserve(changes);
        for (j, (row, &m)) in rows.iter().zip(&self.multipliers).enumerate() {
            if m == row.prev {
                continue;
            }
            let v = self.policy.decide_controlled(
                &row.features,
                raw(j),
                row.neighbour_multiplier,
                row.prev,
                effect(j),
            );
            let controlled = v.adjustments.iter().any(|a| a.guardrail.is_control());
            let controls = match effect(j) {
                Some(e) if controlled => e.deciding().collect(),
                _ => Vec::new(),
            };
            debug_assert_eq!(v.multiplier, m);
            changed.push((row.cell, v.multiplier));
            let mut guardrails = Vec::with_capacity(v.adjustments.len());
            guardrails.extend(v.adjustments.iter());
            out.push(PriceDecision {
                cell: row.cell,
                tick,
                multiplier: v.multiplier,
                model_version: Arc::clone(&self.model_version),
                explanation: Explanation {
                    features: row.features,
                    raw: v.raw,
                    fallback: v.fallback,
                    previous: row.prev,
                    guardrails,
                    controls,
                },
            });
        }
        Priced {
            changed,
            model_failed: !ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelError;
    use crate::policy::PolicyParams;

    /// Fails every batch, empty ones included.
    struct Broken;

    impl PriceModel for Broken {
        fn version(&self) -> &str {
            "broken"
        }

        fn predict(&self, _: &[FeatureRow], _: &mut Vec<f32>) -> Result<(), ModelError> {
            Err(ModelError {
                version: "broken".to_owned(),
                message: "always".to_owned(),
            })
        }
    }

    fn rows(n: usize) -> Vec<TickRow> {
        let cell = Geo::new(8, 5).unwrap().cell_of(37.77, -122.42).unwrap();
        (0..n)
            .map(|i| {
                let i = i as u32;
                TickRow {
                    cell,
                    features: Features {
                        supply: i % 5,
                        requests_1m: i % 11,
                        requests_5m: i % 23,
                        checks_1m: i % 7,
                        supply_ring: i % 31,
                        requests_5m_ring: i % 43,
                        prev_multiplier: f64::from(20 + i % 9) / 20.0,
                    },
                    neighbour_multiplier: 1.0 + f64::from(i % 13) / 20.0,
                    prev: Multiplier::from_twentieths(20 + i % 9),
                }
            })
            .collect()
    }

    /// Pricing a big batch (several model chunks) gives the decisions of
    /// pricing each row alone.
    #[test]
    fn big_batches_price_like_single_rows() {
        let model = FormulaModel::default();
        let mut pricer = TickPricer::new(Policy::new(PolicyParams::default()), "formula-v1");
        let rows = rows(40_000);
        let mut all = Vec::new();
        let priced = pricer.price(&model, Tick(7), &rows, &mut all);
        assert!(!priced.model_failed);
        assert!(!all.is_empty() && all.len() < rows.len());
        assert_eq!(all.len(), priced.changed.len());
        let mut one_by_one = Vec::new();
        for row in &rows {
            pricer.price(&model, Tick(7), std::slice::from_ref(row), &mut one_by_one);
        }
        assert_eq!(all, one_by_one);
    }

    #[test]
    fn a_failed_model_fails_every_batch_even_empty() {
        let mut pricer = TickPricer::new(Policy::new(PolicyParams::default()), "broken");
        let mut out = Vec::new();
        assert!(pricer.price(&Broken, Tick(1), &[], &mut out).model_failed);
        let priced = pricer.price(&Broken, Tick(1), &rows(20_000), &mut out);
        assert!(priced.model_failed);
        assert!(out.iter().all(|d| d.explanation.fallback));
    }
}
