//! Per-cell bucketed windows and the per-tick feature computation
//! (DESIGN §4), for the cells one shard owns.
//!
//! A tick runs in three steps so that shards never need a same-tick barrier:
//! 1. [`Shard::close_tick`] computes every cell's own window stats at tick
//!    `k` (mutating: closes buckets, prunes old ones);
//! 2. [`Shard::feature_rows`] builds the feature rows, reading neighbours'
//!    [`Summary`] of tick `k-1` through a lookup that may span shards;
//! 3. [`Shard::commit`] stores the new multipliers, making every cell's
//!    summary that of tick `k`, and evicts idle cells at 1.0.

mod export;

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::DriverId;
use crate::features::Features;
use crate::geo::{CellId, Geo, Neighbours};
use crate::policy::Multiplier;
use crate::record::{DemandKind, DriverStatus, Signal, ValidEvent};
use crate::time::{Tick, bucket_of};

/// Window lengths, in buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowParams {
    pub bucket_ms: i64,
    /// Buckets in the supply horizon (default 6 = 60 s).
    pub supply_buckets: i64,
    /// Buckets in the short demand window (default 6 = 60 s).
    pub short_buckets: i64,
    /// Buckets in the long demand window (default 30 = 300 s); the longest
    /// window, so it bounds how long a bucket is kept.
    pub long_buckets: i64,
}

/// What neighbours see of a cell: its state as of the last fired tick.
/// Absent cells read as `Summary::default()`, which is exactly the summary
/// of a cell with no counts at 1.0 — so eviction changes no feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub supply: u32,
    pub requests_5m: u32,
    pub multiplier: Multiplier,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            supply: 0,
            requests_5m: 0,
            multiplier: Multiplier::ONE,
        }
    }
}

/// A cell's own window statistics at a tick (before neighbour features).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct OwnStats {
    supply: u32,
    requests_1m: u32,
    requests_5m: u32,
    checks_1m: u32,
}

#[derive(Debug, Clone)]
struct Bucket {
    index: i64,
    requests: u32,
    checks: u32,
    /// Available drivers pinging in this bucket. Appended unsorted while the
    /// bucket is open (one push per ping); sorted and deduplicated once when
    /// the bucket is ticked, and dropped when it leaves the supply horizon.
    drivers: Vec<DriverId>,
    closed: bool,
}

impl Bucket {
    fn new(index: i64) -> Self {
        Self {
            index,
            requests: 0,
            checks: 0,
            drivers: Vec::new(),
            closed: false,
        }
    }
}

/// No slot: a neighbour that is not active in this shard.
const NO_SLOT: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct CellState {
    id: CellId,
    /// Buckets with at least one event, ascending by index, none older than
    /// the long window at the last tick.
    buckets: VecDeque<Bucket>,
    neighbours: Neighbours,
    /// The slot in [`Shard::cells`] of each neighbour active in this shard
    /// (same order as `neighbours`), [`NO_SLOT`] for the others. Kept up to
    /// date as cells come and go, so a tick reads its neighbours' summaries
    /// without a hash lookup.
    links: [u32; 6],
    /// Stats of the tick being fired (between `close_tick` and `commit`).
    pending: OwnStats,
    /// The tick `close_tick` last ran for, and whether every bucket then
    /// left was at or before `tick + 1 - long_buckets`: what `commit` of
    /// that tick drops. Lets `commit` decide eviction without reading the
    /// buckets (a cache miss per cell).
    closed_tick: i64,
    drained: bool,
}

impl CellState {
    fn set_link(&mut self, neighbour: CellId, slot: u32) {
        // H3 adjacency is symmetric, so `neighbour` lists this cell too;
        // `position` finds nothing only if that ever failed to hold.
        if let Some(j) = self
            .neighbours
            .as_slice()
            .iter()
            .position(|&n| n == neighbour)
        {
            self.links[j] = slot;
        }
    }
}

/// One feature row of a tick, with what the policy needs besides features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickRow {
    pub cell: CellId,
    pub features: Features,
    /// Mean multiplier of the neighbours at the previous tick (absent
    /// neighbours count as 1.0).
    pub neighbour_multiplier: f64,
    pub prev: Multiplier,
}

