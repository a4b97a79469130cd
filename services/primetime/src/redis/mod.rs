//! Redis: the shared price table (newest tick wins) and snapshot blobs.
//!
//! Every instance writes each tick's price decisions into one price table
//! shared through Redis, reads it back to answer HTTP requests for cells it
//! does not own, and stores snapshot blobs of its state there.
//!
//! # Key layout
//!
//! Every key starts with the configured prefix (`primetime` by default):
//!
//! | key                                        | type       | content                              |
//! |--------------------------------------------|------------|--------------------------------------|
//! | `{prefix}:price:{cell}`                    | hash       | `t` = tick (decimal), `p` = encoded `PriceUpdate` |
//! | `{prefix}:snap:{group}:{partition}`        | sorted set | member = score = tick of each kept snapshot |
//! | `{prefix}:snap:{group}:{partition}:{tick}` | string     | the snapshot blob                    |
//!
//! `{cell}` is the H3 index in hex. Groups must not contain `:` (a group
//! `a:1` would share keys with partition 1 of group `a`).
//!
//! # Newest tick wins
//!
//! Prices are written by a Lua script (`EVALSHA`, up to
//! [`SCRIPT_CELLS`] cells per call, several calls per pipelined round trip)
//! that replaces a stored price only when the stored tick is absent or
//! older. The same tick with the same payload is a harmless replay; the same
//! tick with a different payload leaves the stored price and counts a
//! conflict ([`RedisStats::price_conflicts`]). Writes are therefore
//! idempotent and safe to retry, and instances or replays racing on a cell
//! converge on its newest tick. Ticks are compared as Lua numbers (exact
//! below 2^53).
//!
//! Snapshots are written in one `MULTI`/`EXEC` per snapshot (all its
//! partitions), guarded by `WATCH` on the index keys. Each index is trimmed
//! to the newest `snapshot_keep` ticks in the same transaction, deleting
//! trimmed blobs. Reads watch the indexes and fetch the blobs they list in
//! a transaction that aborts (and is retried) if an index changed, so a
//! reader never sees some partitions of a snapshot without the others.
//!
//! # Degraded behaviour
//!
//! Redis may be down at start or go down at any time; the service keeps
//! running:
//! - [`RedisStore::put_prices`] and [`RedisStore::put_snapshot`] never
//!   block on Redis: they queue and return. Queued prices coalesce per cell
//!   to the newest tick, so the queue holds at most one entry per distinct
//!   cell however long Redis is away; a newer snapshot of a group replaces
//!   a queued older one.
//! - Two threads (`primetime-redis-prices`, `primetime-redis-snapshots`)
//!   each own one connection and write the queues; on failure they keep the
//!   unwritten entries queued and reconnect with backoff (100 ms doubling
//!   to 2 s). When Redis returns, the queues are written (catch-up).
//! - Reads ([`RedisStore::get_prices`], [`RedisStore::get_snapshots`]) are
//!   blocking and use their own pooled connections; for a second after
//!   Redis was found unreachable they fail at once without trying.
//! - Health is [`RedisStats::up`]; transitions are logged once.
//!
//! # Modules
//!
//! - this file: the handle [`RedisStore`], its config, errors and the
//!   state its threads share;
//! - `queues`: the coalescing queues, pure data structures;
//! - `link`: connections, reconnect backoff, health and read pooling;
//! - `prices`: the price table (the Lua script, the price writer, reads);
//! - `snapshots`: snapshot `WATCH`/`MULTI` transactions and their writer;
//! - `metrics`: the store's counters and their Prometheus families.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, RedisError};
use primetime_core::Tick;
use serde::{Deserialize, Serialize};
use thiserror::Error;

mod link;
mod metrics;
mod prices;
mod queues;
mod snapshots;

pub use metrics::{RedisStats, render_redis_metrics};
pub use prices::{PIPELINE_SCRIPTS, SCRIPT_CELLS};

use link::{HEALTH_UNKNOWN, is_connection_error};
use queues::{PriceQueue, Progress, SnapshotJob, SnapshotQueue};

/// Whole budget of [`RedisStore::shutdown`].
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);
/// Part of the shutdown budget left for the threads to exit after the flush.
const SHUTDOWN_JOIN: Duration = Duration::from_millis(200);

