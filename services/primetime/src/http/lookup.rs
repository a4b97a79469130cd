//! How handlers read decisions: the [`PriceLookup`] trait. HTTP knows no
//! store; the wiring backs the trait with the in-memory table (`table.rs`)
//! or, in Kafka mode with Redis, with the table and the shared Redis table
//! for cells owned elsewhere (`serve/lookup.rs`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use primetime_core::{CellId, Tick};

use crate::table::PricedCell;

/// A decision read back from a shared store (another instance's cell).
#[derive(Debug, Clone)]
pub struct SharedDecision {
    pub multiplier: f64,
    pub tick: Tick,
    pub model_version: String,
    /// The decision's explanation as stored (`null` when unreadable).
    pub explanation: serde_json::Value,
}

/// Where a cell's current decision was found.
#[derive(Debug, Clone)]
pub enum Decision {
    /// This instance's in-memory table.
    Table(Arc<PricedCell>),
    /// A shared store.
    Shared(SharedDecision),
}

/// One cell's lookup result.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// `None`: no decision exists for the cell (it is at 1.0).
    pub decision: Option<Decision>,
    /// The authoritative source failed and this is the best local answer:
    /// it is answered stale whatever the table's freshness.
    pub degraded: bool,
}

/// Reads the current decision of cells. Never fails: a source that cannot
/// answer degrades to what is known locally, marked [`Found::degraded`].
pub trait PriceLookup: Send + Sync {
    /// One [`Found`] per cell, in order.
    fn lookup<'a>(&'a self, cells: &'a [CellId]) -> BoxFuture<'a, Vec<Found>>;

    /// Why answers may be degraded right now (for `/readyz`), if they may.
    fn degraded(&self) -> Option<&'static str> {
        None
    }
}
