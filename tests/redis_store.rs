//! The Redis store (`primetime::redis`) against a real Redis: newest tick
//! wins, batching, foreign keys, snapshot transactions, and queued writes
//! while Redis is away. Moved out of the crate's unit tests so that a plain
//! `cargo test -p primetime` needs no server; Redis comes from the harness
//! ([`TestRedis`], [`RedisServer`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use primetime::redis::{
    PIPELINE_SCRIPTS, RedisConfig, RedisStore, RedisStoreError, SCRIPT_CELLS, SnapshotPart,
    StoredPrice, StoredSnapshot,
};
use primetime_core::Tick;
use primetime_e2e::{RedisServer, TestRedis, unique};
use redis::{Client, Connection, RedisResult};

const FLUSH: Duration = Duration::from_secs(10);

fn price(cell: &str, tick: i64, payload: &str) -> StoredPrice {
    StoredPrice {
        cell: cell.to_owned(),
        tick: Tick(tick),
        payload: payload.as_bytes().to_vec(),
    }
}

fn part(partition: u32, blob: Vec<u8>) -> SnapshotPart {
    SnapshotPart { partition, blob }
}

fn snap(tick: i64, blob: Vec<u8>) -> StoredSnapshot {
    StoredSnapshot {
        tick: Tick(tick),
        blob,
    }
}

fn unique_prefix(name: &str) -> String {
    unique(&format!("primetime-test:{name}"))
}

/// A unique key prefix on a test Redis; its keys are deleted on drop.
struct TestKeys {
    prefix: String,
    url: String,
    con: Connection,
    _redis: TestRedis,
}

impl TestKeys {
    fn new(name: &str) -> Self {
        let redis = TestRedis::start();
        let url = redis.url.clone();
        let con = Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("test redis {url} unreachable: {e}"));
        Self {
            prefix: unique_prefix(name),
            url,
            con,
            _redis: redis,
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

fn config_for(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
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
            (p.tick.0, String::from_utf8(p.payload).unwrap())
        })
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
        store.put_snapshot(
            "shards",
            Tick(tick),
            (0..3).map(|p| part(p, blob(p, tick))).collect(),
        );
        assert!(store.flush(FLUSH));
    }
    let got = store.get_snapshots("shards", &[2, 0, 1, 9, 0]).unwrap();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    for (partition, snapshots) in &got {
        let expected: Vec<StoredSnapshot> = (3..=6)
            .rev()
            .map(|t| snap(t, blob(*partition, t)))
            .collect();
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
                    .map(|s| s.iter().map(|s| s.tick.0).collect())
                    .collect();
                assert!(
                    got.is_empty() || got.len() == partitions.len(),
                    "{:?}",
                    got.keys()
                );
                assert!(ticks.len() <= 1, "partial snapshot visible: {ticks:?}");
                for (&partition, snapshots) in &got {
                    for s in snapshots {
                        assert_eq!(s.blob, blob(partition, s.tick.0));
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
            Tick(tick),
            partitions.iter().map(|&p| part(p, blob(p, tick))).collect(),
        );
        assert!(store.flush(FLUSH));
    }
    done.store(true, Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    let got = store.get_snapshots("g", &partitions).unwrap();
    for snapshots in got.values() {
        assert_eq!(
            snapshots.iter().map(|s| s.tick.0).collect::<Vec<_>>(),
            vec![100, 99]
        );
    }
    store.shutdown();
}

#[test]
fn queued_writes_coalesce_while_redis_is_away() {
    let mut server = RedisServer::reserve();
    let store = RedisStore::start(&config_for(&server.url)).unwrap();
    store.put_prices(vec![price("a", 5, "a5"), price("b", 1, "b1")]);
    store.put_prices(vec![price("a", 6, "a6"), price("a", 4, "a4")]);
    assert_eq!(store.stats().pending_cells.load(Relaxed), 2);
    store.put_snapshot("g", Tick(1), vec![part(0, b"one".to_vec())]);
    store.put_snapshot("g", Tick(2), vec![part(0, b"two".to_vec())]);
    store.put_snapshot("g", Tick(1), vec![part(0, b"stale".to_vec())]);
    assert!(!store.flush(Duration::from_millis(50)));

    server.restart();
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
        vec![snap(2, b"two".to_vec())]
    );
    store.shutdown();
}

#[test]
fn queued_writes_are_written_when_redis_returns() {
    let mut server = RedisServer::start();
    let store = RedisStore::start(&config_for(&server.url)).unwrap();
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
    store.put_snapshot(
        "g",
        Tick(3),
        vec![part(0, b"s3".to_vec()), part(1, b"t3".to_vec())],
    );
    assert!(!store.flush(Duration::from_millis(500)));
    assert!(!store.is_up());
    assert!(store.stats().write_errors.load(Relaxed) >= 1);
    assert!(store.get_prices(&["a".to_owned()]).is_err());

    server.restart();
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
    assert_eq!(snapshots[&1], vec![snap(3, b"t3".to_vec())]);
    let mut con = Client::open(server.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let tick: String = redis::cmd("HGET")
        .arg(format!("{}:price:a", store.config().key_prefix))
        .arg("t")
        .query(&mut con)
        .unwrap();
    assert_eq!(tick, "3");
    store.shutdown();
}
