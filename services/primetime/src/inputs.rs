//! Inputs for the pipeline's source thread: the embedded simulator paced by
//! the wall clock (open or closed loop), and an event-log file read as fast
//! as possible.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use primetime_core::CellId;
use primetime_proto::LogReader;
use primetime_sim::{MarketLog, SimRecord, Simulator};

use crate::pipeline::{Input, InputRecord, Lockstep, Poll, Round};

/// The embedded city simulator in (scaled) real time: sim time advances
/// `speed` times as fast as the wall clock from the moment of creation.
///
/// In the closed loop ([`SimInput::closed_loop`], the simulator's market
/// on) it never steps past a bucket boundary before the pipeline has
/// settled every tick its records up to that boundary made fireable (see
/// [`crate::pipeline::lockstep`]); the riders then see those decisions.
/// Pacing by the wall clock only delays steps, never changes what happens
/// at a boundary, so the run is a pure function of (config, seed, model)
/// at any speed.
pub struct SimInput {
    sim: Simulator,
    wall_start: Instant,
    sim_start_ms: i64,
    speed: f64,
    stop: Arc<AtomicBool>,
    buf: Vec<SimRecord>,
    closed_loop: Option<ClosedLoop>,
    /// Stop (as end of input) once simulated time reaches this.
    end_ms: Option<i64>,
    /// Where the finished run's market log goes (tests, benchmarks).
    outcome: Option<Arc<Mutex<Option<MarketLog>>>>,
}

/// The closed loop's side of the lockstep.
struct ClosedLoop {
    lockstep: Arc<Lockstep>,
    /// The pipeline's bucket: prices change only at its boundaries.
    bucket_ms: i64,
    /// The boundary whose decisions the riders have seen.
    observed_at: Option<i64>,
}

impl SimInput {
    /// `stop` stops the input (and so the pipeline, without finishing) when
    /// set.
    pub fn new(sim: Simulator, speed: f64, stop: Arc<AtomicBool>) -> Self {
        let sim_start_ms = sim.now_ms();
        Self {
            sim,
            wall_start: Instant::now(),
            sim_start_ms,
            speed,
            stop,
            buf: Vec::new(),
            closed_loop: None,
            end_ms: None,
            outcome: None,
        }
    }

    /// The closed loop: riders see the pipeline's prices. The pipeline must
    /// run with the same `lockstep` (`PipelineOptions::lockstep`).
    pub fn closed_loop(mut self, lockstep: Arc<Lockstep>, bucket_ms: i64) -> Self {
        self.closed_loop = Some(ClosedLoop {
            lockstep,
            bucket_ms: bucket_ms.max(1),
            observed_at: None,
        });
        self
    }

    /// Ends the input once simulated time reaches `end_ms`, leaving the
    /// simulator's market log (closed loop) in `outcome`.
    pub fn ending_at(mut self, end_ms: i64, outcome: Arc<Mutex<Option<MarketLog>>>) -> Self {
        self.end_ms = Some(end_ms);
        self.outcome = Some(outcome);
        self
    }

    /// One closed-loop poll. At a bucket boundary not yet crossed: the
    /// decisions settled from every record before it go to the riders
    /// first. Then simulated time advances as far as the wall clock allows,
    /// but never past the next boundary (prices change only there).
    fn poll_closed(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll> {
        let Some(cl) = &mut self.closed_loop else {
            return Ok(Poll::More);
        };
        let now = self.sim.now_ms();
        if now.rem_euclid(cl.bucket_ms) == 0 && cl.observed_at != Some(now) {
            let decisions = match cl.lockstep.wait(Duration::from_millis(100)) {
                Round::Settled(d) => d,
                Round::Pending => return Ok(Poll::More),
                Round::Closed => return Ok(Poll::Stop),
            };
            cl.observed_at = Some(now);
            let prices: Vec<(CellId, f64)> = decisions
                .iter()
                .map(|d| (d.cell, d.multiplier.value()))
                .collect();
            self.sim.observe_prices(&prices);
        }
        let boundary = (now.div_euclid(cl.bucket_ms) + 1) * cl.bucket_ms;
        let allowed = self.sim_start_ms
            + (self.wall_start.elapsed().as_secs_f64() * 1000.0 * self.speed) as i64;
        let until = boundary.min(allowed).min(self.end_ms.unwrap_or(i64::MAX));
        if until <= now {
            // Ahead of the wall clock: nap, so a stop request is seen.
            std::thread::sleep(Duration::from_millis(20));
            return Ok(Poll::More);
        }
        self.step_to(until, out);
        Ok(self.end_poll())
    }

    fn step_to(&mut self, until: i64, out: &mut Vec<InputRecord>) {
        self.buf.clear();
        self.sim.advance_to(until, &mut self.buf);
        out.extend(self.buf.drain(..).map(SimRecord::into_log_entry));
    }

    /// `End` (with the outcome kept) once the end time is reached.
    fn end_poll(&mut self) -> Poll {
        match self.end_ms {
            Some(end) if self.sim.now_ms() >= end => {
                if let (Some(slot), Some(log)) = (&self.outcome, self.sim.market_log()) {
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(log.clone());
                }
                Poll::End
            }
            _ => Poll::More,
        }
    }
}

impl Input for SimInput {
    fn partitions(&self) -> u32 {
        self.sim.partitions()
    }

    fn poll(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(Poll::Stop);
        }
        if self.closed_loop.is_some() {
            return self.poll_closed(out);
        }
        std::thread::sleep(Duration::from_millis(50));
        let elapsed_ms = self.wall_start.elapsed().as_secs_f64() * 1000.0 * self.speed;
        let mut until = self.sim_start_ms.saturating_add(elapsed_ms as i64);
        if let Some(end) = self.end_ms {
            until = until.min(end);
        }
        self.step_to(until, out);
        Ok(self.end_poll())
    }
}

/// An event log written by `primetime simulate --out`.
pub struct LogInput {
    path: PathBuf,
    reader: LogReader<BufReader<File>>,
    partitions: u32,
    chunk: usize,
}

impl LogInput {
    /// Opens the log; reads it once to learn its partition count (the
    /// pipeline needs the partition set up front).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let partitions = scan_partitions(path)?;
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            reader: LogReader::new(BufReader::new(file)),
            partitions,
            chunk: 8192,
        })
    }
}

/// `1 + max partition` of a log (at least 1).
pub fn scan_partitions(path: &Path) -> anyhow::Result<u32> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut max = 0;
    for entry in LogReader::new(BufReader::new(file)) {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        max = max.max(entry.partition);
    }
    Ok(max + 1)
}

impl Input for LogInput {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn poll(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll> {
        for _ in 0..self.chunk {
            match self.reader.next() {
                Some(entry) => {
                    out.push(entry.with_context(|| format!("reading {}", self.path.display()))?)
                }
                None => return Ok(Poll::End),
            }
        }
        Ok(Poll::More)
    }
}