/// `[redis]` in the service config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; empty = no Redis (embedded default).
    pub url: String,
    /// Prefix of every key. Default `primetime`.
    pub key_prefix: String,
    /// Connect timeout. Default 500 ms.
    pub connect_timeout_ms: u64,
    /// Read and write socket timeouts of every operation. Default 1000 ms.
    pub op_timeout_ms: u64,
    /// Take a snapshot every N ticks (0 = never). Default 6.
    pub snapshot_every_ticks: i64,
    /// Snapshots kept per partition. Default 4.
    pub snapshot_keep: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "primetime".to_owned(),
            connect_timeout_ms: 500,
            op_timeout_ms: 1000,
            snapshot_every_ticks: 6,
            snapshot_keep: 4,
        }
    }
}

impl RedisConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Every invalid value, as `redis.<field>: <problem>` lines for the
    /// service's configuration report (empty when valid).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled()
            && let Err(e) = Client::open(self.url.as_str())
        {
            problems.push(format!("redis.url: {:?} is not a redis url: {e}", self.url));
        }
        if self.key_prefix.is_empty() {
            problems.push("redis.key_prefix: must not be empty".to_owned());
        }
        if self.connect_timeout_ms == 0 {
            problems.push("redis.connect_timeout_ms: must be at least 1".to_owned());
        }
        if self.op_timeout_ms == 0 {
            problems.push("redis.op_timeout_ms: must be at least 1".to_owned());
        }
        if self.snapshot_every_ticks < 0 {
            problems.push(format!(
                "redis.snapshot_every_ticks: must be >= 0, got {}",
                self.snapshot_every_ticks
            ));
        }
        if self.snapshot_keep == 0 {
            problems.push("redis.snapshot_keep: must be at least 1".to_owned());
        }
        problems
    }

    // A zero socket timeout is an error for std, hence the floor of 1 ms.
    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms.max(1))
    }
}

/// One cell's stored price: `payload` is an encoded `PriceUpdate` protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPrice {
    /// H3 index in hex.
    pub cell: String,
    pub tick: Tick,
    pub payload: Vec<u8>,
}

/// One input partition's blob of a snapshot, as handed to
/// [`RedisStore::put_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPart {
    pub partition: u32,
    pub blob: Vec<u8>,
}

/// One stored snapshot blob of a partition, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub tick: Tick,
    pub blob: Vec<u8>,
}

/// Per partition, its stored snapshots, newest first.
pub type SnapshotsByPartition = BTreeMap<u32, Vec<StoredSnapshot>>;

