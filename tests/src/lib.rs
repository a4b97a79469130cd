//! Harness for the end-to-end tests: an Apache Kafka broker, the real
//! `primetime` binary as a child process, topic readers.
//!
//! Broker: `PRIMETIME_TEST_KAFKA=host:port` (any cluster; `scripts/test.sh`
//! starts Apache Kafka and sets it), else an Apache Kafka this harness
//! starts with `tests/kafka-broker/start.sh` on free 127.0.0.1 ports and
//! stops (by process group) when dropped. No broker → the test fails, it
//! does not skip.
//!
//! Redis: [`TestRedis`] is `PRIMETIME_TEST_REDIS` when set (the test
//! command sets it), else a private `redis-server` on a free port
//! ([`RedisServer`], the one place the tests start Redis; tests that stop
//! Redis always use their own), so a plain `cargo test` needs no server.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
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

    /// The PID of the broker this harness started (it leads its own
    /// process group); `None` for an external broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `PRIMETIME_TEST_KAFKA`, or a fresh Apache Kafka started by
    /// `tests/kafka-broker/start.sh` (which fetches its jars from Maven
    /// Central once). Panics with what to do when neither works.
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
        // Tests that start brokers at once can pick the same free port
        // (chosen, then bound by the JVM): a broker that exits before it
        // answers is started again, on new ports.
        for attempt in 1..=3 {
            match Self::launch() {
                Ok(broker) => return broker,
                Err(log) if attempt < 3 => {
                    eprintln!("kafka broker exited at start (attempt {attempt}), retrying:\n{log}");
                }
                Err(log) => panic!("the Kafka broker exited at start three times:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// One start of `tests/kafka-broker/start.sh`; the broker's log when it
    /// exits before answering.
    fn launch() -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("kafka.log")).expect("broker log");
        // Its own process group: the script execs the JVM, and the whole
        // group is stopped on drop.
        let child = Command::new(repo_root().join("tests/kafka-broker/start.sh"))
            .process_group(0)
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "no Kafka broker: PRIMETIME_TEST_KAFKA is not set and \
                     tests/kafka-broker/start.sh cannot run ({e}). Run ./scripts/test.sh \
                     (it needs java and mvn), or set PRIMETIME_TEST_KAFKA=host:port"
                )
            });
        let mut broker = Self {
            addr: String::new(),
            child: Some(child),
            _dir: Some(dir),
        };
        broker.addr = broker.wait_started()?;
        Ok(broker)
    }

    /// Waits for the started broker's address file and port (a cold jar
    /// fetch may take minutes); panics with its log when it does not come.
    fn wait_started(&mut self) -> Result<String, String> {
        let dir = self
            ._dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default();
        let log = || std::fs::read_to_string(dir.join("kafka.log")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("exit status {status}:\n{}", log()));
                }
            }
            let addr = std::fs::read_to_string(dir.join("bootstrap")).unwrap_or_default();
            let addr = addr.trim();
            if !addr.is_empty() && TcpStream::connect(addr).is_ok() {
                return Ok(addr.to_owned());
            }
            assert!(
                Instant::now() < deadline,
                "the Kafka broker did not answer within 600 s:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // The group this harness created (its id is the script's PID,
            // now the JVM's). Its data is a temporary directory, so there
            // is no controlled shutdown to wait for: SIGKILL.
            let group = format!("-{}", c.id());
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
/// (same profile as the tests); `PRIMETIME_TEST_BIN` names another one
/// (e.g. a saved build, to compare two versions while a third compiles).
pub fn service_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PRIMETIME_TEST_BIN") {
            return PathBuf::from(bin);
        }
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
    ///
    /// `PRIMETIME_TEST_LOG` overrides the service's log filter (default
    /// `info`); `PRIMETIME_TEST_LOG_DIR` keeps every service log in that
    /// folder (the tests' temporary folders vanish with a failed test).
    pub fn start(config: &Path, log: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let log = match std::env::var_os("PRIMETIME_TEST_LOG_DIR") {
            Some(dir) => {
                let name = log.file_name().map_or_else(
                    || "service.log".to_owned(),
                    |n| n.to_string_lossy().into_owned(),
                );
                Path::new(&dir).join(format!("{}-{name}", unique("service")))
            }
            None => log.to_owned(),
        };
        let filter = std::env::var("PRIMETIME_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(service_binary())
            .args(["serve", "--config"])
            .arg(config)
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .current_dir(repo_root())
            .env("PRIMETIME_LOG", filter)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start primetime");
        Self { child, port, log }
    }

    /// SIGKILL (`kill -9`): no draining, no last commit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

    /// `POST path` with a JSON body → (status, body).
    pub fn post(&self, path: &str, json: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        )
        .ok()?;
        let mut r = String::new();
        s.read_to_string(&mut r).ok()?;
        let status = r.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, r.split_once("\r\n\r\n")?.1.to_owned()))
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

