//! Connections to Redis: each writer thread's [`Link`] (one connection,
//! reconnect backoff), the pooled read connections, and the health state
//! every operation updates (`up`, fail-fast after an outage, one log line
//! per transition).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ::redis::{Connection, ErrorKind, RedisError, RedisResult};

use super::{RedisStoreError, Shared, lock};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Reads fail without trying for this long after Redis was found unreachable.
const FAIL_FAST_FOR: Duration = Duration::from_secs(1);
/// Idle read connections kept for reuse.
const IDLE_READERS: usize = 4;

pub(super) const HEALTH_UNKNOWN: u8 = 0;
const HEALTH_UP: u8 = 1;
const HEALTH_DOWN: u8 = 2;

/// The connection cannot be trusted any more (I/O failure, timeout, broken
/// stream): drop it and count Redis as down.
pub(super) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error()
}

/// A writer thread's connection with its reconnect backoff.
pub(super) struct Link {
    con: Option<Connection>,
    backoff: Duration,
}

impl Link {
    pub(super) fn new() -> Self {
        Self {
            con: None,
            backoff: BACKOFF_MIN,
        }
    }

    pub(super) fn is_connected(&self) -> bool {
        self.con.is_some()
    }

    /// Runs `op` on the connection, connecting first if needed (`prepare`
    /// runs on each new connection); one retry on a fresh connection when
    /// an existing one turns out broken. Drops the connection on any error
    /// except a server error reply.
    pub(super) fn run<T>(
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
    pub(super) fn connect(
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
    pub(super) fn next_backoff(&mut self) -> Duration {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        delay
    }
}

impl Shared {
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

    pub(super) fn mark_up(&self) {
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
    pub(super) fn mark_failed(&self, e: &RedisError, op: &'static str) {
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
    pub(super) fn with_reader<T>(
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
