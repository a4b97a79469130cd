//! The price table: the newest-tick-wins Lua script, the price writer
//! thread (`primetime-redis-prices`) that drains the price queue through
//! it, and reads of stored prices.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ::redis::{Connection, ErrorKind, RedisError, RedisResult, ServerErrorKind};
use primetime_core::Tick;

use super::link::{Link, is_connection_error};
use super::{Shared, StoredPrice, deadline_after, lock};

/// Most cells per script call: bounds how long one call holds Redis.
pub const SCRIPT_CELLS: usize = 1000;
/// Script calls per pipelined round trip.
pub const PIPELINE_SCRIPTS: usize = 8;
/// Most cells per read round trip.
const READ_CHUNK: usize = 1000;
/// The price writer pings an idle connection this often, so `up` stays
/// true to fact when nothing is written.
const IDLE_PING: Duration = Duration::from_secs(1);

/// Newest tick wins, per cell. KEYS[i] is a cell's price hash, ARGV[2i-1]
/// its tick and ARGV[2i] its payload. Returns `{conflicts, invalid}`:
/// conflicts are equal ticks with another payload (the stored one stays),
/// invalid are keys holding another type (skipped, so one foreign key
/// cannot make a batch fail forever).
pub(super) const PUT_PRICES_LUA: &str = r"
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

/// A price hash as read back: `HMGET key t p`.
type PriceRow = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What the script calls of one round trip report, summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ScriptTotals {
    /// Equal ticks with another payload (the stored one stays).
    conflicts: u64,
    /// Keys of another type, skipped.
    invalid: u64,
}

/// Cells taken from the queue, with the put sequence they cover.
struct PriceBatch {
    cells: Vec<StoredPrice>,
    seq: u64,
}

/// A batch write that stopped at a failed round trip.
struct PartialWrite {
    /// Cells written before the failure (a prefix of the batch).
    written: usize,
    error: RedisError,
}

/// The stored price of each cell, in order, `None` if absent.
pub(super) fn read_prices(
    shared: &Shared,
    con: &mut Connection,
    cells: &[String],
) -> RedisResult<Vec<Option<StoredPrice>>> {
    let mut out = Vec::with_capacity(cells.len());
    for chunk in cells.chunks(READ_CHUNK) {
        let mut pipe = ::redis::pipe();
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
        tick: Tick(tick),
        payload,
    })
}

/// Every new price connection loads the script, so `EVALSHA` finds it.
fn load_script(shared: &Shared) -> impl Fn(&mut Connection) -> RedisResult<()> + '_ {
    move |con| shared.script.load(con).map(drop)
}

/// `primetime-redis-prices`: writes queued prices, newest tick wins.
pub(super) fn run_price_writer(shared: Arc<Shared>) {
    let mut link = Link::new();
    while !shared.stopping() {
        if price_writer_turn(&shared, &mut link) {
            break;
        }
    }
}

/// One turn of the price writer; true when stopped.
fn price_writer_turn(shared: &Shared, link: &mut Link) -> bool {
    // Connect before taking work: while Redis is down the cells stay in
    // the queue, coalescing, instead of bouncing in and out of it.
    if !link.is_connected() {
        return match link.connect(shared, load_script(shared)) {
            Ok(()) => {
                shared.mark_up();
                false
            }
            Err(e) => {
                shared.mark_failed(&e, "connect");
                shared.sleep(link.next_backoff())
            }
        };
    }
    match take_prices(shared, IDLE_PING) {
        Some(batch) => write_batch(shared, link, batch),
        None if shared.stopping() => true,
        None => ping_idle(shared, link),
    }
}

/// Idle: keeps `up` true to fact and the connection warm; true when
/// stopped during the backoff after a failure.
fn ping_idle(shared: &Shared, link: &mut Link) -> bool {
    match link.run(shared, load_script(shared), |con| {
        ::redis::cmd("PING").query::<String>(con)
    }) {
        Ok(_) => {
            shared.mark_up();
            false
        }
        Err(e) => {
            shared.mark_failed(&e, "ping");
            shared.sleep(link.next_backoff())
        }
    }
}