/// The cells of a set of regions and their windows.
///
/// Cells live in dense slots (`cells[i]`, `summaries[i]`) found by id
/// through `index`; each cell keeps its neighbours' slots, so the feature
/// rows of a tick read neighbours by slot (mostly nearby memory) instead of
/// six hash lookups per cell into a map of millions.
#[derive(Debug, Clone)]
pub struct Shard {
    params: WindowParams,
    geo: Geo,
    index: FxHashMap<CellId, u32>,
    cells: Vec<CellState>,
    /// As of the last fired tick, parallel to `cells` (kept apart: the
    /// neighbour reads of a tick touch only these 12 bytes per cell).
    summaries: Vec<Summary>,
    scratch: Vec<DriverId>,
    /// A snapshot export in progress ([`Self::begin_export`]).
    export: Option<export::Export>,
}

impl Shard {
    pub fn new(geo: Geo, params: WindowParams) -> Self {
        Self {
            params,
            geo,
            index: FxHashMap::default(),
            cells: Vec::new(),
            summaries: Vec::new(),
            scratch: Vec::new(),
            export: None,
        }
    }

    /// Number of active cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The active cells, in no particular order.
    pub fn cell_ids(&self) -> impl Iterator<Item = CellId> + '_ {
        self.cells.iter().map(|c| c.id)
    }

    fn slot(&self, cell: CellId) -> Option<usize> {
        self.index.get(&cell).map(|&s| s as usize)
    }

    /// Loads the cell's state, its newest bucket and that bucket's newest
    /// driver, so a later [`Self::apply`] finds them in cache. Returns what
    /// it read.
    pub fn touch(&self, cell: CellId) -> u64 {
        self.slot(cell)
            .and_then(|s| self.cells[s].buckets.back())
            .map_or(0, |b| b.drivers.last().map_or(b.index as u64, |d| d.0))
    }

    /// Summaries (as of the last fired tick) of the cells with a neighbour
    /// that `foreign` says another shard owns: what other shards need for
    /// their next tick's ring features and smoothing.
    pub fn boundary_summaries<F>(&self, foreign: F) -> Vec<(CellId, Summary)>
    where
        F: Fn(CellId) -> bool,
    {
        self.cells
            .iter()
            .zip(&self.summaries)
            .filter(|(c, _)| {
                // A neighbour active here is ours; only the others can be
                // foreign.
                c.neighbours
                    .as_slice()
                    .iter()
                    .zip(&c.links)
                    .any(|(&n, &l)| l == NO_SLOT && foreign(n))
            })
            .map(|(c, s)| (c.id, *s))
            .collect()
    }

    /// The cell's state as of the last fired tick, `None` if not active.
    pub fn summary(&self, cell: CellId) -> Option<Summary> {
        self.slot(cell).map(|s| self.summaries[s])
    }

    /// Every active cell as a plain image (snapshots), in slot order.
    pub fn export(&self) -> Vec<crate::snapshot::CellImage> {
        (0..self.cells.len()).map(|s| self.image(s)).collect()
    }

    /// Removes the cells `take` selects and returns them as images (a
    /// region moving to another shard between two ticks: the other shard
    /// [`Self::import`]s them).
    pub fn extract<F>(&mut self, take: F) -> Vec<crate::snapshot::CellImage>
    where
        F: Fn(CellId) -> bool,
    {
        // Removing cells moves others between slots.
        self.finish_export();
        let slots: Vec<usize> = (0..self.cells.len())
            .filter(|&s| take(self.cells[s].id))
            .collect();
        let images = slots.iter().map(|&s| self.image(s)).collect();
        // Highest slot first: `remove` moves the last cell into the freed
        // slot, and every selected slot above this one is already gone.
        for &s in slots.iter().rev() {
            self.remove(s);
        }
        images
    }

    fn image(&self, slot: usize) -> crate::snapshot::CellImage {
        let (c, s) = (&self.cells[slot], &self.summaries[slot]);
        crate::snapshot::CellImage {
            cell: c.id.as_u64(),
            buckets: c
                .buckets
                .iter()
                .map(|b| crate::snapshot::BucketImage {
                    index: b.index,
                    requests: b.requests,
                    checks: b.checks,
                    drivers: b.drivers.iter().map(|d| d.0).collect(),
                    closed: b.closed,
                })
                .collect(),
            supply: s.supply,
            requests_5m: s.requests_5m,
            multiplier: s.multiplier.twentieths(),
        }
    }

    /// Adds the cells of [`Self::export`] images (of this shard or of
    /// others: a shard may import the cells of several). Checks every
    /// image first; on error nothing is added.
    pub fn import(
        &mut self,
        cells: &[crate::snapshot::CellImage],
    ) -> Result<(), crate::snapshot::ImageError> {
        use crate::snapshot::ImageError;
        let mut ids = Vec::with_capacity(cells.len());
        let mut seen = rustc_hash::FxHashSet::default();
        for c in cells {
            let id = CellId::from_u64(c.cell)
                .filter(|id| id.resolution() == self.geo.price_resolution())
                .ok_or(ImageError::BadCell(c.cell))?;
            if !seen.insert(id) || self.index.contains_key(&id) {
                return Err(ImageError::DuplicateCell(c.cell));
            }
            if c.buckets.windows(2).any(|w| w[0].index >= w[1].index) {
                return Err(ImageError::BucketOrder(c.cell));
            }
            ids.push(id);
        }
        for (c, id) in cells.iter().zip(ids) {
            let slot = self.insert(id);
            self.cells[slot].buckets = c
                .buckets
                .iter()
                .map(|b| Bucket {
                    index: b.index,
                    requests: b.requests,
                    checks: b.checks,
                    drivers: b.drivers.iter().map(|&d| DriverId(d)).collect(),
                    closed: b.closed,
                })
                .collect();
            self.summaries[slot] = Summary {
                supply: c.supply,
                requests_5m: c.requests_5m,
                multiplier: Multiplier::from_twentieths(c.multiplier),
            };
        }
        Ok(())
    }

    /// A new active cell in the last slot, linked with its active
    /// neighbours.
    fn insert(&mut self, id: CellId) -> usize {
        let slot = self.cells.len();
        let slot_u32 = u32::try_from(slot).unwrap_or(NO_SLOT - 1);
        let neighbours = self.geo.neighbours(id);
        let mut links = [NO_SLOT; 6];
        for (link, n) in links.iter_mut().zip(neighbours.as_slice()) {
            if let Some(&t) = self.index.get(n) {
                *link = t;
                self.cells[t as usize].set_link(id, slot_u32);
            }
        }
        self.index.insert(id, slot_u32);
        self.cells.push(CellState {
            id,
            buckets: VecDeque::new(),
            neighbours,
            links,
            pending: OwnStats::default(),
            closed_tick: i64::MIN,
            drained: false,
        });
        self.summaries.push(Summary::default());
        slot
    }

    /// Removes the cell in `slot`; the last cell moves into it.
    fn remove(&mut self, slot: usize) {
        let (id, links) = (self.cells[slot].id, self.cells[slot].links);
        for &t in links.iter().filter(|&&t| t != NO_SLOT) {
            self.cells[t as usize].set_link(id, NO_SLOT);
        }
        self.index.remove(&id);
        self.cells.swap_remove(slot);
        self.summaries.swap_remove(slot);
        if let Some(moved) = self.cells.get(slot) {
            let (id, links) = (moved.id, moved.links);
            let slot_u32 = slot as u32;
            self.index.insert(id, slot_u32);
            for &t in links.iter().filter(|&&t| t != NO_SLOT) {
                self.cells[t as usize].set_link(id, slot_u32);
            }
        }
    }

    /// Adds an admitted event (with its effective, possibly re-timed time).
    /// The caller guarantees its bucket has not been ticked. Pings of
    /// drivers that are not available change nothing and create no cell.
    pub fn apply(&mut self, event: &ValidEvent) {
        let driver = match event.signal {
            Signal::Driver {
                status: DriverStatus::Available,
                driver,
            } => Some(driver),
            Signal::Driver { .. } => return,
            Signal::Demand(_) => None,
        };
        let slot = match self.slot(event.cell) {
            Some(s) => {
                self.before_change(s);
                s
            }
            None => self.insert(event.cell),
        };
        let cell = &mut self.cells[slot];
        // A bucket may be added: `drained` no longer holds.
        cell.closed_tick = i64::MIN;
        let index = bucket_of(event.time.0, self.params.bucket_ms);
        let bucket = bucket_mut(&mut cell.buckets, index);
        match (event.signal, driver) {
            (_, Some(d)) => bucket.drivers.push(d),
            (Signal::Demand(DemandKind::RideRequest), _) => bucket.requests += 1,
            (Signal::Demand(DemandKind::PriceCheck), _) => bucket.checks += 1,
            (Signal::Driver { .. }, None) => {}
        }
    }

    /// Step 1 of a tick: every cell's own window stats at `tick`.
    pub fn close_tick(&mut self, tick: Tick) {
        self.finish_export();
        let p = self.params;
        let k = tick.0;
        // In blocks: first a tight loop that only loads each cell's oldest
        // bucket (independent cache misses overlap), then the work.
        const BLOCK: usize = 16;
        for block in self.cells.chunks_mut(BLOCK) {
            let mut touched = 0i64;
            for cell in block.iter() {
                touched ^= cell.buckets.front().map_or(0, |b| b.index);
            }
            std::hint::black_box(touched);
            for cell in block {
                close_cell(cell, p, k, &mut self.scratch);
            }
        }
    }

    /// Step 2 of a tick: the feature rows of every cell, appended to `out`.
    /// `lookup` answers the tick `k-1` summary of any cell, in this shard
    /// or another (`None` = not active = `Summary::default()`).
    pub fn feature_rows<F>(&self, lookup: F, out: &mut Vec<TickRow>)
    where
        F: Fn(CellId) -> Option<Summary>,
    {
        out.reserve(self.cells.len());
        let summaries = &self.summaries[..];
        for (cell, own) in self.cells.iter().zip(summaries) {
            let mut supply_ring = 0u32;
            let mut requests_ring = 0u32;
            let mut mult_sum = 0u32;
            let ns = cell.neighbours.as_slice();
            for (&n, &link) in ns.iter().zip(&cell.links) {
                let s = match summaries.get(link as usize) {
                    Some(s) => *s,
                    None => lookup(n).unwrap_or_default(),
                };
                supply_ring += s.supply;
                requests_ring += s.requests_5m;
                mult_sum += s.multiplier.twentieths();
            }
            let neighbour_multiplier = if ns.is_empty() {
                1.0
            } else {
                f64::from(mult_sum) / 20.0 / ns.len() as f64
            };
            let prev = own.multiplier;
            out.push(TickRow {
                cell: cell.id,
                features: Features {
                    supply: cell.pending.supply,
                    requests_1m: cell.pending.requests_1m,
                    requests_5m: cell.pending.requests_5m,
                    checks_1m: cell.pending.checks_1m,
                    supply_ring,
                    requests_5m_ring: requests_ring,
                    prev_multiplier: prev.value(),
                },
                neighbour_multiplier,
                prev,
            });
        }
    }

    /// Step 3 of a tick: stores each cell's new multiplier (cells missing
    /// from `results` keep theirs), makes the tick's stats the summary, and
    /// evicts cells that can no longer influence anything: no bucket left
    /// for a later tick, nothing in the summary, multiplier 1.0.
    pub fn commit<I>(&mut self, tick: Tick, results: I)
    where
        I: IntoIterator<Item = (CellId, Multiplier)>,
    {
        self.finish_export();
        // `results` usually follows the order of `feature_rows` (slot
        // order): look a few slots ahead before falling back to the index.
        const SCAN: usize = 16;
        let mut next = 0;
        for (cell, m) in results {
            let end = self.cells.len().min(next + SCAN);
            let found = self.cells[next.min(end)..end]
                .iter()
                .position(|c| c.id == cell)
                .map(|i| next + i)
                .or_else(|| self.slot(cell));
            if let Some(slot) = found {
                self.summaries[slot].multiplier = m;
                next = slot + 1;
            }
        }
        let horizon = tick.0 + 1 - self.params.long_buckets;
        // Backwards, so that the cell `remove` moves into a slot has been
        // visited already. Buckets at or before `horizon` are not popped
        // here: the next `close_tick` pops exactly those first.
        for slot in (0..self.cells.len()).rev() {
            let c = &mut self.cells[slot];
            let summary = &mut self.summaries[slot];
            summary.supply = c.pending.supply;
            summary.requests_5m = c.pending.requests_5m;
            let drained = if c.closed_tick == tick.0 {
                c.drained
            } else {
                c.buckets.back().is_none_or(|b| b.index <= horizon)
            };
            if drained && *summary == Summary::default() {
                self.remove(slot);
            }
        }
    }
}

