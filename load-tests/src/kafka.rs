//! Kafka scenarios: `firehose` (drain a backlog) and `overload` (input
//! arriving faster than a CPU-throttled service takes it), plus the config
//! and publisher helpers the other Kafka scenarios share.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use primetime_e2e::{Broker, Service, repo_root, service_binary, unique};

use crate::results::{Figure, LoadAvg, RunResult};
use crate::util::{cpu_seconds, load_1m, now_ms, processed, rss_bytes, verdict};

#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// Simulated minutes in the backlog.
    #[arg(long, default_value_t = 10)]
    pub minutes: u32,
    #[command(flatten)]
    pub city: CityArgs,
    /// Goal, events per second (firehose).
    #[arg(long, default_value_t = 400_000.0)]
    pub goal: f64,
    /// Goal, peak resident memory of the service in MiB.
    #[arg(long, default_value_t = 1024.0)]
    pub max_rss_mib: f64,
}

/// The simulated city the Kafka scenarios publish, and the input topics'
/// partitions.
#[derive(clap::Args, Clone)]
pub struct CityArgs {
    /// Simulated drivers (volume knob: records per simulated minute).
    #[arg(long, default_value_t = 60_000)]
    pub drivers: u32,
    /// Simulated demand sessions per second (volume knob).
    #[arg(long, default_value_t = 1_200.0)]
    pub demand_per_s: f64,
    /// Partitions per input topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
}

impl CityArgs {
    /// The `[sim]` table of a publisher's config: this city from
    /// `start_ms` on.
    pub fn sim_toml(&self, seed: Option<u64>, start_ms: i64) -> String {
        let seed = seed.map(|s| format!("seed = {s}\n")).unwrap_or_default();
        format!(
            "[sim]\n{seed}start_ms = {start_ms}\ndrivers = {}\ndemand_per_s = {}\n",
            self.drivers, self.demand_per_s
        )
    }
}

impl LoadArgs {
    pub fn for_probe(minutes: u32) -> Self {
        Self {
            minutes,
            city: CityArgs {
                drivers: 60_000,
                demand_per_s: 1_200.0,
                partitions: 8,
            },
            goal: 0.0,
            max_rss_mib: 0.0,
        }
    }
}

#[derive(clap::Args)]
pub struct OverloadArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Share of wall time the service may run: it is stopped and continued
    /// (SIGSTOP/SIGCONT) in a fixed duty cycle, so the same publisher
    /// outruns it. 1 = not throttled.
    #[arg(long, default_value_t = 0.2)]
    pub duty: f64,
    /// Length of one duty cycle, ms.
    #[arg(long, default_value_t = 100)]
    pub period_ms: u64,
    /// Goal, the overload factor reached (offered / taken).
    #[arg(long, default_value_t = 3.0)]
    pub min_factor: f64,
    /// Records per second the publisher offers (`simulate --rate`); 0 = as
    /// fast as it can.
    #[arg(long, default_value_t = 200_000.0)]
    pub rate: f64,
}

/// The `[kafka]` part of a service config: unique topics for a scenario,
/// and extra librdkafka properties.
pub fn kafka_toml(
    broker: &Broker,
    prefix: &str,
    partitions: u32,
    client: &[(&str, &str)],
) -> String {
    let mut t = format!(
        r#"[kafka]
brokers = "{brokers}"
group_id = "{prefix}"
input_partitions = {partitions}
idle_timeout_ms = 3000
session_timeout_ms = 6000
[kafka.topics]
driver_locations = "{prefix}.drivers"
demand = "{prefix}.demand"
prices = "{prefix}.prices"
dlq = "{prefix}.dlq"
cell_stats = "{prefix}.cell-stats"
[kafka.client]
"#,
        brokers = broker.addr,
    );
    for (k, v) in client {
        t.push_str(&format!("{k:?} = {v:?}\n"));
    }
    t
}

/// A service config with unique topics and a backlog's simulator settings
/// (simulated time pinned to end about now); returns the topic prefix and
/// the file.
pub fn write_config(
    broker: &Broker,
    dir: &Path,
    a: &LoadArgs,
    name: &str,
    client: &[(&str, &str)],
) -> anyhow::Result<(String, PathBuf)> {
    let prefix = unique(name);
    let start_ms = now_ms() - i64::from(a.minutes) * 60_000 - 60_000;
    let config = dir.join("primetime.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}",
            kafka_toml(broker, &prefix, a.city.partitions, client),
            a.city.sim_toml(None, start_ms)
        ),
    )?;
    Ok((prefix, config))
}

