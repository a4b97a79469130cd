//! The source thread: input records → decoded, validated, admitted events
//! batched per shard, plus the service watermark for the clock.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context as _;

use actix::Addr;
use actix::prelude::SendError;
use primetime_core::record::ValidEvent;
use primetime_core::{
    Config, Geo, IngestTime, PartitionState, Reason, RejectCounts, Tick, Validator, Watermark,
    shard_of, time::bucket_of,
};
use tokio::sync::watch;

use super::lockstep::Lockstep;
use super::placement::{MoveDone, SourcePlacement, summary_of};
use super::shard::{Barrier, EventBatch, Extract, Import, ShardActor};
use super::snapshot::{CutRequest, PipelineImage, SourceCut, SourcePartitionImage};
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

    /// Live inputs: `partition` is idle or not assigned to this instance,
    /// so it does not hold back the service watermark (DESIGN §3). Finite
    /// inputs have no idleness.
    fn is_idle(&self, _partition: u32) -> bool {
        false
    }

    /// The service watermark while *every* partition is idle (live inputs
    /// follow the wall clock, so surges decay when all input stops);
    /// `None` holds the watermark where it is.
    fn idle_watermark(&self) -> Option<Watermark> {
        None
    }

    /// A record rejected for any reason but `duplicate` (dead letters).
    fn dead_letter(
        &mut self,
        _record: &InputRecord,
        _reason: Reason,
        _detail: &str,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// The newest tick whose decisions are durably published; `None` for
    /// inputs that commit nothing.
    fn durable_tick(&self) -> Option<Tick> {
        None
    }

    /// Where this input started reading `partition` (the next offset it
    /// delivers if no record of it was read yet); `None` for partitions
    /// not read here and inputs without offsets. Snapshots record it.
    fn start_offset(&self, _partition: u32) -> Option<i64> {
        None
    }

    /// Per partition, the offset of the first record whose effects are not
    /// yet in a durably published tick (the next offset to read after a
    /// restart). Called after [`Self::durable_tick`] advanced.
    fn commit(&mut self, _offsets: &[CommitOffset]) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Where an input partition may be committed: `offset` is the first record
/// whose effects are not yet in a durably published tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOffset {
    pub partition: u32,
    pub offset: i64,
}

/// Per partition: which consumed records are in a durably published tick.
///
/// An accepted record's effective time never exceeds the partition's
/// maximum event time right after it, and that maximum only grows; so
/// every record before the first one whose running maximum lies in a bucket
/// after tick `k` is covered by tick `k`. `marks` holds, per bucket the
/// maximum entered, the offset where it did: one entry per bucket, so
/// tracking costs one comparison per record. Conservative (a record with a
/// future-skewed time delays commits by a few ticks), never loses data.
#[derive(Debug, Default)]
struct CommitTracker {
    max_bucket: Option<i64>,
    marks: std::collections::VecDeque<(i64, i64)>,
    next_offset: Option<i64>,
    /// The last commit, or the first offset consumed (committing that
    /// would say nothing new).
    committed: Option<i64>,
}

impl CommitTracker {
    fn consumed(&mut self, offset: i64) {
        self.committed.get_or_insert(offset);
        self.next_offset = Some(offset.saturating_add(1));
    }

    fn accepted(&mut self, offset: i64, bucket: i64) {
        if self.max_bucket.is_none_or(|m| bucket > m) {
            self.max_bucket = Some(bucket);
            self.marks.push_back((bucket, offset));
        }
    }

