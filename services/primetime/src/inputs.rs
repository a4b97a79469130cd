//! Inputs for the pipeline's source thread: the embedded simulator paced by
//! the wall clock, and an event-log file read as fast as possible.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use primetime_proto::LogReader;
use primetime_sim::{SimRecord, Simulator};

use crate::pipeline::{Input, InputRecord, Poll};

/// The embedded city simulator in (scaled) real time: sim time advances
/// `speed` times as fast as the wall clock from the moment of creation.
pub struct SimInput {
    sim: Simulator,
    wall_start: Instant,
    sim_start_ms: i64,
    speed: f64,
    stop: Arc<AtomicBool>,
    buf: Vec<SimRecord>,
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
        std::thread::sleep(Duration::from_millis(50));
        let elapsed_ms = self.wall_start.elapsed().as_secs_f64() * 1000.0 * self.speed;
        let until = self.sim_start_ms.saturating_add(elapsed_ms as i64);
        self.buf.clear();
        self.sim.advance_to(until, &mut self.buf);
        out.extend(self.buf.drain(..).map(SimRecord::into_log_entry));
        Ok(Poll::More)
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