/// Runs an admin request to completion on the calling thread.
fn admin<T>(
    brokers: &str,
    f: impl AsyncFnOnce(&AdminClient<DefaultClientContext>, &AdminOptions) -> T,
) -> T {
    let client: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("kafka admin client");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("admin runtime")
        .block_on(f(&client, &opts))
}

/// Creates `topic` with `partitions` (one replica) and the given topic
/// configs: for a test that needs a topic other than `--create-topics`
/// makes it.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let results = admin(brokers, async |client, opts| {
        client.create_topics([&new], opts).await
    })
    .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// Sets `topic`'s configs. AlterConfigs replaces the topic's whole config:
/// every config that matters must be named.
pub fn set_topic_configs(brokers: &str, topic: &str, configs: &[(&str, &str)]) {
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        alter = alter.set(k, v);
    }
    let results = admin(brokers, async |client, opts| {
        client.alter_configs([&alter], opts).await
    })
    .expect("alter configs");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("configuring {t:?}: {e}"));
    }
}

/// Offsets committed by `group` on `topic`, per partition.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    commits(brokers, group, topic, partitions)
        .into_iter()
        .map(|(offset, _)| offset)
        .collect()
}

/// Per partition of `topic`: the offset `group` committed (-1 for none)
/// and the durable tick of its `durable_tick=K` metadata.
pub fn commits(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(i64, Option<i64>)> {
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
        .map(|p| {
            let e = c.find_partition(topic, p);
            let offset = match e.as_ref().map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            let tick = e
                .as_ref()
                .and_then(|e| e.metadata().strip_prefix("durable_tick="))
                .and_then(|t| t.parse().ok());
            (offset, tick)
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

/// A private `redis-server` (nothing on disk) on a free 127.0.0.1 port,
/// killed by PID when dropped; the one place the tests start Redis.
/// [`Self::pause`] / [`Self::resume`] stop and continue the process
/// (SIGSTOP / SIGCONT): a Redis that stops answering. [`Self::kill`] and
/// [`Self::restart`]: a Redis that goes away and comes back empty.
pub struct RedisServer {
    pub url: String,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self::reserve();
        server.restart();
        server
    }

    /// A free port with nothing listening yet: a Redis that is down until
    /// [`Self::restart`].
    pub fn reserve() -> Self {
        let port = free_port();
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
        }
    }

    /// Starts the server on its port (again, after [`Self::kill`]), empty,
    /// and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let port = self.port;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (install it, e.g. apt-get install redis-server)");
        self.child = Some(child);
        let url = self.url.as_str();
        let up = eventually(Duration::from_secs(10), || {
            redis::Client::open(url)
                .ok()?
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .ok()
        });
        assert!(up.is_some(), "redis-server did not start on {port}");
    }

    /// SIGKILL: gone, with its data, until [`Self::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let Some(child) = &self.child else {
            panic!("redis-server not running");
        };
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} redis-server");
    }

    /// SIGSTOP: connections hang, new ones time out.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: answers again, with its data.
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

/// A Redis for one test's keys: `PRIMETIME_TEST_REDIS` when set (tests
/// keep apart by key prefix), else a private [`RedisServer`] of its own.
pub struct TestRedis {
    pub url: String,
    _private: Option<RedisServer>,
}

impl TestRedis {
    pub fn start() -> Self {
        match std::env::var("PRIMETIME_TEST_REDIS") {
            Ok(url) if !url.trim().is_empty() => Self {
                url,
                _private: None,
            },
            _ => {
                let server = RedisServer::start();
                Self {
                    url: server.url.clone(),
                    _private: Some(server),
                }
            }
        }
    }
}

/// Every price in the Redis table under `prefix`: cell → (tick, payload).
pub fn redis_prices(url: &str, prefix: &str) -> std::collections::BTreeMap<String, (i64, Vec<u8>)> {
    let mut c = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("redis connection");
    let pattern = format!("{prefix}:price:*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query(&mut c)
        .expect("KEYS");
    let mut out = std::collections::BTreeMap::new();
    for key in keys {
        let (t, p): (Option<i64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("t")
            .arg("p")
            .query(&mut c)
            .expect("HMGET");
        let cell = key.rsplit(':').next().unwrap_or_default().to_owned();
        if let (Some(t), Some(p)) = (t, p) {
            out.insert(cell, (t, p));
        }
    }
    out
}

/// A metric's value from a Prometheus exposition (first sample).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
