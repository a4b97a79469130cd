//! The Redis price sink: every decision into the shared Redis price table
//! (newest tick wins, see [`crate::redis`]).

use primetime_core::{PriceDecision, Tick};
use prost::Message as _;

use super::Sink;
use crate::redis::{RedisStore, StoredPrice};

/// Writes every decision into the Redis price table. Never blocks: the
/// store queues (coalescing per cell) and writes on its own thread.
pub struct RedisPriceSink {
    store: RedisStore,
}

impl RedisPriceSink {
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }
}

impl Sink for RedisPriceSink {
    fn publish(
        &mut self,
        _tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        if decisions.is_empty() {
            return Ok(());
        }
        let prices = decisions
            .iter()
            .map(|d| StoredPrice {
                cell: d.cell.to_string(),
                tick: d.tick,
                payload: primetime_proto::price_update(d, tick_end_ms).encode_to_vec(),
            })
            .collect();
        // Queued, never blocking: while Redis is down the newest price per
        // cell waits and is written when it returns.
        self.store.put_prices(prices);
        Ok(())
    }
}