/// Waits up to `idle` for queued prices and takes them all; `None` when
/// idle or stopping.
fn take_prices(shared: &Shared, idle: Duration) -> Option<PriceBatch> {
    let deadline = deadline_after(idle);
    let mut queue = lock(&shared.prices);
    while queue.is_empty() {
        let now = Instant::now();
        if shared.stopping() || now >= deadline {
            return None;
        }
        queue = shared
            .prices_work
            .wait_timeout(queue, deadline - now)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
    if shared.stopping() {
        return None;
    }
    let cells = queue.take_all();
    Some(PriceBatch {
        cells,
        seq: queue.progress.queued,
    })
}

/// Writes a taken batch; on failure requeues what is left and backs off.
/// True when stopped during the backoff.
fn write_batch(shared: &Shared, link: &mut Link, batch: PriceBatch) -> bool {
    let PriceBatch { mut cells, seq } = batch;
    match write_cells(shared, link, &cells) {
        Ok(()) => {
            shared.mark_up();
            let mut queue = lock(&shared.prices);
            queue.progress.written = queue.progress.written.max(seq);
            drop(queue);
            shared.prices_done.notify_all();
            false
        }
        Err(PartialWrite { written, error }) => {
            shared.stats.write_errors.fetch_add(1, Relaxed);
            shared.mark_failed(&error, "put_prices");
            if !is_connection_error(&error) {
                tracing::warn!(error = %error, "redis price write failed, retrying");
            }
            let rest = cells.split_off(written);
            let mut queue = lock(&shared.prices);
            let conflicts = queue.requeue(rest);
            shared.stats.pending_cells.store(queue.cells(), Relaxed);
            drop(queue);
            shared.stats.price_conflicts.fetch_add(conflicts, Relaxed);
            shared.sleep(link.next_backoff())
        }
    }
}

/// Writes `cells` in round trips of up to [`PIPELINE_SCRIPTS`] ×
/// [`SCRIPT_CELLS`], counting each written round trip; stops at the first
/// failure.
fn write_cells(
    shared: &Shared,
    link: &mut Link,
    cells: &[StoredPrice],
) -> Result<(), PartialWrite> {
    let mut start = 0;
    while start < cells.len() {
        let end = cells.len().min(start + SCRIPT_CELLS * PIPELINE_SCRIPTS);
        let round = &cells[start..end];
        let totals = link
            .run(shared, load_script(shared), |con| {
                write_price_pipeline(shared, con, round)
            })
            .map_err(|error| PartialWrite {
                written: start,
                error,
            })?;
        let stats = &shared.stats;
        stats
            .price_cells_written
            .fetch_add(round.len() as u64, Relaxed);
        stats.price_conflicts.fetch_add(totals.conflicts, Relaxed);
        if totals.invalid > 0 {
            stats.write_errors.fetch_add(totals.invalid, Relaxed);
            tracing::warn!(
                cells = totals.invalid,
                "price keys of another type left unwritten"
            );
        }
        let mut queue = lock(&shared.prices);
        queue.written(round.len());
        stats.pending_cells.store(queue.cells(), Relaxed);
        drop(queue);
        start = end;
    }
    Ok(())
}

/// One round trip: up to [`PIPELINE_SCRIPTS`] script calls of up to
/// [`SCRIPT_CELLS`] cells. A script flushed from Redis (`NOSCRIPT`) is
/// loaded again and the round trip repeated, which is safe because the
/// script is idempotent.
fn write_price_pipeline(
    shared: &Shared,
    con: &mut Connection,
    cells: &[StoredPrice],
) -> RedisResult<ScriptTotals> {
    let mut pipe = ::redis::pipe();
    for chunk in cells.chunks(SCRIPT_CELLS) {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(shared.script.get_hash()).arg(chunk.len());
        for price in chunk {
            cmd.arg(shared.price_key(&price.cell));
        }
        for price in chunk {
            cmd.arg(price.tick.0).arg(&price.payload[..]);
        }
        pipe.add_command(cmd);
    }
    // Each script call answers `{conflicts, invalid}`.
    let replies: Vec<(u64, u64)> = match pipe.query(con) {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            shared.script.load(con)?;
            pipe.query(con)?
        }
        other => other?,
    };
    Ok(replies
        .into_iter()
        .fold(ScriptTotals::default(), |sum, (conflicts, invalid)| {
            ScriptTotals {
                conflicts: sum.conflicts + conflicts,
                invalid: sum.invalid + invalid,
            }
        }))
}
