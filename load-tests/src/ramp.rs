//! `ramp`: the highest input rate the service sustains from Kafka, live.
//!
//! Unlike `firehose` (which drains a backlog that is already there), the
//! input arrives while the service runs: `primetime simulate --kafka --rate
//! R` publishes at R records/s for one step, and the step is *sustained* when
//! the backlog — records in the input topics (their high watermarks) minus
//! records the service has taken (`/v1/status`) — does not grow: after a
//! warm-up, its least-squares slope and the gap between the rates offered
//! and taken stay under `--max-growth` of the offered rate, and it ends
//! under `--max-lag-secs` of input. Steps go up
//! until one is not sustained (the service's limit) or the publisher cannot
//! offer the rate asked (the load generator's limit: the result is then a
//! lower bound, and says so).
//!
//! Every step publishes a fresh stretch of simulated time (its own seed and
//! start, all in the past), so records are neither duplicates nor late; the
//! publisher is stopped at the end of its step. Between steps the backlog
//! is drained. The service can be CPU-throttled (`--duty`, as in
//! `overload`), which shows the ramp finding a limit below the publisher's.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use primetime_e2e::{Broker, Service, repo_root, service_binary, unique};
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::kafka::{CityArgs, Throttle, kafka_toml, wait_joined};
use crate::results::{Figure, LoadAvg, RunResult};
use crate::util::{cpu_seconds, group_cpu_seconds, load_1m, now_ms, processed};

#[derive(clap::Args)]
pub struct RampArgs {
    /// Offered rates, records per second, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [25_000.0, 50_000.0, 100_000.0, 150_000.0, 200_000.0, 250_000.0,
                            300_000.0, 350_000.0, 400_000.0, 450_000.0, 500_000.0]
    )]
    pub rates: Vec<f64>,
    /// Wall seconds per step.
    #[arg(long, default_value_t = 30)]
    pub step_secs: u64,
    /// Seconds at the start of a step left out of its figures (publisher
    /// start-up, the first fetches).
    #[arg(long, default_value_t = 8)]
    pub warmup_secs: u64,
    #[command(flatten)]
    pub city: CityArgs,
    /// Simulated minutes reserved per step (more than a step publishes).
    #[arg(long, default_value_t = 60)]
    pub span_minutes: u32,
    /// Share of wall time the service may run (SIGSTOP/SIGCONT every
    /// 100 ms); 1 = not throttled.
    #[arg(long, default_value_t = 1.0)]
    pub duty: f64,
    /// Backlog growth allowed, as a share of the offered rate.
    #[arg(long, default_value_t = 0.02)]
    pub max_growth: f64,
    /// Backlog allowed at the end of a step, in seconds of input.
    #[arg(long, default_value_t = 2.0)]
    pub max_lag_secs: f64,
    /// A step counts as offered at its rate when the publisher reached this
    /// share of it.
    #[arg(long, default_value_t = 0.9)]
    pub min_offered: f64,
}

/// One reading during a step.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    /// Records in the input topics (sum of high watermarks).
    published: u64,
    /// Records the service has taken.
    taken: u64,
    service_cpu: f64,
    publisher_cpu: f64,
    broker_cpu: f64,
}

/// What one step measured, over the samples after its warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    asked: f64,
    offered: f64,
    taken: f64,
    /// Least-squares slope of the backlog, records/s.
    growth: f64,
    backlog_end: f64,
    service_cores: f64,
    publisher_cores: f64,
    broker_cores: f64,
}

impl Step {
    fn from_samples(asked: f64, s: &[Sample]) -> Option<Self> {
        let (first, last) = (s.first()?, s.last()?);
        let secs = last.t - first.t;
        if s.len() < 3 || secs <= 0.0 {
            return None;
        }
        let backlog = |x: &Sample| x.published as f64 - x.taken as f64;
        let n = s.len() as f64;
        let mean_t = s.iter().map(|x| x.t).sum::<f64>() / n;
        let mean_b = s.iter().map(backlog).sum::<f64>() / n;
        let sxx: f64 = s.iter().map(|x| (x.t - mean_t).powi(2)).sum();
        let sxy: f64 = s
            .iter()
            .map(|x| (x.t - mean_t) * (backlog(x) - mean_b))
            .sum();
        Some(Self {
            asked,
            offered: (last.published - first.published) as f64 / secs,
            taken: (last.taken.saturating_sub(first.taken)) as f64 / secs,
            growth: sxy / sxx,
            backlog_end: backlog(last),
            service_cores: (last.service_cpu - first.service_cpu) / secs,
            publisher_cores: (last.publisher_cpu - first.publisher_cpu) / secs,
            broker_cores: (last.broker_cpu - first.broker_cpu) / secs,
        })
    }

