//! `fetch-probe`: which fetch size limits the broker honours. Publishes a
//! simulated backlog, then sends hand-encoded Kafka `Fetch` requests (v4,
//! and v11 when offered) for every partition of one input topic from offset
//! 0 with different request-level `max_bytes` and per-partition
//! `partition_max_bytes`, and prints the answer's size and what each
//! partition returned. A broker that honours the limits answers with about
//! `min(max_bytes, partitions × partition_max_bytes)` (at least one record
//! batch per partition); Apache Kafka does (`noida-db`, the broker of the
//! first measurements, did not). Last, it times an empty fetch: whether
//! the broker holds it for `max_wait_ms`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context as _;
use primetime_e2e::Broker;

use crate::kafka::{LoadArgs, publish, write_config};

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Simulated minutes published before probing.
    #[arg(long, default_value_t = 1)]
    minutes: u32,
}

pub fn run(p: &ProbeArgs) -> anyhow::Result<()> {
    let broker = Broker::start();
    let dir = tempfile::tempdir()?;
    let a = LoadArgs::for_probe(p.minutes);
    let (prefix, config) = write_config(&broker, dir.path(), &a, "probe", &[])?;
    let published = publish(&broker, &config, a.minutes, None)?;
    let topic = format!("{prefix}.drivers");
    println!(
        "published {published} records; probing {topic} ({} partitions) on {}",
        a.city.partitions, broker.addr
    );
    let mut conn = Conn::open(&broker.addr)?;
    let fetch_versions = conn.fetch_versions()?;
    println!(
        "broker's Fetch versions: {}..={}",
        fetch_versions.0, fetch_versions.1
    );
    let mut versions = vec![4];
    if fetch_versions.1 >= 11 {
        versions.push(11);
    }
    for version in versions {
        for (max_bytes, partition_max) in
            [(1 << 20, 64 << 10), (16 << 20, 1 << 20), (1 << 30, 1 << 30)]
        {
            let answer = conn.fetch(
                version,
                &topic,
                a.city.partitions,
                max_bytes,
                partition_max,
                100,
            )?;
            let records: u64 = answer.partitions.iter().map(|p| p.records).sum();
            let largest = answer.partitions.iter().map(|p| p.bytes).max().unwrap_or(0);
            println!(
                "Fetch v{version} max_bytes {max_bytes} partition_max_bytes {partition_max}: \
                 answer {} bytes, {records} records; largest partition {largest} bytes; \
                 per partition (bytes/records/batches): {}",
                answer.size,
                answer
                    .partitions
                    .iter()
                    .map(|p| format!("{}/{}/{}", p.bytes, p.records, p.batches))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    // An empty fetch: the prices topic holds nothing here. A broker
    // honouring `max_wait_ms` (librdkafka's `fetch.wait.max.ms`, default
    // 500) holds the request that long before answering empty; answering
    // at once makes a consumer at the end of its log fetch in a loop.
    let empty = format!("{prefix}.prices");
    for max_wait in [100, 500] {
        let t = std::time::Instant::now();
        let answer = conn.fetch(4, &empty, 1, 1 << 20, 1 << 20, max_wait)?;
        println!(
            "empty Fetch v4 (min_bytes 1, max_wait_ms {max_wait}) on {empty}/0: answered after \
             {:.1} ms with {} bytes",
            t.elapsed().as_secs_f64() * 1e3,
            answer.size
        );
    }
    Ok(())
}

struct Conn {
    stream: TcpStream,
    correlation: i32,
}

struct PartitionAnswer {
    bytes: usize,
    records: u64,
    batches: u64,
}

struct FetchAnswer {
    size: usize,
    partitions: Vec<PartitionAnswer>,
}

/// Big-endian request encoding.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn i8(&mut self, v: i8) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn string(&mut self, s: &str) -> &mut Self {
        self.i16(s.len() as i16);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
}

/// Big-endian answer decoding.
struct Dec<'a>(&'a [u8]);

impl Dec<'_> {
    fn take(&mut self, n: usize) -> anyhow::Result<&[u8]> {
        anyhow::ensure!(self.0.len() >= n, "answer too short");
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }
    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }
    fn i64(&mut self) -> anyhow::Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
    }
    fn string(&mut self) -> anyhow::Result<String> {
        let n = self.i16()?;
        let n = usize::try_from(n).unwrap_or(0);
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

impl Conn {
    fn open(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            stream,
            correlation: 0,
        })
    }

    /// Sends one request (header v1) and returns the answer body after the
    /// correlation id, with the whole answer's size.
    fn call(
        &mut self,
        api_key: i16,
        version: i16,
        body: &[u8],
    ) -> anyhow::Result<(Vec<u8>, usize)> {
        self.correlation += 1;
        let mut req = Enc::default();
        req.i16(api_key)
            .i16(version)
            .i32(self.correlation)
            .string("primetime-fetch-probe");
        req.0.extend_from_slice(body);
        let mut framed = (req.0.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&req.0);
        self.stream.write_all(&framed)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = usize::try_from(i32::from_be_bytes(len)).context("negative length")?;
        let mut answer = vec![0u8; len];
        self.stream.read_exact(&mut answer)?;
        anyhow::ensure!(
            answer.get(..4) == Some(&self.correlation.to_be_bytes()[..]),
            "correlation id mismatch"
        );
        Ok((answer.split_off(4), len + 4))
    }

    /// The broker's supported Fetch versions (ApiVersions v0).
    fn fetch_versions(&mut self) -> anyhow::Result<(i16, i16)> {
        let (body, _) = self.call(18, 0, &[])?;
        let mut d = Dec(&body);
        let error = d.i16()?;
        anyhow::ensure!(error == 0, "ApiVersions error {error}");
        for _ in 0..d.i32()? {
            let (key, min, max) = (d.i16()?, d.i16()?, d.i16()?);
            if key == 1 {
                return Ok((min, max));
            }
        }
        anyhow::bail!("the broker offers no Fetch")
    }

    fn fetch(
        &mut self,
        version: i16,
        topic: &str,
        partitions: u32,
        max_bytes: i32,
        partition_max: i32,
        max_wait_ms: i32,
    ) -> anyhow::Result<FetchAnswer> {
        let mut b = Enc::default();
        b.i32(-1).i32(max_wait_ms).i32(1).i32(max_bytes).i8(0);
        if version >= 7 {
            b.i32(0).i32(-1); // no fetch session
        }
        b.i32(1).string(topic).i32(partitions as i32);
        for p in 0..partitions as i32 {
            b.i32(p);
            if version >= 9 {
                b.i32(-1); // current leader epoch
            }
            b.i64(0);
            if version >= 5 {
                b.i64(-1); // log start offset
            }
            b.i32(partition_max);
        }
        if version >= 7 {
            b.i32(0); // forgotten topics
        }
        if version >= 11 {
            b.string(""); // rack
        }
        let (body, size) = self.call(1, version, &b.0)?;
        let mut d = Dec(&body);
        let _throttle = d.i32()?;
        if version >= 7 {
            let error = d.i16()?;
            anyhow::ensure!(error == 0, "Fetch error {error}");
            let _session = d.i32()?;
        }
        let mut out = Vec::new();
        for _ in 0..d.i32()? {
            let _topic = d.string()?;
            for _ in 0..d.i32()? {
                let _partition = d.i32()?;
                let error = d.i16()?;
                anyhow::ensure!(error == 0, "partition error {error}");
                let _high = d.i64()?;
                let _lso = d.i64()?;
                if version >= 5 {
                    let _log_start = d.i64()?;
                }
                let aborted = d.i32()?;
                for _ in 0..aborted.max(0) {
                    d.i64()?;
                    d.i64()?;
                }
                if version >= 11 {
                    let _preferred_replica = d.i32()?;
                }
                let n = usize::try_from(d.i32()?).unwrap_or(0);
                let records = d.take(n)?;
                out.push(count_batches(records));
            }
        }
        Ok(FetchAnswer {
            size,
            partitions: out,
        })
    }
}

/// Record batches (magic 2) in a partition's `records` bytes: total bytes,
/// records and batches (a partial batch at the end is not counted).
fn count_batches(mut bytes: &[u8]) -> PartitionAnswer {
    let total = bytes.len();
    let (mut records, mut batches) = (0u64, 0u64);
    while bytes.len() >= 27 {
        let batch_len = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let size = 12 + usize::try_from(batch_len).unwrap_or(0);
        if size > bytes.len() {
            break;
        }
        let last_delta = i32::from_be_bytes([bytes[23], bytes[24], bytes[25], bytes[26]]);
        records += u64::try_from(last_delta).unwrap_or(0) + 1;
        batches += 1;
        bytes = &bytes[size..];
    }
    PartitionAnswer {
        bytes: total,
        records,
        batches,
    }
}
