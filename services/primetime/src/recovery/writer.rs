//! The snapshot writer: a thread (`primetime-snapshots`) that encodes each
//! pipeline image into parts and queues them in the Redis store, off the
//! clock's reactor.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

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
}

/// Hands snapshots to a thread that encodes and stores them.
pub struct SnapshotWriter {
    image_tx: SyncSender<PipelineImage>,
}

impl SnapshotWriter {
    pub fn start(state: WriterOptions) -> std::io::Result<Self> {
        // One waiting image at most: a writer that falls behind skips
        // snapshots rather than queueing memory.
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
    for image in image_rx {
        write(state, &image);
    }
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
            tracing::warn!(
                tick = image.tick.0,
                "snapshot skipped: the previous one is still being written"
            );
        }
    }
}