    /// The backlog did not grow: its slope, and the gap between the rates
    /// offered and taken, under `max_growth` of the offered rate, and under
    /// `max_lag_secs` of input left at the end. (The broker hands out input
    /// in large chunks, so the backlog saw-tooths; each measure alone can
    /// miss a trend the others show.)
    fn sustained(&self, a: &RampArgs) -> bool {
        self.growth <= a.max_growth * self.offered
            && self.offered - self.taken <= a.max_growth * self.offered
            && self.backlog_end <= a.max_lag_secs * self.offered
    }

    /// The publisher reached the rate asked of it.
    fn offered_in_full(&self, a: &RampArgs) -> bool {
        self.offered >= a.min_offered * self.asked
    }
}

/// Sum of the high watermarks of every partition of `topics`.
fn published(consumer: &BaseConsumer, topics: &[String], partitions: u32) -> anyhow::Result<u64> {
    let mut sum = 0u64;
    for t in topics {
        for p in 0..partitions as i32 {
            let (_, high) = consumer
                .fetch_watermarks(t, p, Duration::from_secs(10))
                .with_context(|| format!("high watermark of {t}/{p}"))?;
            sum += high.max(0) as u64;
        }
    }
    Ok(sum)
}

/// `primetime simulate --kafka` for one step: its own seed and stretch of
/// simulated time, paced at `rate`, stopped by the caller.
fn start_publisher(
    dir: &Path,
    broker: &Broker,
    kafka: &str,
    a: &RampArgs,
    step: usize,
    start_ms: i64,
    rate: f64,
) -> anyhow::Result<Child> {
    let config = dir.join(format!("publisher-{step}.toml"));
    std::fs::write(
        &config,
        format!(
            "{kafka}{}",
            a.city.sim_toml(Some(1_000 + step as u64), start_ms)
        ),
    )?;
    Command::new(service_binary())
        .args(["simulate", "--config"])
        .arg(&config)
        .args(["--kafka", &broker.addr, "--minutes"])
        .arg(a.span_minutes.to_string())
        .args(["--rate", &rate.to_string()])
        .current_dir(repo_root())
        .env("PRIMETIME_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            dir.join(format!("publisher-{step}.log")),
        )?)
        .spawn()
        .context("start primetime simulate --kafka")
}

