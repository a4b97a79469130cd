//! The in-memory price table as a sink: what HTTP and the map read.

use std::sync::Arc;

use primetime_core::{PriceDecision, Tick};

use super::Sink;
use crate::table::PriceTable;
use crate::wall_clock::wall_clock_ms;

/// Publishes each tick into the in-memory price table.
pub struct TableSink {
    table: Arc<PriceTable>,
    /// Settled cells (back at 1.0) are dropped after this many ticks.
    keep_settled_ticks: i64,
}

impl TableSink {
    pub fn new(table: Arc<PriceTable>) -> Self {
        Self {
            table,
            keep_settled_ticks: 30,
        }
    }
}

impl Sink for TableSink {
    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        self.table
            .publish(tick, tick_end_ms, wall_clock_ms(), decisions);
        if tick.0 % self.keep_settled_ticks == 0 {
            self.table
                .forget_settled(Tick(tick.0 - self.keep_settled_ticks));
        }
        Ok(())
    }
}
