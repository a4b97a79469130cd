//! Boundary-cell exchange between instances (DESIGN §7).
//!
//! Inside one process the clock hands every shard the tick `k-1` summaries
//! of all boundary cells. Across instances that split the input partitions,
//! each instance publishes its boundary cells per tick, and before firing
//! tick `k` waits until every partition it does not own is covered through
//! tick `k-1` by another instance's stats. Decisions are then identical to
//! one instance's (and to the reference `Engine`).

use primetime_core::{CellId, RegionId, Summary, Tick};
use tokio::sync::watch;

/// The transport of the exchange (Kafka: the cell-stats topic).
pub trait BoundaryExchange: Send + Sync + std::fmt::Debug {
    /// Publishes this instance's boundary summaries at `tick`, covering the
    /// ticks `(after, tick]`: at ticks strictly between, the instance had
    /// no active cell.
    fn publish(&self, after: Option<Tick>, tick: Tick, cells: &[(CellId, Summary)]);

    /// The other instances' boundary summaries at `tick`, once every
    /// partition not owned here is covered through `tick`; `None` = not
    /// yet (wait for [`Self::subscribe`] to change).
    fn foreign(&self, tick: Tick) -> Option<Vec<(CellId, Summary)>>;

    /// Changes whenever new stats arrive.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// `region` is owned by another instance: this instance's cells next to
    /// it are boundary cells.
    fn is_foreign(&self, region: RegionId) -> bool;

    /// Older ticks are no longer needed (memory bound).
    fn forget_before(&self, _tick: Tick) {}
}
