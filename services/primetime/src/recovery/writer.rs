//! The snapshot writer: a thread (`primetime-snapshots`) that encodes each
//! pipeline image into parts and queues them in the Redis store, off the
//! clock's reactor.
//!
//! A snapshot at tick `S` is stored only once the prices of every tick up
//! to `S` are acknowledged (the publisher's durable tick reached `S`): a
//! restore from `S` publishes only ticks after `S`, so a stored snapshot
//! must never cover a tick whose prices the broker refused or has not yet
//! taken (issue 16: no price lost on a failed send). An image waits on
//! this thread for that; if the service stops first, it is dropped.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use primetime_core::Geo;

use super::codec::encode_parts;
use crate::metrics::Metrics;
use crate::pipeline::{PipelineImage, SnapshotSink};
use crate::redis::RedisStore;

/// What the writer thread needs to encode and store a snapshot.
pub struct WriterOptions {
    pub store: RedisStore,
    /// The Kafka consumer group: snapshots are stored per group.
    pub group: String,
    pub geo: Geo,
    /// Partitions per input topic.
    pub per_topic: u32,
    /// See [`super::fingerprint`].
    pub fingerprint: u64,
    pub metrics: Arc<Metrics>,
    /// The newest tick whose prices (and every earlier tick's) are
    /// acknowledged (`i64::MIN`: none): a snapshot waits for it.
    pub durable: Arc<AtomicI64>,
}

/// How often a waiting image checks the durable tick: acknowledgements
/// usually follow a tick within milliseconds.
const DURABLE_POLL: Duration = Duration::from_millis(20);

/// Hands snapshots to a thread that encodes and stores them.
pub struct SnapshotWriter {
    image_tx: SyncSender<PipelineImage>,
}

impl SnapshotWriter {
    pub fn start(state: WriterOptions) -> std::io::Result<Self> {
        // One image in the channel and one waiting for its prices to be
        // acknowledged, at most: a writer that falls behind (or a broker
        // that refuses prices) skips snapshots rather than queueing memory.
        let (image_tx, image_rx) = std::sync::mpsc::sync_channel::<PipelineImage>(1);
        // Encoding a large image takes milliseconds: its own thread keeps
        // it off the clock's reactor.
        std::thread::Builder::new()
            .name("primetime-snapshots".into())
            .spawn(move || run(&state, image_rx))?;
        Ok(Self { image_tx })
    }
}

fn run(state: &WriterOptions, image_rx: Receiver<PipelineImage>) {
    // The image waiting for its prices to be acknowledged, if any.
    let mut pending: Option<PipelineImage> = None;
    loop {
        let received = match &pending {
            None => image_rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            // Polls the durable tick while it waits.
            Some(_) => image_rx.recv_timeout(DURABLE_POLL),
        };
        match received {
            Ok(image) if pending.is_some() => skipped(&image, "the previous one waits"),
            Ok(image) => pending = Some(image),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(image) = pending.take() {
                    store_if_durable(state, &image);
                }
                return;
            }
        }
        if pending
            .as_ref()
            .is_some_and(|i| state.durable.load(Acquire) >= i.tick.0)
        {
            if let Some(image) = pending.take() {
                write(state, &image);
            }
        }
    }
}

/// At shutdown: stores `image` only if its ticks are acknowledged.
fn store_if_durable(state: &WriterOptions, image: &PipelineImage) {
    if state.durable.load(Acquire) >= image.tick.0 {
        write(state, image);
    } else {
        tracing::info!(
            tick = image.tick.0,
            "snapshot not stored: the service stopped before its prices were acknowledged"
        );
    }
}

fn skipped(image: &PipelineImage, why: &str) {
    tracing::warn!(tick = image.tick.0, "snapshot skipped: {why}");
}

fn write(state: &WriterOptions, image: &PipelineImage) {
    match encode_parts(image, &state.geo, state.per_topic, state.fingerprint) {
        Ok(parts) => {
            let bytes: usize = parts.iter().map(|part| part.blob.len()).sum();
            state.metrics.snapshots_taken.fetch_add(1, Relaxed);
            state.metrics.snapshot_bytes.store(bytes as u64, Relaxed);
            tracing::debug!(
                tick = image.tick.0,
                parts = parts.len(),
                bytes,
                cells = image.cells.len(),
                "snapshot taken"
            );
            state.store.put_snapshot(&state.group, image.tick, parts);
        }
        Err(e) => {
            tracing::error!(tick = image.tick.0, error = %e, "cannot encode snapshot")
        }
    }
}

impl SnapshotSink for SnapshotWriter {
    fn write(&self, image: PipelineImage) {
        if let Err(TrySendError::Full(image)) = self.image_tx.try_send(image) {
            skipped(&image, "the previous one is still being written");
        }
    }
}