    /// The new commit offset after tick `durable` was published, if it
    /// moved.
    fn advance(&mut self, durable: Tick) -> Option<i64> {
        while self.marks.front().is_some_and(|&(b, _)| b <= durable.0) {
            self.marks.pop_front();
        }
        let offset = match self.marks.front() {
            Some(&(_, o)) => o,
            None => self.next_offset?,
        };
        if self.committed.is_some_and(|c| c >= offset) {
            return None;
        }
        self.committed = Some(offset);
        Some(offset)
    }
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

/// A record after the stateless stage: decoded and validated (its H3 cell
/// found), or why not, with a detail for the dead letter (the decoder's
/// error for malformed ones).
type Checked = Result<ValidEvent, (Reason, String)>;

/// Fewer records than this per worker are checked on the source thread
/// alone: a thread's start costs more than it would save.
const MIN_RECORDS_PER_WORKER: usize = 2048;

/// The stateless stage of one record: decode, then validate against its
/// trusted ingest time. Depends on nothing but the record, so records can
/// be checked on any thread, in any order.
fn check(validator: &Validator, r: &InputRecord) -> Checked {
    let record = match primetime_proto::decode(r.topic, &r.payload) {
        Ok(record) => record,
        Err(e) => {
            tracing::debug!(partition = r.partition, offset = r.offset, error = %e, "malformed record");
            return Err((Reason::Malformed, e.to_string()));
        }
    };
    validator
        .validate(IngestTime(r.ingest_time_ms), &record)
        .map_err(|reason| (reason, String::new()))
}

/// Records per chunk handed between the check workers and the source
/// thread: the source starts admitting after the first chunk instead of
/// after the whole poll, and a chunk's hand-off (one channel message) is
/// negligible beside checking a thousand records.
const CHUNK: usize = 1024;

/// How a poll's records are checked: on the source thread, or on `n`
/// workers while the source thread admits (see [`Source::check_and_ingest`]).
fn check_workers(workers: usize, records: usize) -> usize {
    workers.min(records / MIN_RECORDS_PER_WORKER).max(1)
}

/// Loads the dedup slot each valid event of a chunk will probe before the
/// chunk is admitted: the loads are independent, so their cache misses
/// overlap instead of stalling admission one event at a time (the dedup
/// tables of a busy partition are megabytes). Admission is unchanged.
fn prefetch_dedup(slots: &[PartitionSlot], chunk: &[InputRecord], checked: &[Checked]) {
    let mut touched = 0u64;
    for (r, c) in chunk.iter().zip(checked) {
        if let (Ok(event), Some(slot)) = (c, slots.get(r.partition as usize)) {
            touched ^= slot.state.touch(event.key);
        }
    }
    std::hint::black_box(touched);
}

/// Per input partition: its watermark and dedup state, where commits
/// stand, and whether it was idle at the last poll.
struct PartitionSlot {
    state: PartitionState,
    commits: CommitTracker,
    was_idle: bool,
    /// The newest ingest time consumed (snapshots carry it).
    max_ingest_ms: Option<i64>,
}

/// How a source is built, beyond its config and shards.
pub(super) struct SourceOptions<'a> {
    pub geo: Geo,
    /// Events per shard batch (at least 1).
    pub batch_size: usize,
    /// Threads that decode and validate a poll's records (at least 1).
    pub ingest_workers: usize,
    pub metrics: Arc<Metrics>,
    /// Where the source publishes its progress for the clock.
    pub progress_tx: watch::Sender<Progress>,
    /// The clock's snapshot requests.
    pub cuts: Option<std::sync::mpsc::Receiver<CutRequest>>,
    /// Start from this image's partition state and progress.
    pub restore: Option<&'a PipelineImage>,
    /// Tell a closed-loop input's lockstep what was published.
    pub lockstep: Option<Arc<Lockstep>>,
    /// Route by a load-aware table instead of the hash.
    pub placement: Option<SourcePlacement>,
}

