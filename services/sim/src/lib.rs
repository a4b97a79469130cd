//! `primetime-sim`: a seeded, deterministic city simulator. It produces the
//! input of primetime — driver location pings and rider demand events — as
//! the partitioned, ingest-ordered records a Kafka consumer would see, with
//! optional injected faults labelled for tests.
//!
//! Modules:
//! - [`config`]: [`SimConfig`], [`StadiumEvent`], [`Noise`] with documented
//!   defaults and validation;
//! - `sim`: the [`Simulator`] (drivers, riders, dispatch) and its output
//!   queue, [`SimRecord`];
//! - `city`: the flat projection, H3 cells and regions, partitioning,
//!   dispatch neighbourhoods and demand hotspots;
//! - `demand`: the time-of-day curve and the stadium's release schedule;
//! - `noise`: fault selection and malformed payloads, [`Label`];
//! - [`rng`]: the crate's own SplitMix64 / xoshiro256++ generator.
//!
//! # Determinism
//!
//! The output — every field of every [`SimRecord`] — is a pure function of
//! the [`SimConfig`] and of the largest `until_ms` passed to
//! [`Simulator::advance_to`], whatever the chunking of the calls. The world
//! is stepped in fixed 1 s steps of simulated time from `start_ms`; every
//! record generated in a step has an ingest time at or after the step's
//! start, so stepping up to `until_ms` generates every record due before
//! it. Generated records wait in a priority queue keyed by (ingest time,
//! generation number) and are emitted in that order, offsets counted per
//! partition from 0. Randomness comes from [`rng`] in two independent
//! streams: the world's and the noise's, so that noise rates change only
//! the faulty records, never the simulated city. No clock is read.
//!
//! # World model
//!
//! - **City**: the disk of `radius_km` around the centre, as the H3 res-8
//!   cells whose centre lies in it (plus the centre's own cell); positions
//!   live in a local flat projection in km and never leave those cells.
//!   The city's **regions** are the res-5 parents of its cells, sorted by
//!   index; region `i` feeds partition `i % partitions`, and every record
//!   is keyed by the region of its location. The default city (San
//!   Francisco, 12 km: 596 cells) spans 5 regions, so each of the 4 default
//!   partitions has traffic, though unevenly: about 80 %, 13 %, 1 % and
//!   6 % of the records (partition 0 holds the two largest regions,
//!   partition 2 only a 13-cell sliver at the northern edge); every
//!   partition still has records in every 5 s of simulated time.
//! - **Drivers** (`drv-{n}`) start at random positions, half at demand
//!   hotspots, half uniform, all available. Each pings every
//!   `ping_interval_ms` at its own random phase. An *available* driver
//!   random-walks at its own 2–8 m/s, turning by a random angle at each
//!   ping and back towards the centre at the edge; with a chance of 1 % per
//!   minute a ping is *offline* instead, after which the driver is silent
//!   for 2–8 min and then pings available again from the same place.
//! - **Dispatch**: a ride request is served by the available driver
//!   nearest to the rider's cell by grid distance (the cell itself, then
//!   k-rings 1 and 2; ties go to the lowest driver number), using the
//!   cells of the drivers' last pings. The driver is *on trip* for
//!   5–20 min, pinging positions along a straight line from where it was
//!   to a destination drawn from the demand distribution, and becomes
//!   available there at its first ping after the trip. Unserved requests
//!   stay unserved; the rider retries once 30–90 s later with
//!   probability ½.
//! - **Demand**: rider sessions (`rider-{n}`, one id per session) start as
//!   a Poisson process of rate `demand_per_s` × a time-of-day factor. The
//!   factor uses the simulated UTC time shifted to San Francisco's UTC−8:
//!   a night floor, morning (08:30) and evening (18:00) commute peaks,
//!   lunch and nightlife bumps, normalised to a daily mean of 1 (range
//!   ≈ 0.35–2.1). Sessions start at a hotspot with Gaussian spread —
//!   financial district, SoMa, Mission, Marina, Haight/Castro, Richmond,
//!   Sunset and the airport side of the radius (towards SFO, 1.5 km
//!   inside), placed relative to the configured centre — or, for 20 %,
//!   uniformly in the city. A session makes 1–3 price checks 2–8 s apart,
//!   then with probability 0.6 a ride request 3–15 s later.
//! - **Stadium**: from `start_ms + starts_after_ms` for `duration_ms`,
//!   `riders` extra sessions start inside the stadium's res-8 cell, 70 % of
//!   them in the first third of the event, each requesting a ride with
//!   probability 0.9. Hundreds of requests a minute against the handful
//!   of drivers near the stadium: the default simulation surges the
//!   stadium cell within its first minute.
//! - **Market clearing** (the pricing model's training target, see
//!   [`Simulator::clearing_multiplier`]): demand is price-elastic with
//!   elasticity [`DEMAND_ELASTICITY`] (1.2): at multiplier `m` a cell's
//!   expected ride requests are `D · m^-1.2`. `D` is the expected requests
//!   over the next [`CLEARING_HORIZON_MIN`] (5) minutes at price 1.0 —
//!   sessions × time of day × request probability × the cell's share of
//!   the demand distribution, plus the stadium's release rate. Supply
//!   responds only through positions: the available drivers in the cell
//!   plus half of those in its k-ring 1 (the dispatcher's reach). The
//!   clearing multiplier solves `D · m^-1.2 = S`, clipped to `[1, cap]`.
//!   The simulated riders themselves do not react to prices (the
//!   simulator does not see the service's prices); the elasticity defines
//!   the target only.
//! - **Records**: event ids are `{seed:x}-{n:x}` (`n` counts records; a
//!   duplicate reuses its original's id). Event time is the simulated time
//!   of the action; ingest time is 20–400 ms later (network delay).
//! - **Noise** ([`Noise`]): each record independently gets at most one
//!   fault, with the configured probabilities; see [`Label`].
//!
//! The simulator only models what the pricing service sees: no traffic,
//! no pickup leg (a trip starts where the driver was), no rider choice.

