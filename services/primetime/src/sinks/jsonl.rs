//! Decisions as JSON lines (`replay`'s output): one line per decision, in
//! tick then cell order.
//!
//! The file is written by a thread of its own: the clock hands it each
//! tick's decisions over a bounded channel (a slot reserved in `ready`, so
//! a slow disk suspends the clock's task, never the reactor), and
//! `finish` waits for the writer and reports its first error.

use std::io::Write;

use anyhow::Context as _;
use primetime_core::{PriceDecision, Tick};
use tokio::sync::mpsc::{self, OwnedPermit, Receiver, Sender};

use super::Sink;

/// Ticks queued for the writer thread before the clock waits.
const QUEUED_TICKS: usize = 64;

/// Writes decisions as JSON lines, in tick then cell order.
pub struct JsonlSink {
    /// `None` once finished.
    tx: Option<Sender<Vec<PriceDecision>>>,
    /// The slot `ready` reserved for the next tick.
    permit: Option<OwnedPermit<Vec<PriceDecision>>>,
    writer: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl JsonlSink {
    /// Starts the writer thread over `out`.
    pub fn new<W: Write + Send + 'static>(out: W) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUED_TICKS);
        let writer = std::thread::Builder::new()
            .name("primetime-jsonl".into())
            .spawn(move || write_all(out, rx))?;
        Ok(Self {
            tx: Some(tx),
            permit: None,
            writer: Some(writer),
        })
    }
}

/// The writer thread: every tick's lines, then a flush.
fn write_all<W: Write>(mut out: W, mut rx: Receiver<Vec<PriceDecision>>) -> std::io::Result<()> {
    while let Some(decisions) = rx.blocking_recv() {
        for d in &decisions {
            serde_json::to_writer(&mut out, d)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

impl Sink for JsonlSink {
    async fn ready(&mut self) -> anyhow::Result<()> {
        if self.permit.is_none() {
            let tx = self
                .tx
                .clone()
                .ok_or_else(|| anyhow::anyhow!("decisions file already finished"))?;
            let permit = tx
                .reserve_owned()
                .await
                .map_err(|_| anyhow::anyhow!("the decisions writer stopped"))?;
            self.permit = Some(permit);
        }
        Ok(())
    }

    fn publish(
        &mut self,
        _tick: Tick,
        _tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        if decisions.is_empty() {
            return Ok(());
        }
        let permit = self
            .permit
            .take()
            .ok_or_else(|| anyhow::anyhow!("jsonl sink: publish without ready"))?;
        permit.send(decisions.to_vec());
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.permit = None;
        self.tx = None;
        // Called once after the last tick: the wait is the final flush.
        match self.writer.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result.context("writing decisions"),
            Some(Err(_)) => anyhow::bail!("the decisions writer panicked"),
            None => Ok(()),
        }
    }
}