pub(super) struct Source {
    /// Shared with the check workers of each poll.
    validator: Arc<Validator>,
    geo: Geo,
    partition_params: primetime_core::partition::PartitionParams,
    bucket_ms: i64,
    shards: Vec<Addr<ShardActor>>,
    batches: Vec<Vec<ValidEvent>>,
    batch_size: usize,
    ingest_workers: usize,
    metrics: Arc<Metrics>,
    progress_tx: watch::Sender<Progress>,
    progress: Progress,
    summary: SourceSummary,
    /// The clock's snapshot requests.
    cuts: Option<std::sync::mpsc::Receiver<CutRequest>>,
    /// Partition state to start from.
    restore: Vec<SourcePartitionImage>,
    /// The newest durable tick whose commits were made.
    committed_tick: Option<Tick>,
    lockstep: Option<Arc<Lockstep>>,
    placement: Option<SourcePlacement>,
}

impl Source {
    pub(super) fn new(
        core: &Config,
        shards: Vec<Addr<ShardActor>>,
        options: SourceOptions<'_>,
    ) -> Self {
        let restore = options.restore;
        let progress = match restore {
            Some(img) => Progress {
                watermark: Watermark(img.watermark),
                min_bucket: img.min_bucket,
                finished: false,
            },
            None => Progress::default(),
        };
        let geo = options.geo;
        Self {
            validator: Arc::new(Validator::new(
                geo,
                core.max_future_skew_ms,
                core.max_event_delay_ms,
            )),
            geo,
            partition_params: core.partition_params(),
            bucket_ms: core.bucket_ms,
            batches: vec![Vec::new(); shards.len()],
            shards,
            batch_size: options.batch_size.max(1),
            ingest_workers: options.ingest_workers.max(1),
            metrics: options.metrics,
            progress_tx: options.progress_tx,
            progress,
            summary: SourceSummary::default(),
            cuts: options.cuts,
            restore: restore.map(|i| i.partitions.clone()).unwrap_or_default(),
            committed_tick: None,
            lockstep: options.lockstep,
            placement: options.placement,
        }
    }