/// The cell's own window stats at tick `k`, into `cell.pending`.
fn close_cell(cell: &mut CellState, p: WindowParams, k: i64, scratch: &mut Vec<DriverId>) {
    while cell
        .buckets
        .front()
        .is_some_and(|b| b.index <= k - p.long_buckets)
    {
        cell.buckets.pop_front();
    }
    let mut s = OwnStats::default();
    let supply_from = k - p.supply_buckets;
    // Buckets with drivers in the supply horizon, and the size of the last.
    let mut supply_parts = 0;
    let mut supply_single = 0;
    for b in cell.buckets.iter_mut() {
        if b.index > k {
            break;
        }
        s.requests_5m += b.requests;
        if b.index > k - p.short_buckets {
            s.requests_1m += b.requests;
            s.checks_1m += b.checks;
        }
        if b.index > supply_from {
            if !b.closed {
                b.drivers.sort_unstable();
                b.drivers.dedup();
                b.closed = true;
            }
            if !b.drivers.is_empty() {
                supply_parts += 1;
                supply_single = b.drivers.len();
            }
        }
    }
    s.supply = match supply_parts {
        0 => 0,
        // One bucket: its sorted, deduplicated length, without reading
        // the drivers themselves.
        1 => supply_single as u32,
        _ => {
            scratch.clear();
            for b in &cell.buckets {
                if b.index > k {
                    break;
                }
                if b.index > supply_from {
                    scratch.extend_from_slice(&b.drivers);
                }
            }
            scratch.sort_unstable();
            scratch.dedup();
            scratch.len() as u32
        }
    };
    // Not needed by any later tick's supply.
    for b in cell.buckets.iter_mut() {
        if b.index > k + 1 - p.supply_buckets {
            break;
        }
        if !b.drivers.is_empty() {
            b.drivers = Vec::new();
        }
    }
    cell.pending = s;
    cell.closed_tick = k;
    cell.drained = cell
        .buckets
        .back()
        .is_none_or(|b| b.index <= k + 1 - p.long_buckets);
}

