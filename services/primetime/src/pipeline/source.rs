//! The source thread: input records → decoded, validated, admitted events
//! batched per shard, plus the service watermark for the clock.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use actix::Addr;
use actix::prelude::SendError;
use primetime_core::record::ValidEvent;
use primetime_core::{
    Config, Geo, IngestTime, PartitionState, Reason, RejectCounts, Validator, Watermark, shard_of,
};
use tokio::sync::watch;

use super::shard::{EventBatch, ShardActor};
use crate::metrics::Metrics;

/// One input record as a source delivers it: where it came from, its
/// trusted ingest time and its raw payload — the event-log entry type, so
/// logs, the simulator and (later) Kafka all feed the same struct.
pub type InputRecord = primetime_proto::LogEntry;

/// What a poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were appended (maybe none); poll again.
    More,
    /// End of input: no record will ever follow. Every remaining tick
    /// fires (replay).
    End,
    /// Stop now without finishing: the clock stops after the ticks already
    /// allowed (service shutdown; the state is a cache of the log).
    Stop,
}

/// A source of input records with a fixed set of partitions.
pub trait Input: Send {
    /// Partitions are numbered `0..partitions()`; fixed for the run.
    fn partitions(&self) -> u32;

    /// Appends the next records to `out` (may block while waiting for
    /// data; never for long, so stop requests are seen).
    fn poll(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll>;
}

/// The clock's view of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Min over partition watermarks; `MAX` once input ended.
    pub watermark: Watermark,
    /// Oldest bucket of any accepted event so far (where ticking starts).
    pub min_bucket: Option<i64>,
    pub finished: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            watermark: Watermark::MIN,
            min_bucket: None,
            finished: false,
        }
    }
}

/// Totals of a finished source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceSummary {
    pub records: u64,
    pub accepted: u64,
    pub rejected: RejectCounts,
}

pub(super) struct Source {
    validator: Validator,
    geo: Geo,
    partition_params: primetime_core::partition::PartitionParams,
    bucket_ms: i64,
    shards: Vec<Addr<ShardActor>>,
    batches: Vec<Vec<ValidEvent>>,
    batch_size: usize,
    metrics: Arc<Metrics>,
    progress_tx: watch::Sender<Progress>,
    progress: Progress,
    summary: SourceSummary,
}

impl Source {
    pub(super) fn new(
        core: &Config,
        geo: Geo,
        shards: Vec<Addr<ShardActor>>,
        batch_size: usize,
        metrics: Arc<Metrics>,
        progress_tx: watch::Sender<Progress>,
    ) -> Self {
        Self {
            validator: Validator::new(geo, core.max_future_skew_ms, core.max_event_delay_ms),
            geo,
            partition_params: core.partition_params(),
            bucket_ms: core.bucket_ms,
            batches: vec![Vec::new(); shards.len()],
            shards,
            batch_size: batch_size.max(1),
            metrics,
            progress_tx,
            progress: Progress::default(),
            summary: SourceSummary::default(),
        }
    }

    /// Runs until the input ends (or fails, or the shards stop).
    pub(super) fn run<I: Input>(mut self, mut input: I) -> anyhow::Result<SourceSummary> {
        let mut partitions: Vec<PartitionState> = (0..input.partitions())
            .map(|_| PartitionState::new(self.partition_params))
            .collect();
        let mut records = Vec::new();
        loop {
            records.clear();
            let poll = input.poll(&mut records)?;
            if poll == Poll::Stop {
                tracing::info!(records = self.summary.records, "source stopped");
                return Ok(self.summary);
            }
            for r in &records {
                self.summary.records += 1;
                let Some(p) = partitions.get_mut(r.partition as usize) else {
                    anyhow::bail!(
                        "input record from partition {} outside 0..{}",
                        r.partition,
                        input.partitions()
                    );
                };
                match self.admit(p, r) {
                    Ok(event) => {
                        self.summary.accepted += 1;
                        self.metrics.accepted.fetch_add(1, Relaxed);
                        let b = primetime_core::time::bucket_of(event.time.0, self.bucket_ms);
                        self.progress.min_bucket =
                            Some(self.progress.min_bucket.map_or(b, |m| m.min(b)));
                        let shard = shard_of(self.geo.region_of(event.cell), self.shards.len());
                        self.batches[shard].push(event);
                        if self.batches[shard].len() >= self.batch_size {
                            self.flush(shard)?;
                        }
                    }
                    Err(reason) => {
                        self.summary.rejected.add(reason);
                        self.metrics.reject(reason);
                    }
                }
            }
            for shard in 0..self.shards.len() {
                self.flush(shard)?;
            }
            // Only after the batches are enqueued: see the module docs of
            // `pipeline` for why this order matters.
            self.progress.watermark = if poll == Poll::End {
                Watermark::MAX
            } else {
                partitions
                    .iter()
                    .map(PartitionState::watermark)
                    .min()
                    .unwrap_or(Watermark::MIN)
            };
            self.progress.finished = poll == Poll::End;
            self.metrics
                .watermark_ms
                .store(self.progress.watermark.0, Relaxed);
            self.progress_tx.send_replace(self.progress);
            if poll == Poll::End {
                tracing::info!(
                    records = self.summary.records,
                    accepted = self.summary.accepted,
                    "input ended"
                );
                return Ok(self.summary);
            }
        }
    }

    fn admit(&self, p: &mut PartitionState, r: &InputRecord) -> Result<ValidEvent, Reason> {
        let record = match primetime_proto::decode(r.topic, &r.payload) {
            Ok(record) => record,
            Err(e) => {
                tracing::debug!(partition = r.partition, offset = r.offset, error = %e, "malformed record");
                p.observe_offset(r.offset);
                return Err(Reason::Malformed);
            }
        };
        match self
            .validator
            .validate(IngestTime(r.ingest_time_ms), &record)
        {
            Ok(event) => p.admit(r.offset, event),
            Err(reason) => {
                p.observe_offset(r.offset);
                Err(reason)
            }
        }
    }

    /// Sends the shard's pending batch, waiting while its mailbox is full
    /// (backpressure: the source, not memory, absorbs overload).
    fn flush(&mut self, shard: usize) -> anyhow::Result<()> {
        if self.batches[shard].is_empty() {
            return Ok(());
        }
        let events = std::mem::replace(
            &mut self.batches[shard],
            Vec::with_capacity(self.batch_size),
        );
        self.metrics.mailbox_depth[shard].fetch_add(1, Relaxed);
        let mut msg = EventBatch { events };
        let mut waited = false;
        loop {
            match self.shards[shard].try_send(msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Full(m)) => {
                    if !waited {
                        self.metrics.backpressure_waits.fetch_add(1, Relaxed);
                        waited = true;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(SendError::Closed(_)) => anyhow::bail!("shard {shard} stopped"),
            }
        }
    }
}