#[derive(Debug, Error)]
pub enum RedisStoreError {
    #[error("invalid redis url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Redis was found unreachable less than a second ago; nothing was tried.
    #[error("redis is down (found unreachable {since_ms} ms ago)")]
    Down { since_ms: u64 },
    /// Connecting failed or the connection broke.
    #[error("redis unreachable: {0}")]
    Unreachable(#[source] RedisError),
    #[error("redis timed out: {0}")]
    Timeout(#[source] RedisError),
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Redis(#[source] RedisError),
    #[error("cannot start a redis thread: {0}")]
    Spawn(#[source] std::io::Error),
}

impl RedisStoreError {
    /// Redis cannot be used right now (down, unreachable, timed out): the
    /// caller may answer "unavailable" and retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Down { .. } | Self::Unreachable(_) | Self::Timeout(_)
        )
    }

    fn from_redis(e: RedisError) -> Self {
        if e.is_timeout() {
            Self::Timeout(e)
        } else if is_connection_error(&e) {
            Self::Unreachable(e)
        } else {
            Self::Redis(e)
        }
    }
}

/// Handle to the store; clones share it. Dropping the last clone stops the
/// threads without flushing; call [`RedisStore::shutdown`] to flush first.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The two writer threads; a mutex only so that `shutdown(&self)` can
    /// take them out to join.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.request_stop();
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("RedisStore")
            .field("key_prefix", &shared.config.key_prefix)
            .field("up", &shared.stats.up.load(Relaxed))
            .field("pending_cells", &shared.stats.pending_cells.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Fails only on an invalid URL (or if a thread cannot be spawned); a
    /// Redis that is down is retried in the background.
    pub fn start(config: &RedisConfig) -> Result<Self, RedisStoreError> {
        if !config.enabled() {
            return Err(RedisStoreError::InvalidUrl {
                url: String::new(),
                reason: "empty (redis disabled)".to_owned(),
            });
        }
        let client =
            Client::open(config.url.as_str()).map_err(|e| RedisStoreError::InvalidUrl {
                url: config.url.clone(),
                reason: e.to_string(),
            })?;
        let shared = Arc::new(Shared::new(config.clone(), client));
        let inner = Inner {
            shared: Arc::clone(&shared),
            threads: Mutex::new(Vec::with_capacity(2)),
        };
        // One thread per queue, each with its own connection, so that a
        // large snapshot never delays price writes. On an early return
        // `inner` drops and stops what was started.
        let prices = spawn("primetime-redis-prices", &shared, prices::run_price_writer)?;
        lock(&inner.threads).push(prices);
        let snapshots = spawn(
            "primetime-redis-snapshots",
            &shared,
            snapshots::run_snapshot_writer,
        )?;
        lock(&inner.threads).push(snapshots);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn stats(&self) -> &RedisStats {
        &self.inner.shared.stats
    }

    pub fn is_up(&self) -> bool {
        self.inner.shared.stats.up.load(Relaxed)
    }

    pub fn config(&self) -> &RedisConfig {
        &self.inner.shared.config
    }

    /// Non-blocking. Queues a tick's prices for the writer thread. Pending
    /// writes coalesce per cell to the newest tick (an equal tick keeps the
    /// first payload and counts a conflict if they differ), so the queue
    /// holds at most one entry per distinct cell while Redis is down.
    pub fn put_prices(&self, prices: Vec<StoredPrice>) {
        let shared = &self.inner.shared;
        if prices.is_empty() || shared.stopping() {
            return;
        }
        let mut conflicts = 0;
        {
            let mut queue = lock(&shared.prices);
            for price in prices {
                if queue.push(price) {
                    conflicts += 1;
                }
            }
            queue.progress.queued += 1;
            shared.stats.pending_cells.store(queue.cells(), Relaxed);
        }
        if conflicts > 0 {
            shared.stats.price_conflicts.fetch_add(conflicts, Relaxed);
        }
        shared.prices_work.notify_one();
    }

    /// Blocking (call it from `spawn_blocking`): the stored price of each
    /// cell, in order, `None` if absent. Fails at once when Redis was found
    /// unreachable less than a second ago; otherwise bounded by the connect
    /// and operation timeouts. Never uses the writers' connections.
    pub fn get_prices(
        &self,
        cells: &[String],
    ) -> Result<Vec<Option<StoredPrice>>, RedisStoreError> {
        if cells.is_empty() {
            return Ok(Vec::new());
        }
        let shared = &self.inner.shared;
        shared.with_reader("get_prices", |con| prices::read_prices(shared, con, cells))
    }

    /// Non-blocking. Queues one snapshot: the blobs of several partitions of
    /// `group` at `tick`, written atomically by the snapshot thread (never
    /// delaying price writes). A queued snapshot of the same group is
    /// replaced by a newer one; an older one than the queued is dropped.
    pub fn put_snapshot(&self, group: &str, tick: Tick, parts: Vec<SnapshotPart>) {
        let shared = &self.inner.shared;
        if parts.is_empty() || shared.stopping() {
            return;
        }
        {
            let mut queue = lock(&shared.snapshots);
            queue.push(group.to_owned(), SnapshotJob { tick, parts });
            queue.progress.queued += 1;
        }
        shared.snapshots_work.notify_one();
    }

    /// Blocking: per requested partition, its stored snapshots, newest
    /// first; partitions without any are absent. The result is a
    /// consistent cut: never some partitions of a snapshot without the
    /// others.
    pub fn get_snapshots(
        &self,
        group: &str,
        partitions: &[u32],
    ) -> Result<SnapshotsByPartition, RedisStoreError> {
        let partitions: Vec<u32> = partitions
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let shared = &self.inner.shared;
        shared.with_reader("get_snapshots", |con| {
            snapshots::read_snapshots(shared, con, group, &partitions)
        })
    }

    /// Waits until everything queued before the call is written (true) or
    /// `timeout` passes (false).
    pub fn flush(&self, timeout: Duration) -> bool {
        let shared = &self.inner.shared;
        let deadline = deadline_after(timeout);
        wait_written(shared, &shared.prices, &shared.prices_done, deadline, |q| {
            &q.progress
        }) && wait_written(
            shared,
            &shared.snapshots,
            &shared.snapshots_done,
            deadline,
            |q| &q.progress,
        )
    }

    /// Stops the threads after a final flush attempt; returns within 2 s.
    /// A thread still inside a Redis call then is left to finish it alone.
    /// Later puts are ignored.
    pub fn shutdown(&self) {
        let shared = &self.inner.shared;
        let deadline = deadline_after(SHUTDOWN_BUDGET);
        if !shared.stopping() && !self.flush(SHUTDOWN_BUDGET.saturating_sub(SHUTDOWN_JOIN)) {
            tracing::warn!(
                pending_cells = shared.stats.pending_cells.load(Relaxed),
                "redis shutdown with writes still queued"
            );
        }
        shared.request_stop();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for thread in threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!(
                    thread = thread.thread().name().unwrap_or_default(),
                    "redis thread busy at shutdown, detached"
                );
            }
        }
    }
}

fn spawn(
    name: &str,
    shared: &Arc<Shared>,
    run: fn(Arc<Shared>),
) -> Result<JoinHandle<()>, RedisStoreError> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || run(shared))
        .map_err(RedisStoreError::Spawn)
}