    /// Runs until the input ends (or fails, or the shards stop).
    pub(super) fn run<I: Input>(mut self, mut input: I) -> anyhow::Result<SourceSummary> {
        let mut slots = self.partition_slots(input.partitions())?;
        let mut records = Vec::new();
        loop {
            // Between polls every batch is enqueued and the progress
            // published: a consistent place to cut.
            self.serve_cuts(&slots, &input)?;
            self.serve_moves()?;
            records.clear();
            let poll = input.poll(&mut records)?;
            if poll == Poll::Stop {
                tracing::info!(records = self.summary.records, "source stopped");
                return Ok(self.summary);
            }
            self.check_and_ingest(&mut slots, &records, &mut input)?;
            for shard in 0..self.shards.len() {
                self.flush(shard)?;
            }
            // Only after the batches are enqueued: see the module docs of
            // `pipeline` for why this order matters.
            self.publish_progress(&mut slots, poll, &input);
            self.commit_durable(&mut slots, &mut input)?;
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

    /// Fresh partitions, or those of the image the source restores.
    fn partition_slots(&mut self, n: u32) -> anyhow::Result<Vec<PartitionSlot>> {
        let mut slots: Vec<PartitionSlot> = (0..n)
            .map(|_| PartitionSlot {
                state: PartitionState::new(self.partition_params),
                commits: CommitTracker::default(),
                was_idle: false,
                max_ingest_ms: None,
            })
            .collect();
        for img in std::mem::take(&mut self.restore) {
            let Some(slot) = slots.get_mut(img.partition as usize) else {
                anyhow::bail!("snapshot partition {} outside 0..{n}", img.partition);
            };
            slot.state = PartitionState::import(self.partition_params, &img.state);
            slot.commits = CommitTracker {
                max_bucket: img.max_bucket,
                marks: img.marks.into(),
                next_offset: Some(img.next_offset),
                committed: img.committed,
            };
            slot.max_ingest_ms = img.max_ingest_ms;
        }
        Ok(slots)
    }

    /// Checks a poll's records and ingests them in order. With more than
    /// one worker the check (decode, validation, H3: the stateless, costly
    /// part) runs on scoped worker threads, chunk by chunk (worker `w`
    /// takes chunks `w`, `w + n`, …), while this thread admits each chunk
    /// as soon as it is checked: checking and admission overlap, and the
    /// order of admission is the records' order whatever the worker count.
    fn check_and_ingest<I: Input>(
        &mut self,
        slots: &mut [PartitionSlot],
        records: &[InputRecord],
        input: &mut I,
    ) -> anyhow::Result<()> {
        let workers = check_workers(self.ingest_workers, records.len());
        let validator = Arc::clone(&self.validator);
        if workers == 1 {
            for r in records {
                self.ingest(slots, r, check(&validator, r), input)?;
            }
            return Ok(());
        }
        let chunks: Vec<&[InputRecord]> = records.chunks(CHUNK).collect();
        // One slot per chunk: a worker never waits for the source.
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..chunks.len())
            .map(|_| std::sync::mpsc::sync_channel::<Vec<Checked>>(1))
            .unzip();
        std::thread::scope(|scope| {
            let mut jobs: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
            for (i, (chunk, tx)) in chunks.iter().zip(txs).enumerate() {
                jobs[i % workers].push((*chunk, tx));
            }
            let handles: Vec<std::thread::ScopedJoinHandle<'_, ()>> = jobs
                .into_iter()
                .map(|job| {
                    let validator = &validator;
                    std::thread::Builder::new()
                        .name("primetime-check".into())
                        .spawn_scoped(scope, move || {
                            for (chunk, tx) in job {
                                let checked = chunk.iter().map(|r| check(validator, r)).collect();
                                // The source stopped early (an error): done.
                                if tx.send(checked).is_err() {
                                    return;
                                }
                            }
                        })
                })
                .collect::<Result<_, _>>()
                .context("cannot start an ingest worker")?;
            // Returning early drops the receivers left, so workers stop.
            let admitted = (|| {
                for (chunk, rx) in chunks.iter().zip(rxs) {
                    let checked = rx
                        .recv()
                        .map_err(|_| anyhow::anyhow!("an ingest worker panicked"))?;
                    prefetch_dedup(slots, chunk, &checked);
                    for (r, c) in chunk.iter().zip(checked) {
                        self.ingest(slots, r, c, input)?;
                    }
                }
                anyhow::Ok(())
            })();
            // Joined here, so a panic is an error rather than the scope's.
            let joined = handles.into_iter().all(|h| h.join().is_ok());
            admitted?;
            anyhow::ensure!(joined, "an ingest worker panicked");
            Ok(())
        })
    }

    /// One checked record, in its partition's order: admitted (dedup,
    /// lateness, watermark) into its shard's batch, or counted and (but
    /// duplicates) dead-lettered.
    fn ingest<I: Input>(
        &mut self,
        slots: &mut [PartitionSlot],
        r: &InputRecord,
        checked: Checked,
        input: &mut I,
    ) -> anyhow::Result<()> {
        self.summary.records += 1;
        let n = slots.len();
        let Some(slot) = slots.get_mut(r.partition as usize) else {
            anyhow::bail!("input record from partition {} outside 0..{n}", r.partition);
        };
        if slot.was_idle {
            // Back from idle: start from the service watermark, so
            // nothing lands in a tick that already fired.
            slot.state.raise_watermark(self.progress.watermark);
            slot.was_idle = false;
        }
        slot.commits.consumed(r.offset);
        slot.max_ingest_ms = Some(
            slot.max_ingest_ms
                .map_or(r.ingest_time_ms, |m| m.max(r.ingest_time_ms)),
        );
        let admitted = match checked {
            Ok(event) => slot
                .state
                .admit(r.offset, event)
                .map_err(|reason| (reason, String::new())),
            Err(e) => {
                slot.state.observe_offset(r.offset);
                Err(e)
            }
        };
        match admitted {
            Ok(event) => {
                // The partition's maximum event time (watermark +
                // out-of-orderness) bounds this event's effective time.
                let max = slot
                    .state
                    .watermark()
                    .0
                    .saturating_add(self.partition_params.max_out_of_orderness_ms);
                slot.commits
                    .accepted(r.offset, bucket_of(max, self.bucket_ms));
                self.summary.accepted += 1;
                self.metrics.accepted.fetch_add(1, Relaxed);
                let b = bucket_of(event.time.0, self.bucket_ms);
                self.progress.min_bucket = Some(self.progress.min_bucket.map_or(b, |m| m.min(b)));
                let region = self.geo.region_of(event.cell);
                let shard = match &mut self.placement {
                    Some(p) => p.route(region),
                    None => shard_of(region, self.shards.len()),
                };
                self.batches[shard].push(event);
                if self.batches[shard].len() >= self.batch_size {
                    self.flush(shard)?;
                }
            }
            Err((reason, detail)) => {
                self.summary.rejected.add(reason);
                self.metrics.reject(reason);
                if reason != Reason::Duplicate {
                    input.dead_letter(r, reason, &detail)?;
                }
            }
        }
        Ok(())
    }

    /// The service watermark after a poll (`MAX` at the end of input): the
    /// minimum over live partitions, the input's idle watermark when all
    /// are idle, and never lower than before.
    fn publish_progress<I: Input>(&mut self, slots: &mut [PartitionSlot], poll: Poll, input: &I) {
        self.progress.watermark = if poll == Poll::End {
            Watermark::MAX
        } else {
            let mut live = None::<Watermark>;
            for (i, slot) in slots.iter_mut().enumerate() {
                let idle = input.is_idle(i as u32);
                slot.was_idle = idle;
                if !idle {
                    let w = slot.state.watermark();
                    live = Some(live.map_or(w, |l| l.min(w)));
                }
            }
            // The service watermark never goes back (a partition coming
            // back from idle is raised to it instead).
            match live.or_else(|| input.idle_watermark()) {
                Some(w) => w.max(self.progress.watermark),
                None => self.progress.watermark,
            }
        };
        self.progress.finished = poll == Poll::End;
        self.metrics
            .watermark_ms
            .store(self.progress.watermark.0, Relaxed);
        self.progress_tx.send_replace(self.progress);
        if let Some(l) = &self.lockstep {
            l.published(self.progress.watermark);
        }
    }

    /// Once the input reports a newer durable tick: commits, per
    /// partition, the first offset that tick does not cover.
    fn commit_durable<I: Input>(
        &mut self,
        slots: &mut [PartitionSlot],
        input: &mut I,
    ) -> anyhow::Result<()> {
        let Some(durable) = input.durable_tick() else {
            return Ok(());
        };
        if self.committed_tick.is_some_and(|t| durable <= t) {
            return Ok(());
        }
        self.committed_tick = Some(durable);
        let offsets: Vec<CommitOffset> = slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, slot)| {
                Some(CommitOffset {
                    partition: i as u32,
                    offset: slot.commits.advance(durable)?,
                })
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        input.commit(&offsets)
    }

    /// Answers the clock's snapshot requests: a barrier into every shard
    /// mailbox (behind every batch sent so far), and the partitions' state.
    fn serve_cuts<I: Input>(&mut self, slots: &[PartitionSlot], input: &I) -> anyhow::Result<()> {
        let requests: Vec<CutRequest> = match &self.cuts {
            Some(rx) => rx.try_iter().collect(),
            None => return Ok(()),
        };
        for req in requests {
            let mut cells = Vec::with_capacity(self.shards.len());
            for shard in 0..self.shards.len() {
                let (reply, rx) = tokio::sync::oneshot::channel();
                self.send(shard, Barrier { reply })?;
                cells.push(rx);
            }
            let parts = slots
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| {
                    let (p, c) = (&slot.state, &slot.commits);
                    let next_offset = c.next_offset.or_else(|| input.start_offset(i as u32))?;
                    Some(SourcePartitionImage {
                        partition: i as u32,
                        next_offset,
                        state: p.export(),
                        marks: c.marks.iter().copied().collect(),
                        max_bucket: c.max_bucket,
                        committed: c.committed,
                        max_ingest_ms: slot.max_ingest_ms,
                    })
                })
                .collect();
            tracing::debug!(tick = req.tick.0, "snapshot cut");
            // The clock may be gone (stopping): then there is no snapshot.
            let _ = req.reply.send(SourceCut {
                watermark: self.progress.watermark.0,
                min_bucket: self.progress.min_bucket,
                partitions: parts,
                cells,
            });
        }
        Ok(())
    }

