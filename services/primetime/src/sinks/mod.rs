//! Where a tick's decisions go: the [`Sink`] trait and its contract, and
//! every sink — [`table`] (the in-memory table HTTP reads), [`kafka`] (the
//! prices topic), [`redis`] (the shared price table), [`jsonl`] (replay's
//! output) and [`CollectSink`] (in memory, for tests).
//!
//! The clock hands every fired tick to exactly one `Sink` value; the
//! wiring composes several (`(A, B)`, `Option<S>`), so a reader follows a
//! decision from [`crate::pipeline`]'s clock to each destination here.
//!
//! # Contract
//! - `ready` then `publish` are called once per fired tick, in tick order,
//!   from the clock's task on the actix reactor. Neither may block the
//!   thread: a sink that does I/O hands the tick to its own thread over a
//!   bounded channel, reserving a slot in `ready` (awaited: back-pressure
//!   suspends the clock's task, not the reactor) and filling it in
//!   `publish`. Blocking is impossible by construction: `publish` never
//!   waits, and only `ready` may, asynchronously.
//! - An `Err` ends the pipeline epoch (the clock stops): a sink never logs
//!   and skips a decision it could not take.

pub mod jsonl;
pub mod kafka;
pub mod redis;
pub mod table;

use std::sync::Arc;

use primetime_core::{PriceDecision, Tick};

/// Where each tick's decisions go (price table, Kafka, a file).
pub trait Sink: Send {
    /// Awaited before every [`Self::publish`]: resolves once the sink can
    /// take one more tick without blocking. This is where a sink with a
    /// bounded hand-off applies back-pressure — asynchronously, so the
    /// reactor stays free. Default: ready at once.
    fn ready(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        std::future::ready(Ok(()))
    }

    /// Called once per fired tick, in tick order, after [`Self::ready`],
    /// with that tick's changed prices sorted by cell (possibly none). Must
    /// not block: it only hands the tick over.
    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()>;

    /// Called once after the last tick (flush buffers).
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Both sinks, in order (e.g. the price table, then Kafka).
impl<A: Sink, B: Sink> Sink for (A, B) {
    async fn ready(&mut self) -> anyhow::Result<()> {
        self.0.ready().await?;
        self.1.ready().await
    }

    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        self.0.publish(tick, tick_end_ms, decisions)?;
        self.1.publish(tick, tick_end_ms, decisions)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.0.finish()?;
        self.1.finish()
    }
}

/// An optional sink (e.g. Redis, when configured).
impl<S: Sink> Sink for Option<S> {
    async fn ready(&mut self) -> anyhow::Result<()> {
        match self {
            Some(s) => s.ready().await,
            None => Ok(()),
        }
    }

    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        match self {
            Some(s) => s.publish(tick, tick_end_ms, decisions),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Some(s) => s.finish(),
            None => Ok(()),
        }
    }
}

/// A sink that keeps every decision in memory (tests, small replays).
#[derive(Debug, Default, Clone)]
pub struct CollectSink(pub Arc<std::sync::Mutex<Vec<PriceDecision>>>);

impl Sink for CollectSink {
    fn publish(
        &mut self,
        _tick: Tick,
        _tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        match self.0.lock() {
            Ok(mut v) => v.extend_from_slice(decisions),
            Err(p) => p.into_inner().extend_from_slice(decisions),
        }
        Ok(())
    }
}