/// State shared by the handle, the two writer threads and the readers.
///
/// Locks are std mutexes: every critical section is a few map operations,
/// never a Redis call, and the lockers are plain threads (the HTTP side
/// reads through `spawn_blocking`).
struct Shared {
    config: RedisConfig,
    client: Client,
    script: ::redis::Script,
    stats: RedisStats,
    /// `link::HEALTH_*`: logs each transition once.
    health: AtomicU8,
    epoch: Instant,
    /// 1 + ms since `epoch` when Redis was last found unreachable; 0 = never.
    unreachable_at_ms: AtomicU64,
    /// Set once; threads exit and puts are ignored.
    stop: AtomicBool,
    /// Guards nothing: exists so that backoff sleeps can wait on `stop_cv`
    /// and a stop wakes them at once.
    stop_lock: Mutex<()>,
    /// Signalled on stop; backoff sleeps wait on it.
    stop_cv: Condvar,
    /// Price cells not yet written; shared by `put_prices` and the price
    /// writer.
    prices: Mutex<PriceQueue>,
    /// Signalled on new prices (and on stop): wakes the price writer.
    prices_work: Condvar,
    /// Signalled when the price writer advances `progress.written`: wakes
    /// `flush`.
    prices_done: Condvar,
    /// Snapshots not yet written; shared by `put_snapshot` and the
    /// snapshot writer.
    snapshots: Mutex<SnapshotQueue>,
    /// Signalled on a new snapshot (and on stop): wakes the snapshot writer.
    snapshots_work: Condvar,
    /// Signalled when the snapshot writer advances `progress.written`:
    /// wakes `flush`.
    snapshots_done: Condvar,
    /// Idle read connections, taken by one read at a time.
    readers: Mutex<Vec<Connection>>,
}

impl Shared {
    fn new(config: RedisConfig, client: Client) -> Self {
        Self {
            config,
            client,
            script: ::redis::Script::new(prices::PUT_PRICES_LUA),
            stats: RedisStats::default(),
            health: AtomicU8::new(HEALTH_UNKNOWN),
            epoch: Instant::now(),
            unreachable_at_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stop_cv: Condvar::new(),
            prices: Mutex::new(PriceQueue::default()),
            prices_work: Condvar::new(),
            prices_done: Condvar::new(),
            snapshots: Mutex::new(SnapshotQueue::default()),
            snapshots_work: Condvar::new(),
            snapshots_done: Condvar::new(),
            readers: Mutex::new(Vec::new()),
        }
    }

    fn price_key(&self, cell: &str) -> String {
        format!("{}:price:{cell}", self.config.key_prefix)
    }

    fn snap_index_key(&self, group: &str, partition: u32) -> String {
        format!("{}:snap:{group}:{partition}", self.config.key_prefix)
    }