/// Runs `primetime simulate --kafka --create-topics` on `config`; returns
/// the records published.
pub fn publish(
    broker: &Broker,
    config: &Path,
    minutes: u32,
    rate: Option<f64>,
) -> anyhow::Result<u64> {
    let mut cmd = std::process::Command::new(service_binary());
    cmd.args(["simulate", "--config"])
        .arg(config)
        .args(["--kafka", &broker.addr, "--create-topics", "--minutes"])
        .arg(minutes.to_string())
        .current_dir(repo_root())
        .env("PRIMETIME_LOG", "warn");
    if let Some(r) = rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    let out = cmd.output().context("run primetime simulate --kafka")?;
    anyhow::ensure!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .split_whitespace()
        .skip_while(|w| *w != "published")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("simulate did not say how many records it published")
}

/// Waits until the service has joined its group and owns every input
/// partition.
pub fn wait_joined(service: &Service, partitions: u32) -> anyhow::Result<()> {
    let all = 2 * i64::from(partitions);
    let joined = primetime_e2e::eventually(Duration::from_secs(60), || {
        let v = crate::util::status(service)?;
        (v["kafka_assigned_partitions"].as_i64() == Some(all)).then_some(())
    });
    anyhow::ensure!(
        joined.is_some(),
        "service did not join; log {}",
        service.log.display()
    );
    Ok(())
}

/// Stops and continues a process in a fixed duty cycle (SIGSTOP/SIGCONT)
/// until dropped; it is left running.
pub(crate) struct Throttle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Throttle {
    pub(crate) fn start(pid: u32, duty: f64, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (duty < 1.0).then(|| {
            let stop = Arc::clone(&stop);
            let run = period.mul_f64(duty);
            let pause = period.saturating_sub(run);
            let pid = pid as libc::pid_t;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: signals to the child this scenario started.
                    unsafe { libc::kill(pid, libc::SIGSTOP) };
                    std::thread::sleep(pause);
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                    std::thread::sleep(run);
                }
            })
        });
        Self { stop, thread }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join(); // the last step of the loop is SIGCONT
        }
    }
}

/// One sample of the overload run.
#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    processed: u64,
    rss: u64,
}

