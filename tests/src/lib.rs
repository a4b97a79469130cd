//! Harness for the end-to-end tests: a Kafka-protocol broker, the real
//! `primetime` binary as a child process, topic readers.
//!
//! Broker: `PRIMETIME_TEST_KAFKA=host:port` (any real cluster), else a
//! `noida-db` broker this harness starts on a free 127.0.0.1 port and stops
//! (by PID) when dropped. No broker → the test fails, it does not skip.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A broker for one test.
pub struct Broker {
    pub addr: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// A broker someone else runs (nothing is stopped on drop).
    pub fn external(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            child: None,
            _dir: None,
        }
    }

    /// `PRIMETIME_TEST_KAFKA`, or a fresh `noida-db`. Panics with what to
    /// do when neither works.
    pub fn start() -> Self {
        if let Ok(addr) = std::env::var("PRIMETIME_TEST_KAFKA") {
            if !addr.trim().is_empty() {
                return Self {
                    addr,
                    child: None,
                    _dir: None,
                };
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        // Its own process group: `noida-db` is a launcher whose server is a
        // child process, and the whole group is stopped on drop.
        let child = Command::new("noida-db")
            .process_group(0)
            .args(["start", "--data-dir"])
            .arg(dir.path())
            .args(["--host", "127.0.0.1", "--only", "kafka", "--kafka-port"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "no Kafka broker: PRIMETIME_TEST_KAFKA is not set and `noida-db` cannot \
                     start ({e}). Run ./scripts/test.sh, or `pip install noida-db==0.2.3`, or \
                     set PRIMETIME_TEST_KAFKA=host:port"
                )
            });
        let addr = format!("127.0.0.1:{port}");
        let broker = Self {
            addr,
            child: Some(child),
            _dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "noida-db did not listen on {port} within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // The group this harness created (its id is the launcher's
            // PID). The server may take seconds over SIGTERM (it saves its
            // data); the data is a temporary directory, so it gets SIGKILL
            // after a short grace period.
            let group = format!("-{}", c.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            std::thread::sleep(Duration::from_millis(500));
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = c.wait();
        }
    }
}

/// A name no other test (or earlier run on the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `primetime` binary of this workspace, built once per test process
/// (same profile as the tests).
pub fn service_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let release = !cfg!(debug_assertions);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "primetime", "--bin", "primetime"])
            .current_dir(repo_root());
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p primetime failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target"));
        target
            .join(if release { "release" } else { "debug" })
            .join("primetime")
    })
    .clone()
}

/// A running `primetime` child; killed (by PID) when dropped.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Service {
    /// `primetime serve --config <config> --http-addr 127.0.0.1:<free>`
    /// from the repository root (the default model resolves), logging to
    /// `log`.
    pub fn start(config: &Path, log: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let out = std::fs::File::create(log).expect("log file");
        let child = Command::new(service_binary())
            .args(["serve", "--config"])
            .arg(config)
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .current_dir(repo_root())
            .env("PRIMETIME_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start primetime");
        Self {
            child,
            port,
            log: log.to_owned(),
        }
    }

    /// SIGTERM, then the exit status (the service drains and exits).
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "primetime did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        let status = r.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, r.split_once("\r\n\r\n")?.1.to_owned()))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

fn reader(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("e2e-reader"))
        .set("enable.auto.commit", "false")
        // noida-db answers fetches without honouring fetch.max.bytes.
        .set("receive.message.max.bytes", "1000000000")
        .create()
        .expect("kafka reader")
}

/// Every record of `topic` up to its current end, per partition in offset
/// order.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer = reader(brokers);
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high > 0 {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let mut done = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.len() < ends.len() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
                if m.offset() + 1 >= ends[&m.partition()] {
                    done.insert(m.partition());
                }
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Offsets committed by `group` on `topic`, per partition.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("kafka client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match c.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Waits up to `timeout` for `f` to return `Some`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
