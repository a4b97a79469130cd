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

use std::collections::{BTreeMap, BTreeSet, btree_map, hash_map};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Client, Connection, ErrorKind, RedisError, RedisResult, ServerErrorKind};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most cells per script call: bounds how long one call holds Redis.
pub const SCRIPT_CELLS: usize = 1000;
/// Script calls per pipelined round trip.
const PIPELINE_SCRIPTS: usize = 8;
/// Most cells per read round trip.
const READ_CHUNK: usize = 1000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Reads fail without trying for this long after Redis was found unreachable.
const FAIL_FAST_FOR: Duration = Duration::from_secs(1);
/// The price writer pings an idle connection this often, so `up` stays
/// true to fact when nothing is written.
const IDLE_PING: Duration = Duration::from_secs(1);
/// Whole budget of [`RedisStore::shutdown`].
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);
/// Part of the shutdown budget left for the threads to exit after the flush.
const SHUTDOWN_JOIN: Duration = Duration::from_millis(200);
/// Idle read connections kept for reuse.
const IDLE_READERS: usize = 4;
/// A snapshot transaction aborted by a concurrent change of its indexes is
/// retried this many times before the attempt counts as failed.
const SNAPSHOT_TX_ATTEMPTS: usize = 3;

/// Newest tick wins, per cell. KEYS[i] is a cell's price hash, ARGV[2i-1]
/// its tick and ARGV[2i] its payload. Returns `{conflicts, invalid}`:
/// conflicts are equal ticks with another payload (the stored one stays),
/// invalid are keys holding another type (skipped, so one foreign key
/// cannot make a batch fail forever).
const PUT_PRICES_LUA: &str = r"
local conflicts = 0
local invalid = 0
for i, key in ipairs(KEYS) do
  local tick = ARGV[2 * i - 1]
  local payload = ARGV[2 * i]
  local stored = redis.pcall('HGET', key, 't')
  if type(stored) == 'table' and stored.err then
    invalid = invalid + 1
  else
    local stored_tick = stored and tonumber(stored)
    local new_tick = tonumber(tick)
    if not stored_tick or stored_tick < new_tick then
      redis.call('HSET', key, 't', tick, 'p', payload)
    elseif stored_tick == new_tick and redis.call('HGET', key, 'p') ~= payload then
      conflicts = conflicts + 1
    end
  end
end
return {conflicts, invalid}
";

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
    pub tick: i64,
    pub payload: Vec<u8>,
}

/// Per partition, its stored snapshots `(tick, blob)`, newest first.
pub type SnapshotsByPartition = BTreeMap<u32, Vec<(i64, Vec<u8>)>>;

/// A price hash as read back: `HMGET key t p`.
type PriceRow = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Counters and gauges of the store, read by the metrics exporter.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// The last operation succeeded (false until the first one does).
    pub up: AtomicBool,
    /// Cells sent through the price script, including those it left
    /// unchanged because Redis held a newer or equal tick (counter).
    pub price_cells_written: AtomicU64,
    /// Same (cell, tick) already stored or queued with another payload; the
    /// first one is kept (counter).
    pub price_conflicts: AtomicU64,
    /// Cells queued or being written, not yet written (gauge).
    pub pending_cells: AtomicU64,
    /// Failed price write round trips, plus price keys skipped because they
    /// hold another type (counter).
    pub write_errors: AtomicU64,
    /// Failed reads, including those refused fast while Redis is down
    /// (counter).
    pub read_errors: AtomicU64,
    /// Snapshots (all partitions of one group at one tick) written (counter).
    pub snapshots_written: AtomicU64,
    /// Failed snapshot write attempts (counter).
    pub snapshot_errors: AtomicU64,
    /// Total blob bytes of the last snapshot written (gauge).
    pub last_snapshot_bytes: AtomicU64,
    /// Tick of the last snapshot written (gauge).
    pub last_snapshot_tick: AtomicI64,
}

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

/// The connection cannot be trusted any more (I/O failure, timeout, broken
/// stream): drop it and count Redis as down.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error()
}

