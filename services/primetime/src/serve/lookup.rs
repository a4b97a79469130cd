//! The price lookup of `serve` in Kafka mode with Redis: this instance's
//! table for the cells it owns, the shared Redis price table for cells
//! owned elsewhere (or that memory may lack after a restart), degrading to
//! memory marked stale while Redis fails. HTTP sees only [`PriceLookup`].

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use primetime_core::{CellId, Tick};

use crate::http::{Decision, Found, PriceLookup, SharedDecision};
use crate::redis::RedisStore;
use crate::table::PriceTable;

/// The shared Redis price table, for cells this instance does not own
/// (or does not know completely after a restart).
#[derive(Clone)]
pub struct RemotePrices {
    pub store: RedisStore,
    /// Whether this instance owns (prices) the cell now.
    pub owned: Arc<dyn Fn(CellId) -> bool + Send + Sync>,
    /// The in-memory table holds every owned cell's current decision
    /// (false after a restore or rewind: cells unchanged since are only in
    /// Redis).
    pub complete: Arc<AtomicBool>,
}

/// The table, and Redis once Kafka mode has set it up (set once, after the
/// HTTP server starts: hence the `OnceLock`).
pub struct ServeLookup {
    pub table: Arc<PriceTable>,
    pub remote: Arc<OnceLock<RemotePrices>>,
}

impl PriceLookup for ServeLookup {
    fn lookup<'a>(&'a self, cells: &'a [CellId]) -> BoxFuture<'a, Vec<Found>> {
        Box::pin(self.lookup_cells(cells))
    }

    fn degraded(&self) -> Option<&'static str> {
        self.remote.get().is_some_and(|r| !r.store.is_up()).then_some(
            "redis: unreachable (prices and snapshots queued until it returns; other instances' cells answered from memory, marked stale)",
        )
    }
}

impl ServeLookup {
    async fn lookup_cells(&self, cells: &[CellId]) -> Vec<Found> {
        let mut found: Vec<Found> = cells
            .iter()
            .map(|c| Found {
                decision: self.table.get(*c).map(Decision::Table),
                degraded: false,
            })
            .collect();
        let Some(r) = self.remote.get() else {
            return found;
        };
        let complete = r.complete.load(Relaxed);
        let wanted: Vec<usize> = (0..cells.len())
            .filter(|&i| !(r.owned)(cells[i]) || (found[i].decision.is_none() && !complete))
            .collect();
        if wanted.is_empty() {
            return found;
        }
        let keys: Vec<String> = wanted.iter().map(|&i| cells[i].to_string()).collect();
        let store = r.store.clone();
        // Blocking Redis I/O off the reactor.
        let read = actix_web::web::block(move || store.get_prices(&keys)).await;
        match read {
            Ok(Ok(prices)) => {
                for (&i, p) in wanted.iter().zip(prices) {
                    let shared = p.and_then(|p| decode_shared(&p.payload));
                    found[i].decision = shared.map(Decision::Shared);
                }
            }
            // Redis failed: the memory answer, marked stale; never an error.
            _ => {
                for &i in &wanted {
                    found[i].degraded = true;
                }
            }
        }
        found
    }
}

fn decode_shared(payload: &[u8]) -> Option<SharedDecision> {
    use prost::Message as _;
    let u = primetime_proto::v1::PriceUpdate::decode(payload).ok()?;
    Some(SharedDecision {
        multiplier: u.multiplier,
        tick: Tick(u.tick),
        model_version: u.model_version,
        explanation: serde_json::from_str(&u.explanation).unwrap_or(serde_json::Value::Null),
    })
}