pub fn overload(o: &OverloadArgs) -> anyhow::Result<()> {
    let a = &o.load;
    println!(
        "overload: goal: input offered >= {:.1}x what the service takes (the service is CPU \
         throttled to {:.0} % of wall time by SIGSTOP/SIGCONT every {} ms), and resident memory \
         bounded: second-half peak <= 1.2 x first-half peak + 64 MiB, and < {:.0} MiB",
        o.min_factor,
        o.duty * 100.0,
        o.period_ms,
        a.max_rss_mib
    );
    let load_before = load_1m();
    let broker = Broker::start();
    let dir = tempfile::tempdir()?;
    // librdkafka's statistics every second: its fetch queues' bytes show
    // how much of the RSS is prefetched input (see `fetch_queue_bytes`).
    let client = [("statistics.interval.ms", "1000")];
    let (_, config) = write_config(&broker, dir.path(), a, "overload", &client)?;
    publish(&broker, &config, 0, None)?; // creates the topics
    let log = dir.path().join("service.log");
    let service = Service::start(&config, &log, &[]);
    let pid = service.child.id();
    wait_joined(&service, a.city.partitions)?;
    let throttle = Throttle::start(pid, o.duty, Duration::from_millis(o.period_ms));
    let (minutes, broker_addr, cfg) = (a.minutes, broker.addr.clone(), config.clone());
    let rate = (o.rate > 0.0).then_some(o.rate);
    let base = processed(&service).unwrap_or(0);
    let t0 = Instant::now();
    let publisher = std::thread::spawn(move || {
        let b = Broker::external(&broker_addr);
        let n = publish(&b, &cfg, minutes, rate);
        (n, t0.elapsed().as_secs_f64())
    });
    let mut samples: Vec<Sample> = Vec::new();
    let mut next = t0;
    while !publisher.is_finished() {
        next += Duration::from_secs(1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let rss = rss_bytes(pid).unwrap_or(0);
        let n = processed(&service).map_or(0, |n| n.saturating_sub(base));
        let t = t0.elapsed().as_secs_f64();
        if samples.len() % 5 == 0 {
            println!(
                "  {t:>5.1} s: RSS {:>5.0} MiB, taken {n} records",
                rss as f64 / 1_048_576.0
            );
        }
        samples.push(Sample {
            t,
            processed: n,
            rss,
        });
    }
    let (published, publish_secs) = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"))?;
    let published = published?;
    drop(throttle);
    let load_after = load_1m();
    let taken = samples.last().map_or(0, |s| s.processed);
    let offered = published as f64 / publish_secs;
    let drained = taken as f64 / samples.last().map_or(publish_secs, |s| s.t);
    let factor = offered / drained.max(1.0);
    let half = samples.len() / 2;
    let peak = |s: &[Sample]| s.iter().map(|x| x.rss).max().unwrap_or(0) as f64 / 1_048_576.0;
    let (first_half, second_half) = (peak(&samples[..half]), peak(&samples[half..]));
    let peak_all = first_half.max(second_half);
    let backlog = published.saturating_sub(taken);
    let fetchq = fetch_queue_bytes(&service.log_text());
    let fetchq_peak = fetchq.iter().copied().max().unwrap_or(0) as f64 / 1_048_576.0;
    println!(
        "overload: librdkafka's fetch queues held up to {fetchq_peak:.0} MiB of input ({} \
         statistics reports)",
        fetchq.len()
    );
    let ok_factor = factor >= o.min_factor;
    let ok_rss = second_half <= first_half * 1.2 + 64.0 && peak_all < a.max_rss_mib;
    println!(
        "overload: offered {offered:.0} records/s for {publish_secs:.1} s, the service took \
         {drained:.0}/s: {factor:.1}x overload -> {}; backlog left in Kafka {backlog} records",
        verdict(ok_factor)
    );
    println!(
        "overload: peak RSS {first_half:.0} MiB in the first half, {second_half:.0} MiB in the \
         second half -> {}",
        verdict(ok_rss)
    );
    let mut result = RunResult::new(
        "overload",
        format!(
            "cargo run --release -p primetime-load-tests -- overload --minutes {} --rate {} \
             --duty {}",
            a.minutes, o.rate, o.duty
        ),
    );
    result.load_1m = Some(LoadAvg {
        before: load_before,
        after: load_after,
    });
    result.note = Some(format!(
        "simulate --kafka publishes {} simulated minutes ({} drivers) at {} records/s while the \
         service (default consumer settings) runs {:.0} % of each {} ms (SIGSTOP/SIGCONT); broker \
         (Apache Kafka), publisher and service share the 2 cores; RSS sampled every second from \
         /proc/PID/status while publishing ({} samples)",
        a.minutes,
        a.city.drivers,
        if o.rate > 0.0 {
            format!("{:.0}", o.rate)
        } else {
            "as many".into()
        },
        o.duty * 100.0,
        o.period_ms,
        samples.len()
    ));
    result.figures = vec![
        Figure::info(
            "overload: offered (simulate --kafka)",
            offered.round(),
            "records/s",
        ),
        Figure::info(
            format!(
                "overload: taken by the service throttled to {:.0} % CPU time",
                o.duty * 100.0
            ),
            drained.round(),
            "records/s",
        ),
        Figure::goal(
            "overload: factor (offered / taken)",
            (factor * 10.0).round() / 10.0,
            "x",
            &format!(">= {}x", o.min_factor),
            ok_factor,
        ),
        Figure::info("overload: peak RSS, first half", first_half.round(), "MiB"),
        Figure::goal(
            "overload: peak RSS, second half",
            second_half.round(),
            "MiB",
            "<= 1.2 x first half + 64 MiB",
            ok_rss,
        ),
        Figure::info(
            "overload: peak bytes in librdkafka's fetch queues (its statistics)",
            fetchq_peak.round(),
            "MiB",
        ),
        Figure::info("overload: backlog left in Kafka", backlog as f64, "records"),
    ];
    result.write()?;
    drop(service);
    if !(ok_factor && ok_rss) {
        let kept = dir.keep();
        println!("service log kept in {}", kept.join("service.log").display());
    }
    Ok(())
}

/// Per librdkafka consumer statistics report in the service log (rdkafka
/// logs them at info as `Client stats: Statistics { … }`), the bytes in
/// its fetch queues: the sum of every partition's `fetchq_size`.
fn fetch_queue_bytes(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("Client stats:") && l.contains("client_type: \"consumer\""))
        .map(|l| {
            l.split("fetchq_size: ")
                .skip(1)
                .filter_map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse::<u64>().ok()
                })
                .sum()
        })
        .collect()
}