    /// Answers the clock's move requests (see [`super::placement`]): each
    /// move's cells leave the old shard behind every batch sent to it and
    /// enter the new one before any event routed there after the move.
    fn serve_moves(&mut self) -> anyhow::Result<()> {
        let Some(mut placement) = self.placement.take() else {
            return Ok(());
        };
        let result = self.serve_moves_with(&mut placement);
        self.placement = Some(placement);
        result
    }

    fn serve_moves_with(&mut self, placement: &mut SourcePlacement) -> anyhow::Result<()> {
        let requests: Vec<_> = placement.requests.try_iter().collect();
        for req in requests {
            let moves = placement.plan(&req.costs);
            let mut summaries = Vec::new();
            for m in moves {
                // Every batch is flushed between polls; be sure anyway.
                self.flush(m.from)?;
                let (reply, rx) = tokio::sync::oneshot::channel();
                self.send(
                    m.from,
                    Extract {
                        moves: vec![m],
                        reply,
                    },
                )?;
                let Ok(out) = rx.blocking_recv() else {
                    anyhow::bail!("shard {} stopped during a move", m.from);
                };
                summaries.extend(out.cells.iter().filter_map(summary_of));
                summaries.extend(out.neighbours);
                self.send(
                    m.to,
                    Import {
                        moves: vec![m],
                        cells: out.cells,
                    },
                )?;
                placement.table.apply(m);
            }
            tracing::debug!(tick = req.tick.0, "placement moves served");
            // The clock may be gone (stopping): nothing to tell.
            let _ = req.reply.send(MoveDone { summaries });
        }
        Ok(())
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
        self.send(shard, EventBatch { events })
    }