fn bucket_mut(buckets: &mut VecDeque<Bucket>, index: i64) -> &mut Bucket {
    // Events arrive nearly in order: search from the back.
    let mut pos = buckets.len();
    while pos > 0 && buckets[pos - 1].index > index {
        pos -= 1;
    }
    if pos == 0 || buckets[pos - 1].index != index {
        if buckets.capacity() == 0 {
            // A cell's first bucket: room for exactly one (a deque's first
            // growth reserves four, 192 bytes, for cells that mostly hold
            // one or two buckets). Later growth doubles as usual.
            buckets.reserve_exact(1);
        }
        buckets.insert(pos, Bucket::new(index));
        pos += 1;
    }
    &mut buckets[pos - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKey;
    use crate::time::EventTime;

    fn params() -> WindowParams {
        WindowParams {
            bucket_ms: 10_000,
            supply_buckets: 6,
            short_buckets: 6,
            long_buckets: 30,
        }
    }

    fn ev(cell: CellId, t: i64, signal: Signal) -> ValidEvent {
        ValidEvent {
            key: EventKey::of("x"),
            time: EventTime(t),
            cell,
            signal,
        }
    }

    fn driver(n: u64) -> Signal {
        Signal::Driver {
            driver: DriverId(n),
            status: DriverStatus::Available,
        }
    }

    fn tick(shard: &mut Shard, k: i64) -> Vec<TickRow> {
        shard.check_links();
        shard.close_tick(Tick(k));
        let mut rows = Vec::new();
        shard.feature_rows(|_| None, &mut rows);
        shard.commit(Tick(k), rows.iter().map(|r| (r.cell, r.prev)));
        rows
    }

    #[test]
    fn windows_count_distinct_supply_and_slide() {
        let geo = Geo::new(8, 5).unwrap();
        let cell = geo.cell_of(37.77, -122.42).unwrap();
        let mut shard = Shard::new(geo, params());
        // Driver 1 pings three times in bucket 0 and once in bucket 3;
        // driver 2 once in bucket 5. Requests in buckets 0 and 7.
        for t in [0, 4_000, 8_000, 30_000] {
            shard.apply(&ev(cell, t, driver(1)));
        }
        shard.apply(&ev(cell, 55_000, driver(2)));
        shard.apply(&ev(cell, 1_000, Signal::Demand(DemandKind::RideRequest)));
        shard.apply(&ev(cell, 75_000, Signal::Demand(DemandKind::RideRequest)));
        shard.apply(&ev(cell, 75_000, Signal::Demand(DemandKind::PriceCheck)));
        // An unavailable driver adds nothing.
        shard.apply(&ev(
            cell,
            2_000,
            Signal::Driver {
                driver: DriverId(9),
                status: DriverStatus::OnTrip,
            },
        ));

        let f = |rows: Vec<TickRow>| rows[0].features;
        let at0 = f(tick(&mut shard, 0));
        assert_eq!(
            (at0.supply, at0.requests_1m, at0.requests_5m, at0.checks_1m),
            (1, 1, 1, 0)
        );
        for k in 1..5 {
            tick(&mut shard, k);
        }
        let at5 = f(tick(&mut shard, 5));
        assert_eq!((at5.supply, at5.requests_1m, at5.requests_5m), (2, 1, 1));
        let at7 = f(tick(&mut shard, 6));
        // Bucket 0 left the 60 s windows at tick 6; driver 1 is still seen
        // in bucket 3.
        assert_eq!((at7.supply, at7.requests_1m, at7.requests_5m), (2, 0, 1));
        let at7 = f(tick(&mut shard, 7));
        assert_eq!((at7.requests_1m, at7.requests_5m, at7.checks_1m), (1, 2, 1));
        for k in 8..36 {
            tick(&mut shard, k);
        }
        assert_eq!(
            shard.len(),
            1,
            "request of bucket 7 is still in the 5 m window at tick 35"
        );
        let at36 = f(tick(&mut shard, 36));
        assert_eq!(at36.requests_5m, 1);
        tick(&mut shard, 37);
        assert!(shard.is_empty(), "idle cell at 1.0 is evicted");
    }

    impl Shard {
        /// Every link points at the slot of that neighbour, or is empty
        /// exactly when the neighbour is not active here; the index agrees
        /// with the slots.
        fn check_links(&self) {
            assert_eq!(self.index.len(), self.cells.len());
            assert_eq!(self.summaries.len(), self.cells.len());
            for (i, c) in self.cells.iter().enumerate() {
                assert_eq!(self.slot(c.id), Some(i));
                for (&n, &l) in c.neighbours.as_slice().iter().zip(&c.links) {
                    assert_eq!(self.slot(n).map(|s| s as u32).unwrap_or(NO_SLOT), l);
                }
            }
        }
    }

    #[test]
    fn links_follow_insertions_and_evictions() {
        let geo = Geo::new(8, 5).unwrap();
        let centre = geo.cell_of(37.77, -122.42).unwrap();
        let mut disk: Vec<CellId> = centre
            .index()
            .grid_disk::<Vec<_>>(6)
            .into_iter()
            .filter_map(|c| CellId::from_u64(u64::from(c)))
            .collect();
        // A pentagon (five neighbours) and its neighbourhood too.
        let pentagon = h3o::Resolution::Eight.pentagons().next().unwrap();
        disk.extend(
            pentagon
                .grid_disk::<Vec<_>>(2)
                .into_iter()
                .filter_map(|c| CellId::from_u64(u64::from(c))),
        );
        let mut shard = Shard::new(geo, params());
        // Cells come at different times, so they leave at different ticks.
        for (i, &cell) in disk.iter().enumerate() {
            let t = (i % 5) as i64 * 10_000;
            shard.apply(&ev(cell, t, Signal::Demand(DemandKind::RideRequest)));
            shard.check_links();
        }
        assert_eq!(shard.len(), disk.len());
        for k in 0..40 {
            tick(&mut shard, k);
        }
        shard.check_links();
        assert!(shard.is_empty());
    }

    #[test]
    fn out_of_order_events_land_in_their_bucket() {
        let mut buckets = VecDeque::new();
        for i in [5, 3, 9, 3, 7, 1] {
            bucket_mut(&mut buckets, i).requests += 1;
        }
        let idx: Vec<_> = buckets.iter().map(|b| (b.index, b.requests)).collect();
        assert_eq!(idx, vec![(1, 1), (3, 2), (5, 1), (7, 1), (9, 1)]);
    }
}