pub fn firehose(a: &LoadArgs) -> anyhow::Result<()> {
    println!(
        "firehose: goal >= {:.0} events/s sustained through the service (Kafka in, prices out), \
         peak RSS < {:.0} MiB while draining an unbounded backlog",
        a.goal, a.max_rss_mib
    );
    let load_before = load_1m();
    let broker = Broker::start();
    let dir = tempfile::tempdir()?;
    let (prefix, config) = write_config(&broker, dir.path(), a, "firehose", &[])?;
    println!(
        "publishing the backlog ({} simulated minutes) ...",
        a.minutes
    );
    let started = Instant::now();
    let published = publish(&broker, &config, a.minutes, None)?;
    println!(
        "published {published} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Baseline: how fast this broker hands the backlog to a bare consumer
    // on this machine (no decoding, no pricing) — the ceiling.
    let t = Instant::now();
    let mut bare = 0u64;
    for topic in ["drivers", "demand"] {
        bare += primetime_e2e::read_topic(&broker.addr, &format!("{prefix}.{topic}")).len() as u64;
    }
    let bare_rate = bare as f64 / t.elapsed().as_secs_f64();
    println!("baseline: a bare rdkafka consumer reads {bare_rate:.0} records/s from this broker");

    let log = dir.path().join("service.log");
    let service = Service::start(&config, &log, &[]);
    let pid = service.child.id();
    let t0 = Instant::now();
    let mut samples: Vec<(f64, u64, f64)> = Vec::new();
    let mut peak_rss = 0u64;
    let deadline = Duration::from_secs(600);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        peak_rss = peak_rss.max(rss_bytes(pid).unwrap_or(0));
        if let Some(n) = processed(&service) {
            samples.push((
                t0.elapsed().as_secs_f64(),
                n,
                cpu_seconds(pid).unwrap_or(0.0),
            ));
            if samples.len() % 10 == 0 {
                println!("  {:>5.1} s: {n} records", t0.elapsed().as_secs_f64());
            }
            if n >= published {
                break;
            }
        }
        if t0.elapsed() >= deadline {
            let kept = dir.keep();
            anyhow::bail!(
                "backlog not drained in {deadline:?}; service log in {}",
                kept.display()
            );
        }
    }
    // Sustained: from the first sample with progress to the last, so the
    // start-up (model load, group join) is not counted.
    let first = samples
        .iter()
        .find(|(_, n, _)| *n > 0)
        .copied()
        .context("no progress")?;
    let last = *samples.last().context("no samples")?;
    let secs = (last.0 - first.0).max(1e-9);
    let rate = (last.1 - first.1) as f64 / secs;
    let rss_mib = peak_rss as f64 / 1_048_576.0;
    // The service's own cost, whatever the broker beside it takes.
    let cpu = (last.2 - first.2).max(1e-9);
    let per_cpu_second = (last.1 - first.1) as f64 / cpu;
    let ok_rate = rate >= a.goal;
    let ok_rss = rss_mib < a.max_rss_mib;
    println!(
        "firehose: {rate:.0} events/s sustained over {secs:.1} s ({} records) -> {}",
        last.1 - first.1,
        verdict(ok_rate)
    );
    println!(
        "firehose: the service used {:.2} cores for it: {per_cpu_second:.0} events per CPU-second \
         (the broker on the same machine took the rest)",
        cpu / secs
    );
    println!(
        "firehose: peak RSS {rss_mib:.0} MiB while draining {published} records -> {}",
        verdict(ok_rss)
    );
    let mut result = RunResult::new(
        "firehose",
        format!(
            "cargo run --release -p primetime-load-tests -- firehose --minutes {}",
            a.minutes
        ),
    );
    result.load_1m = Some(LoadAvg {
        before: load_before,
        after: load_1m(),
    });
    result.note = Some(format!(
        "a {published}-record simulated backlog ({} partitions per input topic) drained through \
         `primetime serve --kafka`; broker (Apache Kafka) on the same 2 cores",
        a.city.partitions
    ));
    result.figures = vec![
        Figure::goal(
            "Kafka firehose: events through the service (consume, decode, window, price, publish)",
            rate.round(),
            "events/s",
            &format!(">= {} events/s", crate::report::fmt_value(a.goal)),
            ok_rate,
        ),
        Figure::info(
            "Kafka firehose: service CPU used",
            (cpu / secs * 100.0).round() / 100.0,
            "cores",
        ),
        Figure::info(
            "Kafka firehose: events per service CPU-second",
            per_cpu_second.round(),
            "events/s",
        ),
        Figure::info(
            "Kafka firehose: a bare rdkafka consumer on the same broker",
            bare_rate.round(),
            "records/s",
        ),
        Figure::goal(
            "Kafka firehose: peak RSS while draining (unbounded backlog)",
            rss_mib.round(),
            "MiB",
            &format!("< {:.0} MiB", a.max_rss_mib),
            ok_rss,
        ),
    ];
    result.write()?;
    drop(service);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_fetch_queues_of_consumer_stats() {
        let log = "x INFO rdkafka::client: Client stats: Statistics { name: \"a\", client_type: \
                   \"consumer\", topics: {\"t\": Topic { partitions: {0: Partition { fetchq_cnt: \
                   3, fetchq_size: 100 }, 1: Partition { fetchq_size: 20 }} } }\n\
                   y INFO rdkafka::client: Client stats: Statistics { client_type: \"producer\", \
                   fetchq_size: 7 }\nz other line";
        assert_eq!(super::fetch_queue_bytes(log), vec![120]);
    }
}