    fn snap_blob_key(&self, group: &str, partition: u32, tick: i64) -> String {
        format!("{}:snap:{group}:{partition}:{tick}", self.config.key_prefix)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    fn request_stop(&self) {
        self.stop.store(true, Relaxed);
        // Taking each lock before notifying means a thread that checked
        // `stop` under it is already waiting, so the wake-up is not lost.
        drop(lock(&self.stop_lock));
        self.stop_cv.notify_all();
        drop(lock(&self.prices));
        self.prices_work.notify_all();
        self.prices_done.notify_all();
        drop(lock(&self.snapshots));
        self.snapshots_work.notify_all();
        self.snapshots_done.notify_all();
    }

    /// Sleeps `delay` unless stopped first; true if stopped.
    fn sleep(&self, delay: Duration) -> bool {
        let guard = lock(&self.stop_lock);
        let _guard = self
            .stop_cv
            .wait_timeout_while(guard, delay, |()| !self.stopping())
            .unwrap_or_else(PoisonError::into_inner);
        self.stopping()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data
    // (plain inserts and counters), so poisoning is ignored.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

/// Waits for the writer to catch up with the puts made so far; false at
/// `deadline` or once stopped (the writer will not write any more).
fn wait_written<Q>(
    shared: &Shared,
    mutex: &Mutex<Q>,
    done: &Condvar,
    deadline: Instant,
    progress: impl Fn(&Q) -> &Progress,
) -> bool {
    let mut queue = lock(mutex);
    let target = progress(&queue).queued;
    loop {
        if progress(&queue).written >= target {
            return true;
        }
        let now = Instant::now();
        if now >= deadline || shared.stopping() {
            return false;
        }
        queue = done
            .wait_timeout(queue, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(cell: &str, tick: i64, payload: &str) -> StoredPrice {
        StoredPrice {
            cell: cell.to_owned(),
            tick: Tick(tick),
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn config_defaults_and_file() {
        let config = RedisConfig::default();
        assert!(!config.enabled());
        assert_eq!(config.key_prefix, "primetime");
        assert_eq!(
            (config.connect_timeout_ms, config.op_timeout_ms),
            (500, 1000)
        );
        assert_eq!((config.snapshot_every_ticks, config.snapshot_keep), (6, 4));
        assert!(config.problems().is_empty());

        let config: RedisConfig =
            toml::from_str("url = \"redis://127.0.0.1:6379/2\"\nsnapshot_keep = 2\n").unwrap();
        assert!(config.enabled());
        assert_eq!(config.snapshot_keep, 2);
        assert_eq!(config.op_timeout_ms, 1000);
        assert!(toml::from_str::<RedisConfig>("urll = \"x\"\n").is_err());

        let bad = RedisConfig {
            url: "http://nope".to_owned(),
            snapshot_keep: 0,
            ..RedisConfig::default()
        };
        assert_eq!(bad.problems().len(), 2, "{:?}", bad.problems());
        assert!(matches!(
            RedisStore::start(&bad),
            Err(RedisStoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            RedisStore::start(&RedisConfig::default()),
            Err(RedisStoreError::InvalidUrl { .. })
        ));
    }

    /// Needs no server: nothing listens on port 1. The tests against a
    /// live Redis are in the e2e crate (`tests/redis_store.rs`).
    #[test]
    fn unreachable_redis_never_blocks_and_reads_fail_fast() {
        let config = RedisConfig {
            url: "redis://127.0.0.1:1".to_owned(),
            key_prefix: "primetime-test:unreachable".to_owned(),
            ..RedisConfig::default()
        };
        let start = Instant::now();
        let store = RedisStore::start(&config).unwrap();
        for tick in 0..100 {
            store.put_prices(
                (0..100)
                    .map(|c| price(&format!("c{c}"), tick, "x"))
                    .collect(),
            );
            store.put_snapshot(
                "g",
                Tick(tick),
                vec![SnapshotPart {
                    partition: 0,
                    blob: vec![0; 1024],
                }],
            );
        }
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
        assert!(!store.is_up());
        assert_eq!(store.stats().pending_cells.load(Relaxed), 100);

        let first = store.get_prices(&["c1".to_owned()]);
        assert!(
            first.as_ref().is_err_and(RedisStoreError::is_unavailable),
            "{first:?}"
        );
        let second = Instant::now();
        let err = store.get_prices(&["c1".to_owned()]).unwrap_err();
        assert!(
            second.elapsed() < Duration::from_millis(100),
            "{:?}",
            second.elapsed()
        );
        assert!(matches!(err, RedisStoreError::Down { .. }), "{err}");
        assert!(store.get_snapshots("g", &[0]).is_err());
        assert!(store.stats().read_errors.load(Relaxed) >= 3);
        assert!(!store.is_up());
        assert!(!store.flush(Duration::from_millis(100)));

        let shutdown = Instant::now();
        store.shutdown();
        assert!(
            shutdown.elapsed() <= Duration::from_millis(2100),
            "{:?}",
            shutdown.elapsed()
        );
        store.put_prices(vec![price("late", 1, "x")]);
    }
}
