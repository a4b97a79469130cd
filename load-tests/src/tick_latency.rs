//! `tick-latency`: from the service watermark passing a tick's end to that
//! tick's prices being visible over HTTP and on the prices topic.
//!
//! The service runs in Kafka mode; `primetime simulate --kafka --rate R`
//! publishes the default city live (R = the city's own records per
//! simulated second, so simulated time keeps pace with the wall clock).
//! Observed from outside, on one clock (`Instant`):
//! - a poller reads `GET /v1/status` every few ms: the first reading with
//!   `watermark_ms >= (k + 1) × bucket_ms` is when the watermark passed
//!   tick k's end; the first with `tick >= k` is when tick k's prices
//!   were visible over HTTP (the price table is updated before `tick`);
//! - a consumer of the prices topic (`PriceUpdate` protobuf) notes when
//!   the first record of tick k arrives. Ticks in which no price changed
//!   publish nothing to Kafka; only ticks with records count there.
//!
//! Resolution: one poll interval plus a `/v1/status` round trip. The
//! HTTP latency is 0 when both show up in the same reading; the watermark
//! is seen up to one interval late, so the Kafka latency is understated
//! by up to that much. Goal: p99 < 1 s for both.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use primetime_e2e::{Broker, Service, repo_root, service_binary, unique};

use crate::kafka::{kafka_toml, wait_joined};
use crate::results::{Figure, LoadAvg, RunResult};
use crate::util::{load_1m, quantile, status, verdict};

#[derive(clap::Args)]
pub struct TickArgs {
    /// Ticks to measure (over HTTP; Kafka counts the ones with records).
    #[arg(long, default_value_t = 30)]
    ticks: usize,
    /// `/v1/status` poll interval, ms.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Partitions per input topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Goal, p99 latency in ms (HTTP and Kafka).
    #[arg(long, default_value_t = 1000.0)]
    goal_ms: f64,
}

/// First arrival of each tick's records on the prices topic.
type Arrivals = Arc<Mutex<HashMap<i64, (Instant, u64)>>>;