#![forbid(unsafe_code)]

pub mod config;
pub mod rng;

mod city;
mod demand;
mod noise;
mod sim;

use std::io::{BufWriter, Write};

use primetime_proto::LogWriter;

pub use config::{Noise, SimConfig, StadiumEvent};
pub use noise::Label;
pub use sim::{CLEARING_HORIZON_MIN, DEMAND_ELASTICITY, SimRecord, Simulator};

/// Why a simulation could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The config is invalid; every problem as a `field: message` line.
    #[error("invalid simulator configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// Writing the event log failed.
    #[error("cannot write event log: {0}")]
    Io(#[from] std::io::Error),
}

/// How much simulated time [`write_log`] generates at once; bounds its
/// memory to a few seconds of records.
const LOG_CHUNK_MS: i64 = 10_000;

/// Writes `minutes` of simulation — every record with an ingest time before
/// `start_ms + minutes` — to `out` in the event-log format
/// ([`primetime_proto::LogWriter`] over a [`BufWriter`]), flushed. Returns
/// the number of records written.
pub fn write_log<W: Write>(config: SimConfig, minutes: u32, out: W) -> Result<u64, SimError> {
    let mut sim = Simulator::new(config)?;
    let end_ms = sim.now_ms() + i64::from(minutes) * 60_000;
    let mut writer = LogWriter::new(BufWriter::new(out));
    let mut batch = Vec::new();
    let mut written = 0u64;
    while sim.now_ms() < end_ms {
        let until = (sim.now_ms() + LOG_CHUNK_MS).min(end_ms);
        sim.advance_to(until, &mut batch);
        for record in batch.drain(..) {
            writer.write(&record.into_log_entry())?;
            written += 1;
        }
    }
    writer.flush()?;
    Ok(written)
}