    /// Enqueues `msg` in the shard's mailbox, waiting while it is full.
    fn send<M>(&self, shard: usize, msg: M) -> anyhow::Result<()>
    where
        M: actix::Message<Result = ()> + Send + 'static,
        ShardActor: actix::Handler<M>,
    {
        self.metrics.mailbox_depth[shard].fetch_add(1, Relaxed);
        let mut msg = msg;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_at_the_first_record_not_covered_by_the_durable_tick() {
        let mut c = CommitTracker::default();
        // Offsets 0..=2 with max event buckets 10, 10, 11; offset 3 is a
        // rejected record; offset 4 pushes the maximum to bucket 13.
        for (offset, bucket) in [(0, 10), (1, 10), (2, 11)] {
            c.consumed(offset);
            c.accepted(offset, bucket);
        }
        c.consumed(3);
        c.consumed(4);
        c.accepted(4, 13);
        assert_eq!(c.advance(Tick(9)), None, "nothing covered yet");
        assert_eq!(c.advance(Tick(10)), Some(2), "offset 2 is in bucket 11");
        assert_eq!(c.advance(Tick(10)), None, "no change, no commit");
        assert_eq!(c.advance(Tick(12)), Some(4), "rejected 3 is done, 4 is not");
        assert_eq!(c.advance(Tick(13)), Some(5), "everything consumed");
    }

    #[test]
    fn a_partition_with_only_rejected_records_commits_them() {
        let mut c = CommitTracker::default();
        assert_eq!(c.advance(Tick(1)), None, "nothing consumed");
        c.consumed(0);
        c.consumed(1);
        assert_eq!(c.advance(Tick(1)), Some(2));
    }
}