pub fn run(a: &TickArgs) -> anyhow::Result<()> {
    println!(
        "tick-latency: goal: p99 < {} ms from the watermark passing a tick's end to its prices \
         on HTTP and on the prices topic",
        a.goal_ms
    );
    let load_before = load_1m();
    let rate = city_rate()?;
    let broker = Broker::start();
    let dir = tempfile::tempdir()?;
    let prefix = unique("tick-latency");
    let config = dir.path().join("primetime.toml");
    std::fs::write(&config, kafka_toml(&broker, &prefix, a.partitions, &[]))?;
    crate::kafka::publish(&broker, &config, 0, None)?; // creates the topics
    let log = dir.path().join("service.log");
    let service = Service::start(&config, &log, &[]);
    wait_joined(&service, a.partitions)?;
    let bucket_ms = 10_000i64; // core default; the config above keeps it
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals: Arrivals = Arc::default();
    let consumer = {
        let (addr, topic) = (broker.addr.clone(), format!("{prefix}.prices"));
        let (stop, arrivals) = (Arc::clone(&stop), Arc::clone(&arrivals));
        std::thread::spawn(move || consume_prices(&addr, &topic, &stop, &arrivals))
    };
    let minutes = (a.ticks as i64 + 15) * bucket_ms / 60_000 + 1;
    let sim_log = std::fs::File::create(dir.path().join("simulate.log"))?;
    let mut publisher = std::process::Command::new(service_binary())
        .args(["simulate", "--config"])
        .arg(&config)
        .args(["--kafka", &broker.addr, "--rate", &format!("{rate:.0}")])
        .args(["--minutes", &minutes.to_string()])
        .current_dir(repo_root())
        .env("PRIMETIME_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(sim_log)
        .spawn()
        .context("start primetime simulate --kafka")?;
    println!(
        "service pid {} on 127.0.0.1:{}, publisher pid {} at {rate:.0} records/s (the city's own \
         rate) for {minutes} simulated minutes, polling /v1/status every {} ms",
        service.child.id(),
        service.port,
        publisher.id(),
        a.poll_ms
    );
    let observed = poll(&service, a, bucket_ms, t0, &arrivals);
    let tick_mean_ms = mean_tick_ms(&service);
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.kill();
    let _ = publisher.wait();
    let consumed = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("prices consumer panicked"))?;
    let observed = observed?;
    consumed?;
    let load_after = load_1m();
    let arrivals = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut http = Vec::new();
    let mut kafka = Vec::new();
    println!("tick  wm passed (s)  http (ms)  kafka (ms)  records");
    for (k, t_wm) in &observed.watermark {
        let h = observed.http.get(k).map(|t| ms(*t, *t_wm));
        let kf = arrivals.get(k).map(|(t, n)| (ms(*t, *t_wm), *n));
        println!(
            "{k:>6} {:>10.3} {:>10} {:>11} {:>8}",
            t_wm.duration_since(t0).as_secs_f64(),
            h.map_or("-".into(), |v| format!("{v:.1}")),
            kf.map_or("-".into(), |v| format!("{:.1}", v.0)),
            kf.map_or(0, |v| v.1)
        );
        if let Some(h) = h {
            http.push(h);
        }
        if let Some((kf, _)) = kf {
            kafka.push(kf);
        }
    }
    println!(
        "slowest /v1/status round trip {:.1} ms; the service's own mean tick duration \
         (/metrics) {tick_mean_ms:.1} ms",
        observed.max_rtt.as_secs_f64() * 1_000.0
    );
    http.sort_by(f64::total_cmp);
    kafka.sort_by(f64::total_cmp);
    let mut result = RunResult::new(
        "tick-latency",
        "cargo run --release -p primetime-load-tests -- tick-latency".into(),
    );
    result.load_1m = Some(LoadAvg {
        before: load_before,
        after: load_after,
    });
    result.note = Some(format!(
        "`primetime serve --kafka` (Apache Kafka broker), default city published live by `simulate \
         --kafka --rate {rate:.0}`; {} ticks of {bucket_ms} ms observed over HTTP, {} with \
         records on the prices topic; /v1/status polled every {} ms (the resolution); with ~30 \
         samples p99 is the largest but one or the largest",
        http.len(),
        kafka.len(),
        a.poll_ms
    ));
    let mut ok = true;
    for (what, v) in [
        ("HTTP `/v1/status` tick", &http),
        ("prices topic record", &kafka),
    ] {
        let (p50, p99, max) = (quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1.0));
        let pass = v.len() >= a.ticks.min(30) && p99 < a.goal_ms;
        ok &= pass;
        println!(
            "tick-latency: watermark past tick end -> {what}: {} ticks, p50 {p50:.1} ms, p99 \
             {p99:.1} ms, max {max:.1} ms -> {}",
            v.len(),
            verdict(pass)
        );
        let name = |q: &str| {
            format!(
                "tick latency, watermark past the tick's end to its {what}: {q} ({} ticks)",
                v.len()
            )
        };
        result
            .figures
            .push(Figure::info(name("p50"), round1(p50), "ms"));
        result.figures.push(Figure::goal(
            name("p99"),
            round1(p99),
            "ms",
            &format!("< {} ms", a.goal_ms),
            pass,
        ));
        result
            .figures
            .push(Figure::info(name("max"), round1(max), "ms"));
    }
    result.figures.push(Figure::info(
        "tick latency: the service's own mean tick duration (FireTick to published, /metrics)",
        round1(tick_mean_ms),
        "ms",
    ));
    println!("tick-latency: overall -> {}", verdict(ok));
    result.write()?;
    drop(service);
    Ok(())
}

