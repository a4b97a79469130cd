//! Decisions as JSON lines (`replay`'s output): one line per decision, in
//! tick then cell order.
//!
//! Writes synchronously: `replay` has no HTTP on its reactor and wants its
//! output in order, so a slow disk slows the replay, which is the point.

use std::io::Write;

use anyhow::Context as _;
use primetime_core::{PriceDecision, Tick};

use super::Sink;

/// Writes decisions as JSON lines, in tick then cell order.
pub struct JsonlSink<W: Write> {
    out: W,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write + Send> Sink for JsonlSink<W> {
    fn publish(
        &mut self,
        _tick: Tick,
        _tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        for d in decisions {
            serde_json::to_writer(&mut self.out, d)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("flushing decisions")
    }
}