/// Handle to the store; clones share it. Dropping the last clone stops the
/// threads without flushing; call [`RedisStore::shutdown`] to flush first.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
            config: config.clone(),
            client,
            script: redis::Script::new(PUT_PRICES_LUA),
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
        });
        let inner = Inner {
            shared: Arc::clone(&shared),
            threads: Mutex::new(Vec::with_capacity(2)),
        };
        // On an early return `inner` drops and stops what was started.
        let prices = spawn("primetime-redis-prices", &shared, run_price_writer)?;
        lock(&inner.threads).push(prices);
        let snapshots = spawn("primetime-redis-snapshots", &shared, run_snapshot_writer)?;
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
                if queue.push(price.cell, price.tick, price.payload) {
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
        shared.with_reader("get_prices", |con| {
            let mut out = Vec::with_capacity(cells.len());
            for chunk in cells.chunks(READ_CHUNK) {
                let mut pipe = redis::pipe();
                for cell in chunk {
                    pipe.cmd("HMGET")
                        .arg(shared.price_key(cell))
                        .arg("t")
                        .arg("p");
                }
                let rows: Vec<PriceRow> = pipe.query(con)?;
                out.extend(
                    chunk
                        .iter()
                        .zip(rows)
                        .map(|(cell, row)| stored_price(cell, row)),
                );
            }
            Ok(out)
        })
    }

    /// Non-blocking. Queues one snapshot: the blobs of several partitions of
    /// `group` at `tick`, written atomically by the snapshot thread (never
    /// delaying price writes). A queued snapshot of the same group is
    /// replaced by a newer one; an older one than the queued is dropped.
    pub fn put_snapshot(&self, group: &str, tick: i64, parts: Vec<(u32, Vec<u8>)>) {
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

    /// Blocking: per requested partition, its stored snapshots `(tick,
    /// blob)`, newest first; partitions without any are absent. The result
    /// is a consistent cut: never some partitions of a snapshot without
    /// the others.
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
            read_snapshots(shared, con, group, &partitions)
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

fn stored_price(cell: &str, (tick, payload): PriceRow) -> Option<StoredPrice> {
    let (tick, payload) = (tick?, payload?);
    let Some(tick) = std::str::from_utf8(&tick)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
    else {
        tracing::warn!(cell, "ignoring a stored price with a malformed tick");
        return None;
    };
    Some(StoredPrice {
        cell: cell.to_owned(),
        tick,
        payload,
    })
}

const HEALTH_UNKNOWN: u8 = 0;
const HEALTH_UP: u8 = 1;
const HEALTH_DOWN: u8 = 2;

/// State shared by the handle, the two writer threads and the readers.
struct Shared {
    config: RedisConfig,
    client: Client,
    script: redis::Script,
    stats: RedisStats,
    /// `HEALTH_*`: logs each transition once.
    health: AtomicU8,
    epoch: Instant,
    /// 1 + ms since `epoch` when Redis was last found unreachable; 0 = never.
    unreachable_at_ms: AtomicU64,
    /// Set once; threads exit and puts are ignored.
    stop: AtomicBool,
    /// Backoff sleeps wait on this, so a stop wakes them.
    stop_lock: Mutex<()>,
    stop_cv: Condvar,
    prices: Mutex<PriceQueue>,
    /// Signalled on new prices (and on stop).
    prices_work: Condvar,
    /// Signalled when the writer advances `progress.written`.
    prices_done: Condvar,
    snapshots: Mutex<SnapshotQueue>,
    snapshots_work: Condvar,
    snapshots_done: Condvar,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
}

impl Shared {
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

    fn since_epoch_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn connect(&self) -> RedisResult<Connection> {
        let con = self
            .client
            .get_connection_with_timeout(self.config.connect_timeout())?;
        con.set_read_timeout(Some(self.config.op_timeout()))?;
        con.set_write_timeout(Some(self.config.op_timeout()))?;
        Ok(con)
    }

    fn mark_up(&self) {
        self.stats.up.store(true, Relaxed);
        match self.health.swap(HEALTH_UP, Relaxed) {
            HEALTH_UNKNOWN => tracing::info!(
                addr = %self.client.get_connection_info().addr(),
                "redis connected"
            ),
            HEALTH_DOWN => tracing::info!("redis back"),
            _ => {}
        }
    }

    /// Any failed operation: `up` turns false. Unreachable (connection
    /// errors) also makes reads fail fast for [`FAIL_FAST_FOR`].
    fn mark_failed(&self, e: &RedisError, op: &'static str) {
        self.stats.up.store(false, Relaxed);
        if is_connection_error(e) {
            self.unreachable_at_ms
                .store(self.since_epoch_ms().saturating_add(1), Relaxed);
        }
        if self.health.swap(HEALTH_DOWN, Relaxed) != HEALTH_DOWN {
            tracing::warn!(error = %e, op, "redis down, price writes queued");
        }
    }

    /// How long ago Redis was found unreachable, if that is recent enough
    /// to fail without trying.
    fn recently_unreachable(&self) -> Option<u64> {
        if self.stats.up.load(Relaxed) {
            return None;
        }
        let at = self.unreachable_at_ms.load(Relaxed);
        if at == 0 {
            return None;
        }
        let since = self.since_epoch_ms().saturating_add(1).saturating_sub(at);
        (u128::from(since) < FAIL_FAST_FOR.as_millis()).then_some(since)
    }

    /// Runs a read on a pooled (or new) connection: one retry on a fresh
    /// connection when a pooled one turns out broken (Redis restarted).
    fn with_reader<T>(
        &self,
        op: &'static str,
        mut read: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, RedisStoreError> {
        let result = self.try_read(op, &mut read);
        if result.is_err() {
            self.stats.read_errors.fetch_add(1, Relaxed);
        }
        result
    }

    fn try_read<T>(
        &self,
        op: &'static str,
        read: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, RedisStoreError> {
        if let Some(since_ms) = self.recently_unreachable() {
            return Err(RedisStoreError::Down { since_ms });
        }
        let pooled = lock(&self.readers).pop();
        if let Some(mut con) = pooled {
            match read(&mut con) {
                Ok(value) => {
                    self.return_reader(con);
                    self.mark_up();
                    return Ok(value);
                }
                // Broken while idle in the pool: try a fresh connection.
                Err(e) if e.is_connection_dropped() => {}
                Err(e) => return Err(self.read_failed(e, con, op)),
            }
        }
        let mut con = self.connect().map_err(|e| {
            self.mark_failed(&e, op);
            RedisStoreError::from_redis(e)
        })?;
        match read(&mut con) {
            Ok(value) => {
                self.return_reader(con);
                self.mark_up();
                Ok(value)
            }
            Err(e) => Err(self.read_failed(e, con, op)),
        }
    }

    fn read_failed(&self, e: RedisError, con: Connection, op: &'static str) -> RedisStoreError {
        if is_connection_error(&e) {
            self.mark_failed(&e, op);
        } else {
            // Redis answered (e.g. a key of another type): the connection
            // is in sync and Redis is up; only this read failed.
            self.return_reader(con);
            tracing::warn!(error = %e, op, "redis read failed");
        }
        RedisStoreError::from_redis(e)
    }

    fn return_reader(&self, con: Connection) {
        let mut readers = lock(&self.readers);
        if readers.len() < IDLE_READERS {
            readers.push(con);
        }
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

/// Queue sequence numbers: `flush` waits for `written` to reach the
/// `queued` it saw.
#[derive(Debug, Default)]
struct Progress {
    /// Puts so far.
    queued: u64,
    /// Every put up to this one is written.
    written: u64,
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

#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingPrice {
    tick: i64,
    payload: Vec<u8>,
}

/// Prices not yet written, one entry per cell (newest tick).
#[derive(Debug, Default)]
struct PriceQueue {
    pending: FxHashMap<String, PendingPrice>,
    /// Cells taken by the writer and not yet written.
    in_flight: usize,
    progress: Progress,
}

impl PriceQueue {
    /// Keeps the newer tick of a cell; an equal tick keeps the first
    /// payload (as Redis would). True for an equal tick with another payload.
    fn push(&mut self, cell: String, tick: i64, payload: Vec<u8>) -> bool {
        match self.pending.entry(cell) {
            hash_map::Entry::Vacant(entry) => {
                entry.insert(PendingPrice { tick, payload });
                false
            }
            hash_map::Entry::Occupied(mut entry) => {
                let queued = entry.get_mut();
                if tick > queued.tick {
                    *queued = PendingPrice { tick, payload };
                    false
                } else {
                    tick == queued.tick && payload != queued.payload
                }
            }
        }
    }

    /// Gives back cells the writer failed to write; newer puts since win.
    /// Returns the conflicts found.
    fn requeue(&mut self, cells: Vec<(String, PendingPrice)>) -> u64 {
        self.in_flight = 0;
        let mut conflicts = 0;
        for (cell, price) in cells {
            match self.pending.entry(cell) {
                hash_map::Entry::Vacant(entry) => {
                    entry.insert(price);
                }
                hash_map::Entry::Occupied(mut entry) => {
                    let queued = entry.get_mut();
                    // The failed one was put first, so it wins an equal tick.
                    if price.tick >= queued.tick {
                        if price.tick == queued.tick && price.payload != queued.payload {
                            conflicts += 1;
                        }
                        *queued = price;
                    }
                }
            }
        }
        conflicts
    }

    fn cells(&self) -> u64 {
        (self.pending.len() + self.in_flight) as u64
    }
}

#[derive(Debug)]
struct SnapshotJob {
    tick: i64,
    parts: Vec<(u32, Vec<u8>)>,
}

/// Snapshots not yet written: the newest per group.
#[derive(Debug, Default)]
struct SnapshotQueue {
    pending: BTreeMap<String, SnapshotJob>,
    progress: Progress,
}

impl SnapshotQueue {
    /// Keeps the newer snapshot of a group (the later one for equal ticks).
    fn push(&mut self, group: String, job: SnapshotJob) {
        match self.pending.entry(group) {
            btree_map::Entry::Vacant(entry) => {
                entry.insert(job);
            }
            btree_map::Entry::Occupied(mut entry) => {
                if job.tick >= entry.get().tick {
                    tracing::debug!(
                        group = entry.key(),
                        replaced = entry.get().tick,
                        tick = job.tick,
                        "queued snapshot replaced by a newer one"
                    );
                    entry.insert(job);
                }
            }
        }
    }

    /// Gives back a job the writer failed to write, unless a newer one of
    /// its group was queued since.
    fn requeue(&mut self, group: String, job: SnapshotJob) {
        match self.pending.entry(group) {
            btree_map::Entry::Vacant(entry) => {
                entry.insert(job);
            }
            btree_map::Entry::Occupied(mut entry) => {
                if job.tick > entry.get().tick {
                    entry.insert(job);
                }
            }
        }
    }
}

/// A writer thread's connection with its reconnect backoff.
struct Link {
    con: Option<Connection>,
    backoff: Duration,
}

impl Link {
    fn new() -> Self {
        Self {
            con: None,
            backoff: BACKOFF_MIN,
        }
    }

    /// Runs `op` on the connection, connecting first if needed (`prepare`
    /// runs on each new connection); one retry on a fresh connection when
    /// an existing one turns out broken. Drops the connection on any error
    /// except a server error reply.
    fn run<T>(
        &mut self,
        shared: &Shared,
        prepare: impl Fn(&mut Connection) -> RedisResult<()>,
        mut op: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let reused = self.con.is_some();
        let result = self.run_once(shared, &prepare, &mut op);
        let result = match result {
            Err(e) if reused && e.is_connection_dropped() => {
                self.run_once(shared, &prepare, &mut op)
            }
            other => other,
        };
        match &result {
            Ok(_) => self.backoff = BACKOFF_MIN,
            Err(e) if !matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension) => {
                self.con = None;
            }
            Err(_) => {}
        }
        result
    }

    /// Opens a new connection, replacing the current one.
    fn connect(
        &mut self,
        shared: &Shared,
        prepare: impl Fn(&mut Connection) -> RedisResult<()>,
    ) -> RedisResult<()> {
        self.con = None;
        let mut con = shared.connect()?;
        prepare(&mut con)?;
        self.con = Some(con);
        Ok(())
    }

    fn run_once<T>(
        &mut self,
        shared: &Shared,
        prepare: &impl Fn(&mut Connection) -> RedisResult<()>,
        op: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        if self.con.is_none() {
            self.connect(shared, prepare)?;
        }
        match self.con.as_mut() {
            Some(con) => op(con),
            // Unreachable: set just above.
            None => Err((ErrorKind::Client, "no redis connection").into()),
        }
    }

    /// The delay before the next attempt after a failure (100 ms doubling
    /// to 2 s).
    fn next_backoff(&mut self) -> Duration {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        delay
    }
}

/// `primetime-redis-prices`: writes queued prices, newest tick wins.
fn run_price_writer(shared: Arc<Shared>) {
    let mut link = Link::new();
    let load_script = |con: &mut Connection| shared.script.load(con).map(drop);
    while !shared.stopping() {
        // Connect before taking work: while Redis is down the cells stay
        // in the queue, coalescing, instead of bouncing in and out of it.
        if link.con.is_none() {
            match link.connect(&shared, load_script) {
                Ok(()) => shared.mark_up(),
                Err(e) => {
                    shared.mark_failed(&e, "connect");
                    if shared.sleep(link.next_backoff()) {
                        break;
                    }
                    continue;
                }
            }
        }
        let Some((mut batch, seq)) = take_prices(&shared, IDLE_PING) else {
            if shared.stopping() {
                break;
            }
            // Idle: keep `up` true to fact and the connection warm.
            match link.run(&shared, load_script, |con| {
                redis::cmd("PING").query::<String>(con)
            }) {
                Ok(_) => shared.mark_up(),
                Err(e) => {
                    shared.mark_failed(&e, "ping");
                    if shared.sleep(link.next_backoff()) {
                        break;
                    }
                }
            }
            continue;
        };
        let mut start = 0;
        let mut failure = None;
        while start < batch.len() {
            let end = batch.len().min(start + SCRIPT_CELLS * PIPELINE_SCRIPTS);
            let cells = &batch[start..end];
            match link.run(&shared, load_script, |con| {
                write_price_pipeline(&shared, con, cells)
            }) {
                Ok((conflicts, invalid)) => {
                    let stats = &shared.stats;
                    stats
                        .price_cells_written
                        .fetch_add(cells.len() as u64, Relaxed);
                    stats.price_conflicts.fetch_add(conflicts, Relaxed);
                    if invalid > 0 {
                        stats.write_errors.fetch_add(invalid, Relaxed);
                        tracing::warn!(
                            cells = invalid,
                            "price keys of another type left unwritten"
                        );
                    }
                    let mut queue = lock(&shared.prices);
                    queue.in_flight = queue.in_flight.saturating_sub(cells.len());
                    stats.pending_cells.store(queue.cells(), Relaxed);
                    start = end;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            None => {
                shared.mark_up();
                let mut queue = lock(&shared.prices);
                queue.progress.written = queue.progress.written.max(seq);
                drop(queue);
                shared.prices_done.notify_all();
            }
            Some(e) => {
                shared.stats.write_errors.fetch_add(1, Relaxed);
                shared.mark_failed(&e, "put_prices");
                if !is_connection_error(&e) {
                    tracing::warn!(error = %e, "redis price write failed, retrying");
                }
                let rest = batch.split_off(start);
                let mut queue = lock(&shared.prices);
                let conflicts = queue.requeue(rest);
                shared.stats.pending_cells.store(queue.cells(), Relaxed);
                drop(queue);
                shared.stats.price_conflicts.fetch_add(conflicts, Relaxed);
                if shared.sleep(link.next_backoff()) {
                    break;
                }
            }
        }
    }
}

/// Waits up to `idle` for queued prices and takes them all, with the put
/// sequence they cover; `None` when idle or stopping.
fn take_prices(shared: &Shared, idle: Duration) -> Option<(Vec<(String, PendingPrice)>, u64)> {
    let deadline = deadline_after(idle);
    let mut queue = lock(&shared.prices);
    while queue.pending.is_empty() {
        let now = Instant::now();
        if shared.stopping() || now >= deadline {
            return None;
        }
        queue = shared
            .prices_work
            .wait_timeout(queue, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    if shared.stopping() {
        return None;
    }
    let batch: Vec<(String, PendingPrice)> = queue.pending.drain().collect();
    queue.in_flight = batch.len();
    Some((batch, queue.progress.queued))
}

/// One round trip: up to [`PIPELINE_SCRIPTS`] script calls of up to
/// [`SCRIPT_CELLS`] cells. Returns (conflicts, invalid keys). A script
/// flushed from Redis (`NOSCRIPT`) is loaded again and the round trip
/// repeated, which is safe because the script is idempotent.
fn write_price_pipeline(
    shared: &Shared,
    con: &mut Connection,
    cells: &[(String, PendingPrice)],
) -> RedisResult<(u64, u64)> {
    let mut pipe = redis::pipe();
    for chunk in cells.chunks(SCRIPT_CELLS) {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(shared.script.get_hash()).arg(chunk.len());
        for (cell, _) in chunk {
            cmd.arg(shared.price_key(cell));
        }
        for (_, price) in chunk {
            cmd.arg(price.tick).arg(&price.payload[..]);
        }
        pipe.add_command(cmd);
    }
    let replies: Vec<(u64, u64)> = match pipe.query(con) {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            shared.script.load(con)?;
            pipe.query(con)?
        }
        other => other?,
    };
    Ok(replies
        .into_iter()
        .fold((0, 0), |(c, i), (conflicts, invalid)| {
            (c + conflicts, i + invalid)
        }))
}

/// `primetime-redis-snapshots`: writes queued snapshots on its own
/// connection, so a large blob never delays price writes.
fn run_snapshot_writer(shared: Arc<Shared>) {
    let mut link = Link::new();
    let no_prepare = |_: &mut Connection| Ok(());
    while let Some((jobs, seq)) = take_snapshots(&shared) {
        let mut jobs = jobs.into_iter();
        let mut failure = None;
        for (group, job) in jobs.by_ref() {
            match link.run(&shared, no_prepare, |con| {
                write_snapshot(&shared, con, &group, &job)
            }) {
                Ok(()) => {
                    let stats = &shared.stats;
                    let bytes: usize = job.parts.iter().map(|(_, blob)| blob.len()).sum();
                    stats.snapshots_written.fetch_add(1, Relaxed);
                    stats.last_snapshot_bytes.store(bytes as u64, Relaxed);
                    stats.last_snapshot_tick.store(job.tick, Relaxed);
                    tracing::debug!(group, tick = job.tick, bytes, "snapshot written");
                }
                Err(e) => {
                    failure = Some((e, group, job));
                    break;
                }
            }
        }
        match failure {
            None => {
                shared.mark_up();
                let mut queue = lock(&shared.snapshots);
                queue.progress.written = queue.progress.written.max(seq);
                drop(queue);
                shared.snapshots_done.notify_all();
            }
            Some((e, group, job)) => {
                shared.stats.snapshot_errors.fetch_add(1, Relaxed);
                shared.mark_failed(&e, "put_snapshot");
                if !is_connection_error(&e) {
                    tracing::warn!(error = %e, group, tick = job.tick, "redis snapshot write failed, retrying");
                }
                let mut queue = lock(&shared.snapshots);
                queue.requeue(group, job);
                for (group, job) in jobs {
                    queue.requeue(group, job);
                }
                drop(queue);
                if shared.sleep(link.next_backoff()) {
                    break;
                }
            }
        }
    }
}

/// Waits for queued snapshots and takes them all, with the put sequence
/// they cover; `None` when stopping.
fn take_snapshots(shared: &Shared) -> Option<(BTreeMap<String, SnapshotJob>, u64)> {
    let mut queue = lock(&shared.snapshots);
    while queue.pending.is_empty() && !shared.stopping() {
        queue = shared
            .snapshots_work
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
    }
    if shared.stopping() {
        return None;
    }
    let jobs = std::mem::take(&mut queue.pending);
    Some((jobs, queue.progress.queued))
}

/// Reads the indexes with `WATCH` on them, then the blobs they list in a
/// transaction that aborts if an index changed meanwhile (retried): the
/// result is a consistent cut, never part of a snapshot.
fn read_snapshots(
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
        redis::cmd("WATCH").arg(&index_keys).exec(con)?;
        let mut read = redis::pipe();
        for key in &index_keys {
            read.cmd("ZREVRANGE").arg(key).arg(0).arg(-1);
        }
        let indexes: Vec<Vec<String>> = match read.query(con) {
            Ok(indexes) => indexes,
            Err(e) => {
                let _ = redis::cmd("UNWATCH").exec(con);
                return Err(e);
            }
        };
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
            redis::cmd("UNWATCH").exec(con)?;
            return Ok(out);
        }
        let mut tx = redis::pipe();
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
                out.entry(partition).or_default().push((tick, blob));
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
    let keep = shared.config.snapshot_keep.max(1);
    let index_keys: Vec<String> = job
        .parts
        .iter()
        .map(|&(partition, _)| shared.snap_index_key(group, partition))
        .collect();
    for _ in 0..SNAPSHOT_TX_ATTEMPTS {
        redis::cmd("WATCH").arg(&index_keys).exec(con)?;
        let mut read = redis::pipe();
        for key in &index_keys {
            read.cmd("ZRANGE").arg(key).arg(0).arg(-1);
        }
        let stored: Vec<Vec<String>> = match read.query(con) {
            Ok(stored) => stored,
            Err(e) => {
                let _ = redis::cmd("UNWATCH").exec(con);
                return Err(e);
            }
        };
        let mut tx = redis::pipe();
        tx.atomic();
        for ((&(partition, ref blob), key), members) in
            job.parts.iter().zip(&index_keys).zip(stored)
        {
            tx.cmd("SET")
                .arg(shared.snap_blob_key(group, partition, job.tick))
                .arg(&blob[..])
                .ignore();
            tx.cmd("ZADD").arg(key).arg(job.tick).arg(job.tick).ignore();
            let mut ticks: Vec<i64> = Vec::with_capacity(members.len() + 1);
            for member in members {
                match member.parse() {
                    Ok(tick) => ticks.push(tick),
                    // Not ours: drop it from the index so it cannot linger.
                    Err(_) => {
                        tx.cmd("ZREM").arg(key).arg(member).ignore();
                    }
                }
            }
            ticks.push(job.tick);
            ticks.sort_unstable_by(|a, b| b.cmp(a));
            ticks.dedup();
            for &old in ticks.iter().skip(keep) {
                tx.cmd("ZREM").arg(key).arg(old).ignore();
                tx.cmd("DEL")
                    .arg(shared.snap_blob_key(group, partition, old))
                    .ignore();
            }
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};

    use super::*;

    fn test_url() -> String {
        std::env::var("PRIMETIME_TEST_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    fn price(cell: &str, tick: i64, payload: &str) -> StoredPrice {
        StoredPrice {
            cell: cell.to_owned(),
            tick,
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn unique_prefix(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("primetime-test:{}:{nanos}:{name}", std::process::id())
    }

    /// A unique key prefix on the test Redis; its keys are deleted on drop.
    /// Panics (fails the test) when the test Redis is unreachable.
    struct TestKeys {
        prefix: String,
        url: String,
        con: Connection,
    }

    impl TestKeys {
        fn new(name: &str) -> Self {
            let url = test_url();
            let con = Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .unwrap_or_else(|e| {
                    panic!("test redis {url} (PRIMETIME_TEST_REDIS) unreachable: {e}")
                });
            Self {
                prefix: unique_prefix(name),
                url,
                con,
            }
        }

        fn config(&self) -> RedisConfig {
            RedisConfig {
                url: self.url.clone(),
                key_prefix: self.prefix.clone(),
                ..RedisConfig::default()
            }
        }

        fn keys(&mut self) -> Vec<String> {
            redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut self.con)
                .unwrap()
        }
    }

    impl Drop for TestKeys {
        fn drop(&mut self) {
            let keys = self.keys();
            if !keys.is_empty() {
                let _: RedisResult<()> = redis::cmd("DEL").arg(keys).exec(&mut self.con);
            }
        }
    }

    /// A private `redis-server` on a free port, killed (by its pid) on drop.
    struct PrivateRedis {
        port: u16,
        child: Option<Child>,
    }

    impl PrivateRedis {
        /// A free port with nothing listening yet.
        fn reserve() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            Self { port, child: None }
        }

        fn started() -> Self {
            let mut server = Self::reserve();
            server.start();
            server
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        fn start(&mut self) {
            assert!(self.child.is_none());
            let port = self.port.to_string();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed for this test");
            self.child = Some(child);
            let client = Client::open(self.url()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let ping = client
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
                if ping.is_ok() {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "private redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        fn con(&self) -> Connection {
            Client::open(self.url()).unwrap().get_connection().unwrap()
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn config_for(url: String) -> RedisConfig {
        RedisConfig {
            url,
            key_prefix: unique_prefix("private"),
            ..RedisConfig::default()
        }
    }

    fn stored(store: &RedisStore, cell: &str) -> Option<(i64, String)> {
        store
            .get_prices(&[cell.to_owned()])
            .unwrap()
            .remove(0)
            .map(|p| {
                assert_eq!(p.cell, cell);
                (p.tick, String::from_utf8(p.payload).unwrap())
            })
    }

    const FLUSH: Duration = Duration::from_secs(10);

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

    #[test]
    fn queue_coalesces_per_cell_to_the_newest_tick() {
        let mut queue = PriceQueue::default();
        assert!(!queue.push("a".to_owned(), 5, b"a5".to_vec()));
        assert!(!queue.push("a".to_owned(), 6, b"a6".to_vec()));
        assert!(!queue.push("a".to_owned(), 4, b"a4".to_vec()));
        assert!(!queue.push("a".to_owned(), 6, b"a6".to_vec()), "replay");
        assert!(queue.push("a".to_owned(), 6, b"other".to_vec()), "conflict");
        assert!(!queue.push("b".to_owned(), 1, b"b1".to_vec()));
        assert_eq!(queue.cells(), 2);
        assert_eq!(queue.pending["a"].tick, 6);
        assert_eq!(queue.pending["a"].payload, b"a6");

        // A failed batch comes back under newer puts made meanwhile.
        let taken: Vec<_> = queue.pending.drain().collect();
        queue.in_flight = taken.len();
        queue.push("a".to_owned(), 7, b"a7".to_vec());
        queue.push("b".to_owned(), 1, b"b1-other".to_vec());
        assert_eq!(queue.requeue(taken), 1);
        assert_eq!(queue.cells(), 2);
        assert_eq!(queue.pending["a"].tick, 7);
        assert_eq!(
            queue.pending["b"].payload, b"b1",
            "the first put wins a tie"
        );
    }

    #[test]
    fn newest_tick_wins_and_conflicts_keep_the_first() {
        let keys = TestKeys::new("newest");
        let store = RedisStore::start(&keys.config()).unwrap();

        store.put_prices(vec![price("c", 6, "six"), price("d", 1, "d1")]);
        assert!(store.flush(FLUSH));
        store.put_prices(vec![price("c", 5, "five")]);
        assert!(store.flush(FLUSH));
        assert_eq!(
            stored(&store, "c"),
            Some((6, "six".to_owned())),
            "older tick ignored"
        );

        store.put_prices(vec![price("c", 6, "six")]);
        assert!(store.flush(FLUSH));
        assert_eq!(
            store.stats().price_conflicts.load(Relaxed),
            0,
            "replay is no conflict"
        );

        store.put_prices(vec![price("c", 6, "other")]);
        assert!(store.flush(FLUSH));
        assert_eq!(store.stats().price_conflicts.load(Relaxed), 1);
        assert_eq!(
            stored(&store, "c"),
            Some((6, "six".to_owned())),
            "the first is kept"
        );

        store.put_prices(vec![price("c", 7, "seven")]);
        assert!(store.flush(FLUSH));
        assert_eq!(stored(&store, "c"), Some((7, "seven".to_owned())));
        assert_eq!(stored(&store, "d"), Some((1, "d1".to_owned())));
        assert_eq!(store.stats().price_cells_written.load(Relaxed), 6);
        assert_eq!(store.stats().pending_cells.load(Relaxed), 0);
        assert_eq!(store.stats().write_errors.load(Relaxed), 0);
        assert!(store.is_up());
        store.shutdown();
    }

    #[test]
    fn many_cells_are_written_in_batches() {
        let keys = TestKeys::new("batches");
        let store = RedisStore::start(&keys.config()).unwrap();
        let cells: Vec<String> = (0..SCRIPT_CELLS * PIPELINE_SCRIPTS * 2 + 123)
            .map(|i| format!("8a2a1072b59ffff-{i}"))
            .collect();
        store.put_prices(cells.iter().map(|c| price(c, 3, c)).collect());
        assert!(store.flush(FLUSH));
        let got = store.get_prices(&cells).unwrap();
        assert_eq!(got.len(), cells.len());
        for (cell, got) in cells.iter().zip(got) {
            assert_eq!(got, Some(price(cell, 3, cell)));
        }
        assert_eq!(
            store.stats().price_cells_written.load(Relaxed),
            cells.len() as u64
        );
        store.shutdown();
    }

    #[test]
    fn a_price_key_of_another_type_is_skipped_not_retried() {
        let mut keys = TestKeys::new("foreign");
        let store = RedisStore::start(&keys.config()).unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{}:price:bad", keys.prefix))
            .arg("not a hash")
            .query(&mut keys.con)
            .unwrap();
        store.put_prices(vec![price("bad", 1, "x"), price("good", 1, "g")]);
        assert!(store.flush(FLUSH));
        assert_eq!(store.stats().write_errors.load(Relaxed), 1);
        assert_eq!(stored(&store, "good"), Some((1, "g".to_owned())));
        assert!(store.is_up());
        // Reading it is an error answer, not an outage.
        let err = store.get_prices(&["bad".to_owned()]).unwrap_err();
        assert!(matches!(err, RedisStoreError::Redis(_)), "{err}");
        assert!(store.is_up());
        store.shutdown();
    }

    #[test]
    fn get_prices_returns_none_for_missing_cells() {
        let keys = TestKeys::new("missing");
        let store = RedisStore::start(&keys.config()).unwrap();
        store.put_prices(vec![price("a", 1, "a1"), price("c", 2, "c2")]);
        assert!(store.flush(FLUSH));
        let cells = ["a", "b", "c", "d"].map(str::to_owned);
        let got = store.get_prices(&cells).unwrap();
        assert_eq!(
            got,
            vec![
                Some(price("a", 1, "a1")),
                None,
                Some(price("c", 2, "c2")),
                None
            ]
        );
        assert_eq!(store.get_prices(&[]).unwrap(), Vec::new());
        assert_eq!(store.stats().read_errors.load(Relaxed), 0);
        store.shutdown();
    }

    #[test]
    fn snapshots_round_trip_and_trim_to_keep() {
        let mut keys = TestKeys::new("snapshots");
        let store = RedisStore::start(&keys.config()).unwrap();
        let blob = |partition: u32, tick: i64| format!("p{partition}-t{tick}").into_bytes();
        for tick in 1..=6 {
            store.put_snapshot("shards", tick, (0..3).map(|p| (p, blob(p, tick))).collect());
            assert!(store.flush(FLUSH));
        }
        let got = store.get_snapshots("shards", &[2, 0, 1, 9, 0]).unwrap();
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        for (partition, snapshots) in &got {
            let expected: Vec<(i64, Vec<u8>)> =
                (3..=6).rev().map(|t| (t, blob(*partition, t))).collect();
            assert_eq!(snapshots, &expected, "partition {partition}");
        }
        // Trimmed blobs are gone: 3 indexes + 3 × 4 blobs remain.
        let mut remaining = keys.keys();
        remaining.sort();
        assert_eq!(remaining.len(), 15, "{remaining:?}");
        assert!(!remaining.contains(&format!("{}:snap:shards:0:2", keys.prefix)));
        assert!(remaining.contains(&format!("{}:snap:shards:0:3", keys.prefix)));
        assert!(remaining.contains(&format!("{}:snap:shards:0", keys.prefix)));

        let stats = store.stats();
        assert_eq!(stats.snapshots_written.load(Relaxed), 6);
        assert_eq!(stats.last_snapshot_tick.load(Relaxed), 6);
        assert_eq!(stats.last_snapshot_bytes.load(Relaxed), 3 * 5);
        assert_eq!(stats.snapshot_errors.load(Relaxed), 0);
        assert!(store.get_snapshots("other", &[0]).unwrap().is_empty());
        store.shutdown();
    }

    #[test]
    fn readers_never_see_part_of_a_snapshot() {
        let keys = TestKeys::new("atomic");
        let config = RedisConfig {
            snapshot_keep: 2,
            ..keys.config()
        };
        let store = RedisStore::start(&config).unwrap();
        let partitions: Vec<u32> = (0..4).collect();
        let blob = |partition: u32, tick: i64| {
            let mut blob = vec![0u8; 64 * 1024];
            blob[..12]
                .copy_from_slice(&[&partition.to_le_bytes()[..], &tick.to_le_bytes()[..]].concat());
            blob
        };
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (store, done, partitions) = (store.clone(), Arc::clone(&done), partitions.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Relaxed) {
                    // Reads racing writes may exhaust their retries: an
                    // error, never a torn read.
                    let got = match store.get_snapshots("g", &partitions) {
                        Ok(got) => got,
                        Err(RedisStoreError::Redis(e)) if e.to_string().contains("aborted") => {
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    };
                    // Every partition holds the same ticks: whole snapshots.
                    let ticks: BTreeSet<Vec<i64>> = got
                        .values()
                        .map(|s| s.iter().map(|(tick, _)| *tick).collect())
                        .collect();
                    assert!(
                        got.is_empty() || got.len() == partitions.len(),
                        "{:?}",
                        got.keys()
                    );
                    assert!(ticks.len() <= 1, "partial snapshot visible: {ticks:?}");
                    for (&partition, snapshots) in &got {
                        for (tick, data) in snapshots {
                            assert_eq!(data, &blob(partition, *tick));
                        }
                    }
                    reads += 1;
                }
                reads
            })
        };
        for tick in 1..=100 {
            store.put_snapshot(
                "g",
                tick,
                partitions.iter().map(|&p| (p, blob(p, tick))).collect(),
            );
            assert!(store.flush(FLUSH));
        }
        done.store(true, Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
        let got = store.get_snapshots("g", &partitions).unwrap();
        for snapshots in got.values() {
            assert_eq!(
                snapshots.iter().map(|s| s.0).collect::<Vec<_>>(),
                vec![100, 99]
            );
        }
        store.shutdown();
    }

    #[test]
    fn queued_writes_coalesce_while_redis_is_away() {
        let mut server = PrivateRedis::reserve();
        let store = RedisStore::start(&config_for(server.url())).unwrap();
        store.put_prices(vec![price("a", 5, "a5"), price("b", 1, "b1")]);
        store.put_prices(vec![price("a", 6, "a6"), price("a", 4, "a4")]);
        assert_eq!(store.stats().pending_cells.load(Relaxed), 2);
        store.put_snapshot("g", 1, vec![(0, b"one".to_vec())]);
        store.put_snapshot("g", 2, vec![(0, b"two".to_vec())]);
        store.put_snapshot("g", 1, vec![(0, b"stale".to_vec())]);
        assert!(!store.flush(Duration::from_millis(50)));

        server.start();
        assert!(store.flush(FLUSH));
        assert_eq!(stored(&store, "a"), Some((6, "a6".to_owned())));
        assert_eq!(stored(&store, "b"), Some((1, "b1".to_owned())));
        let stats = store.stats();
        assert_eq!(
            stats.price_cells_written.load(Relaxed),
            2,
            "each cell written once"
        );
        assert_eq!(stats.pending_cells.load(Relaxed), 0);
        assert_eq!(
            stats.snapshots_written.load(Relaxed),
            1,
            "newest snapshot only"
        );
        assert_eq!(
            store.get_snapshots("g", &[0]).unwrap()[&0],
            vec![(2, b"two".to_vec())]
        );
        store.shutdown();
    }

    #[test]
    fn unreachable_redis_never_blocks_and_reads_fail_fast() {
        let config = config_for("redis://127.0.0.1:1".to_owned());
        let start = Instant::now();
        let store = RedisStore::start(&config).unwrap();
        for tick in 0..100 {
            store.put_prices(
                (0..100)
                    .map(|c| price(&format!("c{c}"), tick, "x"))
                    .collect(),
            );
            store.put_snapshot("g", tick, vec![(0, vec![0; 1024])]);
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

    #[test]
    fn queued_writes_are_written_when_redis_returns() {
        let mut server = PrivateRedis::started();
        let store = RedisStore::start(&config_for(server.url())).unwrap();
        store.put_prices(vec![price("a", 1, "a1"), price("b", 1, "b1")]);
        assert!(store.flush(FLUSH));
        assert!(store.is_up());
        assert_eq!(stored(&store, "a"), Some((1, "a1".to_owned())));

        server.kill();
        store.put_prices(vec![
            price("a", 2, "a2"),
            price("b", 2, "b2"),
            price("c", 2, "c2"),
        ]);
        store.put_prices(vec![price("a", 3, "a3")]);
        store.put_snapshot("g", 3, vec![(0, b"s3".to_vec()), (1, b"t3".to_vec())]);
        assert!(!store.flush(Duration::from_millis(500)));
        assert!(!store.is_up());
        assert!(store.stats().write_errors.load(Relaxed) >= 1);
        assert!(store.get_prices(&["a".to_owned()]).is_err());

        server.start();
        assert!(store.flush(FLUSH));
        assert!(store.is_up());
        // The restarted server kept nothing (no persistence): all of this
        // came from the queue.
        let cells = ["a", "b", "c"].map(str::to_owned);
        assert_eq!(
            store.get_prices(&cells).unwrap(),
            vec![
                Some(price("a", 3, "a3")),
                Some(price("b", 2, "b2")),
                Some(price("c", 2, "c2")),
            ]
        );
        assert_eq!(store.stats().pending_cells.load(Relaxed), 0);
        let snapshots = store.get_snapshots("g", &[0, 1]).unwrap();
        assert_eq!(snapshots[&1], vec![(3, b"t3".to_vec())]);
        let mut con = server.con();
        let tick: String = redis::cmd("HGET")
            .arg(format!("{}:price:a", store.config().key_prefix))
            .arg("t")
            .query(&mut con)
            .unwrap();
        assert_eq!(tick, "3");
        store.shutdown();
    }
}