fn ms(later: Instant, earlier: Instant) -> f64 {
    later.saturating_duration_since(earlier).as_secs_f64() * 1_000.0
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// When the watermark passed each tick's end and when each tick showed on
/// `/v1/status`.
struct Observed {
    watermark: BTreeMap<i64, Instant>,
    http: HashMap<i64, Instant>,
    /// Slowest `/v1/status` round trip.
    max_rtt: Duration,
}

fn poll(
    service: &Service,
    a: &TickArgs,
    bucket_ms: i64,
    t0: Instant,
    arrivals: &Arrivals,
) -> anyhow::Result<Observed> {
    let deadline = t0 + Duration::from_millis((a.ticks as u64 + 12) * bucket_ms as u64 + 60_000);
    let interval = Duration::from_millis(a.poll_ms);
    let mut out = Observed {
        watermark: BTreeMap::new(),
        http: HashMap::new(),
        max_rtt: Duration::ZERO,
    };
    // The newest tick whose end the watermark had passed, and the newest
    // tick shown, at the previous reading (`None` before the first: a
    // crossing is only timed when a reading before it exists).
    let mut last_wm_tick: Option<i64> = None;
    let mut last_tick: Option<i64> = None;
    let mut next = Instant::now();
    loop {
        next += interval;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        // The reading reflects the service somewhere between sending and
        // receiving: timed at the midpoint, so a slow answer counts half.
        let sent = Instant::now();
        let Some(v) = status(service) else { continue };
        let received = Instant::now();
        out.max_rtt = out.max_rtt.max(received - sent);
        let now = sent + (received - sent) / 2;
        if let Some(wm) = v["watermark_ms"].as_i64() {
            let passed = wm.div_euclid(bucket_ms) - 1;
            if let Some(prev) = last_wm_tick {
                for k in prev + 1..=passed {
                    out.watermark.insert(k, now);
                }
            }
            last_wm_tick = Some(last_wm_tick.map_or(passed, |p| p.max(passed)));
        }
        if let Some(tick) = v["tick"].as_i64() {
            if let Some(prev) = last_tick {
                for k in prev + 1..=tick {
                    out.http.insert(k, now);
                }
            }
            last_tick = Some(last_tick.map_or(tick, |p| p.max(tick)));
        }
        let timed_http = out
            .watermark
            .keys()
            .filter(|k| out.http.contains_key(k))
            .count();
        let timed_kafka = {
            let arr = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            out.watermark.keys().filter(|k| arr.contains_key(k)).count()
        };
        if timed_http >= a.ticks && timed_kafka >= a.ticks.min(30) {
            // One more tick's time for the last records to arrive.
            return Ok(out);
        }
        if received >= deadline {
            println!(
                "tick-latency: deadline reached with {timed_http} ticks over HTTP and \
                 {timed_kafka} with records on Kafka"
            );
            return Ok(out);
        }
    }
}

/// Mean of `primetime_tick_duration_seconds` from `/metrics`, ms.
fn mean_tick_ms(service: &Service) -> f64 {
    let Some((200, text)) = service.get("/metrics") else {
        return f64::NAN;
    };
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    value("primetime_tick_duration_seconds_sum ") * 1_000.0
        / value("primetime_tick_duration_seconds_count ")
}

/// Reads the prices topic from the start; notes each tick's first record.
fn consume_prices(
    addr: &str,
    topic: &str,
    stop: &AtomicBool,
    arrivals: &Arrivals,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", unique("tick-latency-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // Deliver as soon as anything is there.
        .set("fetch.wait.max.ms", "10")
        .set("fetch.min.bytes", "1")
        .create()
        .context("prices consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("prices topic metadata")?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    anyhow::ensure!(tpl.count() > 0, "prices topic {topic} has no partitions");
    consumer.assign(&tpl)?;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let now = Instant::now();
                let update =
                    primetime_proto::v1::PriceUpdate::decode(m.payload().unwrap_or_default())
                        .context("a prices record is not a PriceUpdate")?;
                let mut arr = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                arr.entry(update.tick).or_insert((now, 0)).1 += 1;
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(())
}

/// The default city's records per simulated second (one simulated minute
/// written to a file and counted).
fn city_rate() -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(service_binary())
        .args(["simulate", "--minutes", "1", "--out"])
        .arg(dir.path().join("events.log"))
        .current_dir(repo_root())
        .output()
        .context("primetime simulate --out")?;
    anyhow::ensure!(out.status.success(), "simulate --out failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let records: f64 = stderr
        .split_whitespace()
        .skip_while(|w| *w != "wrote")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("simulate did not say how many records it wrote")?;
    Ok(records / 60.0)
}
