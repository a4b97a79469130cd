//! Snapshot blobs: the snapshot writer thread (`primetime-redis-snapshots`)
//! and the `WATCH`/`MULTI` transactions that write and read whole
//! snapshots, so a reader never sees some partitions of one without the
//! others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ::redis::{Connection, ErrorKind, RedisResult};
use primetime_core::Tick;

use super::link::{Link, is_connection_error};
use super::queues::SnapshotJob;
use super::{Shared, SnapshotsByPartition, StoredSnapshot, lock};

/// A snapshot transaction aborted by a concurrent change of its indexes is
/// retried this many times before the attempt counts as failed.
const SNAPSHOT_TX_ATTEMPTS: usize = 3;

/// Snapshots taken from the queue, with the put sequence they cover.
struct SnapshotBatch {
    jobs: BTreeMap<String, SnapshotJob>,
    seq: u64,
}

/// `primetime-redis-snapshots`: writes queued snapshots on its own
/// connection, so a large blob never delays price writes.
pub(super) fn run_snapshot_writer(shared: Arc<Shared>) {
    let mut link = Link::new();
    while let Some(batch) = take_snapshots(&shared) {
        if write_batch(&shared, &mut link, batch) {
            break;
        }
    }
}

/// Waits for queued snapshots and takes them all; `None` when stopping.
fn take_snapshots(shared: &Shared) -> Option<SnapshotBatch> {
    let mut queue = lock(&shared.snapshots);
    while queue.is_empty() && !shared.stopping() {
        queue = shared
            .snapshots_work
            .wait(queue)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    if shared.stopping() {
        return None;
    }
    Some(SnapshotBatch {
        jobs: queue.take_all(),
        seq: queue.progress.queued,
    })
}

/// Writes the taken snapshots in order; at the first failure requeues it
/// and the rest and backs off. True when stopped during the backoff.
fn write_batch(shared: &Shared, link: &mut Link, batch: SnapshotBatch) -> bool {
    let no_prepare = |_: &mut Connection| Ok(());
    let mut jobs = batch.jobs.into_iter();
    for (group, job) in jobs.by_ref() {
        match link.run(shared, no_prepare, |con| {
            write_snapshot(shared, con, &group, &job)
        }) {
            Ok(()) => record_written(shared, &group, &job),
            Err(e) => {
                shared.stats.snapshot_errors.fetch_add(1, Relaxed);
                shared.mark_failed(&e, "put_snapshot");
                if !is_connection_error(&e) {
                    tracing::warn!(error = %e, group, tick = job.tick.0, "redis snapshot write failed, retrying");
                }
                let mut queue = lock(&shared.snapshots);
                queue.requeue(group, job);
                for (group, job) in jobs {
                    queue.requeue(group, job);
                }
                drop(queue);
                return shared.sleep(link.next_backoff());
            }
        }
    }
    shared.mark_up();
    let mut queue = lock(&shared.snapshots);
    queue.progress.written = queue.progress.written.max(batch.seq);
    drop(queue);
    shared.snapshots_done.notify_all();
    false
}

fn record_written(shared: &Shared, group: &str, job: &SnapshotJob) {
    let stats = &shared.stats;
    let bytes = job.bytes();
    stats.snapshots_written.fetch_add(1, Relaxed);
    stats.last_snapshot_bytes.store(bytes as u64, Relaxed);
    stats.last_snapshot_tick.store(job.tick.0, Relaxed);
    tracing::debug!(group, tick = job.tick.0, bytes, "snapshot written");
}

/// `WATCH`es `keys` and reads each sorted set's members (`read` is
/// `ZRANGE` or `ZREVRANGE`); unwatches if the read fails.
fn watch_and_read_indexes(
    con: &mut Connection,
    keys: &[String],
    read: &str,
) -> RedisResult<Vec<Vec<String>>> {
    ::redis::cmd("WATCH").arg(keys).exec(con)?;
    let mut pipe = ::redis::pipe();
    for key in keys {
        pipe.cmd(read).arg(key).arg(0).arg(-1);
    }
    pipe.query(con).inspect_err(|_| {
        let _ = ::redis::cmd("UNWATCH").exec(con);
    })
}

/// Reads the indexes with `WATCH` on them, then the blobs they list in a
/// transaction that aborts if an index changed meanwhile (retried): the
/// result is a consistent cut, never part of a snapshot.
pub(super) fn read_snapshots(
    shared: &Shared,
    con: &mut Connection,
    group: &str,
    partitions: &[u32],
) -> RedisResult<SnapshotsByPartition> {
    let index_keys: Vec<String> = partitions
        .iter()
        .map(|&partition| shared.snap_index_key(group, partition))
        .collect();
    for _ in 0..SNAPSHOT_TX_ATTEMPTS {
        let indexes = watch_and_read_indexes(con, &index_keys, "ZREVRANGE")?;
        // (partition, tick) of every listed blob, newest first per partition.
        let wanted: Vec<(u32, i64)> = partitions
            .iter()
            .zip(indexes)
            .flat_map(|(&partition, ticks)| {
                ticks
                    .into_iter()
                    .filter_map(move |t| t.parse().ok().map(|t| (partition, t)))
            })
            .collect();
        let mut out = SnapshotsByPartition::new();
        if wanted.is_empty() {
            ::redis::cmd("UNWATCH").exec(con)?;
            return Ok(out);
        }
        let mut tx = ::redis::pipe();
        tx.atomic();
        for &(partition, tick) in &wanted {
            tx.cmd("GET")
                .arg(shared.snap_blob_key(group, partition, tick));
        }
        // `None`: an index changed since it was read; read again.
        let blobs: Option<Vec<Option<Vec<u8>>>> = tx.query(con)?;
        let Some(blobs) = blobs else { continue };
        for ((partition, tick), blob) in wanted.into_iter().zip(blobs) {
            if let Some(blob) = blob {
                out.entry(partition).or_default().push(StoredSnapshot {
                    tick: Tick(tick),
                    blob,
                });
            }
        }
        return Ok(out);
    }
    Err((
        ErrorKind::Client,
        "snapshot read aborted by concurrent snapshot writes",
    )
        .into())
}

/// One snapshot in one transaction: every blob, its index entry and the
/// trim of each index to the newest `snapshot_keep` ticks (deleting trimmed
/// blobs). The indexes are watched while the trim is computed; a
/// concurrent change aborts the transaction, which is then retried.
fn write_snapshot(
    shared: &Shared,
    con: &mut Connection,
    group: &str,
    job: &SnapshotJob,
) -> RedisResult<()> {
    let index_keys: Vec<String> = job
        .parts
        .iter()
        .map(|part| shared.snap_index_key(group, part.partition))
        .collect();
    for _ in 0..SNAPSHOT_TX_ATTEMPTS {
        let stored = watch_and_read_indexes(con, &index_keys, "ZRANGE")?;
        let mut tx = ::redis::pipe();
        tx.atomic();
        for ((part, key), members) in job.parts.iter().zip(&index_keys).zip(stored) {
            tx.cmd("SET")
                .arg(shared.snap_blob_key(group, part.partition, job.tick.0))
                .arg(&part.blob[..])
                .ignore();
            tx.cmd("ZADD")
                .arg(key)
                .arg(job.tick.0)
                .arg(job.tick.0)
                .ignore();
            let index = IndexTrim {
                group,
                partition: part.partition,
                key,
                tick: job.tick.0,
            };
            index.trim(shared, &mut tx, members);
        }
        // `None`: EXEC aborted because a watched index changed.
        let done: Option<()> = tx.query(con)?;
        if done.is_some() {
            return Ok(());
        }
    }
    Err((
        ErrorKind::Client,
        "snapshot transaction aborted by concurrent index changes",
    )
        .into())
}

/// One partition's index in a snapshot transaction.
struct IndexTrim<'a> {
    group: &'a str,
    partition: u32,
    /// The index's key.
    key: &'a str,
    /// The tick being written.
    tick: i64,
}

impl IndexTrim<'_> {
    /// Adds to `tx` the removal of members that are not ticks and of the
    /// ticks (and their blobs) beyond the newest `snapshot_keep`, counting
    /// the one being written.
    fn trim(&self, shared: &Shared, tx: &mut ::redis::Pipeline, members: Vec<String>) {
        let keep = shared.config.snapshot_keep.max(1);
        let mut ticks: Vec<i64> = Vec::with_capacity(members.len() + 1);
        for member in members {
            match member.parse() {
                Ok(tick) => ticks.push(tick),
                // Not ours: drop it from the index so it cannot linger.
                Err(_) => {
                    tx.cmd("ZREM").arg(self.key).arg(member).ignore();
                }
            }
        }
        ticks.push(self.tick);
        ticks.sort_unstable_by(|a, b| b.cmp(a));
        ticks.dedup();
        for &old in ticks.iter().skip(keep) {
            tx.cmd("ZREM").arg(self.key).arg(old).ignore();
            tx.cmd("DEL")
                .arg(shared.snap_blob_key(self.group, self.partition, old))
                .ignore();
        }
    }
}