pub fn run(a: &RampArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!a.rates.is_empty(), "--rates: give at least one rate");
    anyhow::ensure!(
        a.warmup_secs + 3 <= a.step_secs,
        "--step-secs must exceed --warmup-secs by at least 3"
    );
    let throttled = a.duty < 1.0;
    let label = if throttled {
        format!(
            "Kafka ramp, service throttled to {:.0} % CPU",
            a.duty * 100.0
        )
    } else {
        "Kafka ramp".to_owned()
    };
    println!(
        "ramp: finds the highest input rate the service sustains from Kafka (backlog growth < \
         {:.0} % of the offered rate and < {} s of input left after each {} s step); rates {:?}",
        a.max_growth * 100.0,
        a.max_lag_secs,
        a.step_secs,
        a.rates
    );
    let load_before = load_1m();
    let broker = Broker::start();
    let broker_pgid = broker.pid();
    let dir = tempfile::tempdir()?;
    let prefix = unique("ramp");
    let kafka = kafka_toml(&broker, &prefix, a.city.partitions, &[]);
    let service_config = dir.path().join("primetime.toml");
    std::fs::write(&service_config, &kafka)?;
    let topics = [format!("{prefix}.drivers"), format!("{prefix}.demand")];

    // Topics first (a publisher with nothing to publish), then the service.
    let create = Command::new(service_binary())
        .args(["simulate", "--config"])
        .arg(&service_config)
        .args(["--kafka", &broker.addr, "--create-topics", "--minutes", "0"])
        .current_dir(repo_root())
        .env("PRIMETIME_LOG", "warn")
        .output()
        .context("create topics")?;
    anyhow::ensure!(
        create.status.success(),
        "creating topics failed: {}",
        String::from_utf8_lossy(&create.stderr)
    );
    let log = dir.path().join("service.log");
    let service = Service::start(&service_config, &log, &[]);
    let pid = service.child.id();
    wait_joined(&service, a.city.partitions)?;
    let throttle = Throttle::start(pid, a.duty, Duration::from_millis(100));

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", unique("ramp-watermarks"))
        .create()
        .context("watermark client")?;
    // All steps' simulated time lies in the past, one span after another.
    let span_ms = i64::from(a.span_minutes) * 60_000;
    let base_ms = now_ms() - (a.rates.len() as i64 + 1) * span_ms;

    let mut steps: Vec<Step> = Vec::new();
    let mut outcome = "every rate asked was sustained";
    for (i, &rate) in a.rates.iter().enumerate() {
        let mut publisher = start_publisher(
            dir.path(),
            &broker,
            &kafka,
            a,
            i,
            base_ms + i as i64 * span_ms,
            rate,
        )?;
        let pub_pid = publisher.id();
        let t0 = Instant::now();
        let mut samples = Vec::new();
        let mut next = t0;
        while t0.elapsed() < Duration::from_secs(a.step_secs) {
            next += Duration::from_secs(1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            if let Some(status) = publisher.try_wait()? {
                anyhow::bail!(
                    "the publisher stopped before its step ended ({status}); raise \
                     --span-minutes (log {})",
                    dir.path().join(format!("publisher-{i}.log")).display()
                );
            }
            let t = t0.elapsed().as_secs_f64();
            let sample = Sample {
                t,
                published: published(&consumer, &topics, a.city.partitions)?,
                taken: processed(&service).context("service status")?,
                service_cpu: cpu_seconds(pid).unwrap_or(0.0),
                publisher_cpu: cpu_seconds(pub_pid).unwrap_or(0.0),
                broker_cpu: broker_pgid.map_or(0.0, group_cpu_seconds),
            };
            if t >= a.warmup_secs as f64 {
                samples.push(sample);
            }
        }
        let _ = publisher.kill();
        let _ = publisher.wait();
        let step = Step::from_samples(rate, &samples).context("too few samples in a step")?;
        let sustained = step.sustained(a);
        println!(
            "  asked {rate:>7.0}/s: offered {:>7.0}/s, taken {:>7.0}/s, backlog {:+.0}/s \
             ({:.0} at the end) -> {}; cores: service {:.2}, publisher {:.2}, broker {:.2}",
            step.offered,
            step.taken,
            step.growth,
            step.backlog_end,
            if sustained {
                "sustained"
            } else {
                "NOT sustained"
            },
            step.service_cores,
            step.publisher_cores,
            step.broker_cores
        );
        steps.push(step);
        if !sustained {
            outcome = "limit found: the backlog grew";
            break;
        }
        if !step.offered_in_full(a) {
            outcome = "publisher limit: it could not offer the rate asked";
            break;
        }
        // Drain what is left before the next step.
        let total = published(&consumer, &topics, a.city.partitions)?;
        let drained = primetime_e2e::eventually(Duration::from_secs(120), || {
            (processed(&service)? >= total).then_some(())
        });
        anyhow::ensure!(
            drained.is_some(),
            "the backlog did not drain in 120 s after step {rate}/s; log {}",
            log.display()
        );
    }
    drop(throttle);
    let load_after = load_1m();

    let best = steps
        .iter()
        .filter(|s| s.sustained(a))
        .max_by(|x, y| x.offered.total_cmp(&y.offered))
        .copied();
    let failed = steps.iter().find(|s| !s.sustained(a)).copied();
    let lower_bound = failed.is_none();
    println!("ramp: {outcome}");
    match best {
        Some(b) => println!(
            "ramp: maximum sustained input {:.0} records/s{} (service {:.2} cores: {:.0} records \
             per service CPU-second)",
            b.offered,
            if lower_bound {
                " (a lower bound: the service was not the limit)"
            } else {
                ""
            },
            b.service_cores,
            b.taken / b.service_cores.max(1e-9)
        ),
        None => println!("ramp: not even the first rate was sustained"),
    }

    let scenario = if throttled { "ramp-throttled" } else { "ramp" };
    let mut command = "cargo run --release -p primetime-load-tests -- ramp".to_owned();
    if throttled {
        command.push_str(&format!(" --duty {}", a.duty));
    }
    let mut result = RunResult::new(scenario, command);
    result.load_1m = Some(LoadAvg {
        before: load_before,
        after: load_after,
    });
    let table: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "{:.0}/s asked: offered {:.0}, taken {:.0}, backlog {:+.0}/s, cores service {:.2} \
                 publisher {:.2} broker {:.2}",
                s.asked,
                s.offered,
                s.taken,
                s.growth,
                s.service_cores,
                s.publisher_cores,
                s.broker_cores
            )
        })
        .collect();
    result.note = Some(format!(
        "{outcome}. `simulate --kafka --rate R` ({} drivers, {} partitions per input topic) \
         publishes live for {} s per step while `serve --kafka` consumes; figures from the last {} \
         s of each step; sustained = backlog slope and offered - taken < {:.0} % of the offered \
         rate, and < {} s of input left. Publisher, broker (Apache Kafka) and service share the 2 \
         cores. Steps: {}",
        a.city.drivers,
        a.city.partitions,
        a.step_secs,
        a.step_secs - a.warmup_secs,
        a.max_growth * 100.0,
        a.max_lag_secs,
        table.join("; ")
    ));
    if let Some(b) = best {
        result.figures.push(Figure::info(
            format!(
                "{label}: maximum sustained input rate, backlog not growing{}",
                if lower_bound {
                    " (lower bound: the publisher on the same cores could offer no more)"
                } else {
                    ""
                }
            ),
            b.offered.round(),
            "records/s",
        ));
        result.figures.push(Figure::info(
            format!("{label}: service CPU at that rate"),
            (b.service_cores * 100.0).round() / 100.0,
            "cores",
        ));
        result.figures.push(Figure::info(
            format!("{label}: records taken per service CPU-second at that rate"),
            (b.taken / b.service_cores.max(1e-9)).round(),
            "records/s",
        ));
        result.figures.push(Figure::info(
            format!("{label}: publisher + broker CPU at that rate"),
            ((b.publisher_cores + b.broker_cores) * 100.0).round() / 100.0,
            "cores",
        ));
    }
    if let Some(f) = failed {
        result.figures.push(Figure::info(
            format!(
                "{label}: first rate not sustained, backlog growth (offered {:.0}/s, taken {:.0}/s)",
                f.offered, f.taken
            ),
            f.growth.round(),
            "records/s",
        ));
    }
    result.write()?;
    drop(service);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: RampArgs,
    }

    fn samples(rate_in: u64, rate_out: u64) -> Vec<Sample> {
        (0..20)
            .map(|i| Sample {
                t: f64::from(i),
                published: 1_000 + rate_in * i as u64,
                taken: 900 + rate_out * i as u64,
                service_cpu: 0.5 * f64::from(i),
                publisher_cpu: 0.0,
                broker_cpu: 0.0,
            })
            .collect()
    }

    #[test]
    fn a_backlog_that_keeps_pace_is_sustained_and_a_growing_one_is_not() {
        let a = Cli::parse_from(["x"]).a;
        let keeps = Step::from_samples(10_000.0, &samples(10_000, 10_000)).unwrap();
        assert_eq!(keeps.offered, 10_000.0);
        assert!(keeps.growth.abs() < 1e-6);
        assert_eq!(keeps.backlog_end, 100.0);
        assert_eq!(keeps.service_cores, 0.5);
        assert!(keeps.sustained(&a) && keeps.offered_in_full(&a));

        let grows = Step::from_samples(10_000.0, &samples(10_000, 9_000)).unwrap();
        assert!((grows.growth - 1_000.0).abs() < 1e-6);
        assert!(!grows.sustained(&a));

        // Falling behind at the end only: the slope barely moves, the gap
        // between the rates and the lag show it.
        let mut late = samples(10_000, 10_000);
        late.last_mut().unwrap().taken -= 30_000;
        assert!(!Step::from_samples(10_000.0, &late).unwrap().sustained(&a));

        // A backlog that keeps pace but 2.5 s behind: too much lag.
        let mut behind = samples(10_000, 10_000);
        behind.iter_mut().for_each(|x| x.published += 25_000);
        let behind = Step::from_samples(10_000.0, &behind).unwrap();
        assert!(behind.growth.abs() < 1e-6 && behind.taken == behind.offered);
        assert!(!behind.sustained(&a));

        let short = Step::from_samples(20_000.0, &samples(10_000, 10_000)).unwrap();
        assert!(!short.offered_in_full(&a));
        assert!(Step::from_samples(1.0, &samples(1, 1)[..2]).is_none());
    }
}
