//! `primetime-sim`: a seeded, deterministic city simulator. It produces the
//! input of primetime — driver location pings and rider demand events — as
//! the partitioned, ingest-ordered records a Kafka consumer would see, with
//! optional injected faults labelled for tests.
//!
//! Modules:
//! - [`config`]: [`SimConfig`], [`StadiumEvent`], [`Noise`],
//!   [`MarketConfig`] with documented defaults and validation;
//! - `sim`: the [`Simulator`] (drivers, riders, dispatch) and its output
//!   queue, [`SimRecord`]; `sim::market`, the closed loop and its
//!   [`MarketLog`];
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
//!   In the open loop the simulated riders do not react to prices (the
//!   simulator does not see the service's prices) and the elasticity
//!   defines the target only; the closed loop's oracle uses the same
//!   formula at the riders' own elasticity
//!   ([`Simulator::clearing_multiplier_with`], [`Simulator::oracle_prices`]).
//! - **Records**: event ids are `{seed:x}-{n:x}` (`n` counts records; a
//!   duplicate reuses its original's id). Event time is the simulated time
//!   of the action; ingest time is 20–400 ms later (network delay).
//! - **Noise** ([`Noise`]): each record independently gets at most one
//!   fault, with the configured probabilities; see [`Label`].
//!
//! The open loop only models what the pricing service sees: no traffic,
//! no pickup leg (a trip starts where the driver was), no rider choice.
//!
//! # Closed loop
//!
//! With [`SimConfig::market`] set ([`MarketConfig`]), the simulator is also
//! the market the prices act on (DESIGN §7a). Without it nothing below
//! runs and the output is byte for byte the open loop's.
//!
//! - **Prices**: [`Simulator::observe_prices`] sets the multipliers riders
//!   see from the current simulated time on; a cell not listed keeps its
//!   last value (pipelines publish changes only). Whoever drives the
//!   simulation calls it between [`Simulator::advance_to`] calls; the run
//!   is a pure function of the config and of the prices observed and
//!   when. Every change is logged per cell.
//! - **Riders** (FleetPy's riders refuse offers above their willingness to
//!   pay, `TravelerModels.py`): a session's last price check reads its
//!   cell's multiplier `m` and requests with probability `p0 · m^-ε`
//!   (`p0` = 0.6, 0.9 for stadium riders; ε = 0.6 by default: a 10 %
//!   higher price gives about 6 % fewer requests, Cohen, Hahn, Hall,
//!   Levitt & Metcalfe, NBER w22627). The multiplier is quoted: retries
//!   keep it. An unmatched request is retried every 20–40 s until the
//!   rider's patience (uniform 2–6 min) runs out, then abandoned
//!   (unfulfilled). Arrivals come from their own random stream and every
//!   rider's draws (checks, willingness, patience, retries) from a stream
//!   keyed by the rider, drawn whatever the price: runs of one seed priced
//!   differently see the same riders (common random numbers).
//! - **Pickup leg**: dispatch sends the nearest idle driver by grid
//!   distance ≤ 2, then straight-line distance (ties to the lowest number);
//!   it is *en route* (pinging on-trip, unavailable) for an overhead
//!   (75 s: accepting, finding the rider) plus 1.3 × the straight-line
//!   distance at 14 km/h, then on a 5–20 min trip as in the open loop
//!   (trips average 12.5 min; MARKET.md: ~15). A ride's wait is from its
//!   first attempt to the driver's arrival.
//! - **Drivers reposition**: every 30 s an idle driver chooses to stay or
//!   head for one of the neighbouring cells (k-ring 1) by a logit over
//!   expected earnings, FleetPy's `DriverUtilityMax` with the multiplier
//!   added: `u = β · (F · w · (1 + r · (m − 1)) − c · km + s·[stay])`, with
//!   `F` the mean fare, `w = λ / (λ + 0.3 · (1 + idle))` the chance of a
//!   ride soon (λ the cell's usual requests per minute — drivers know
//!   where demand usually is, not the stadium — and `idle` the idle
//!   drivers there), `c` the cost per km, `s` the inertia of staying, `r`
//!   the response to the multiplier. A chosen cell is driven to in a
//!   straight line; otherwise drivers random-walk as in the open loop.
//!   The log records, per decision, the expected moves and the part of
//!   them prices account for (the total-variation distance between the
//!   choice with and without prices): Lu, Frazier & Kislev (EC 2018)
//!   found the surge heat map explains 10–60 % of repositioning, and the
//!   defaults keep price a minority of moves.
//! - **Drivers log on and off** from a pool (`drivers`), 48 % online at
//!   the start and half of those on trips (the world starts near its
//!   steady state). Idle drivers log off with a base 2 % per minute,
//!   offline ones (after at least 2 min) log on with 1 % per minute, each
//!   scaled by `x^∓ε_s/2` where `x` is the drivers' recent earnings per
//!   online hour over a reference (a 10 min half-life average: damped),
//!   so the online odds move with earnings at elasticity ε_s = 1.2
//!   (Angrist, Caldwell & Hall, NBER w23891; individual elasticity, the
//!   market's response is weaker through the damping). At the reference
//!   earnings (30 fares per online hour: 50 % utilisation at 1 fare per
//!   minute of trip) about half the pool is online.
//! - **Scenarios**: a city-wide [`DemandPeak`] multiplies session
//!   arrivals (New Year's Eve); a [`SupplyShock`] logs a share of the
//!   drivers off (after their trip) for its duration.
//! - **Outcome log** ([`MarketLog`], [`Simulator::market_log`]): per
//!   minute, sessions, driver time idle / en route / on trip / offline,
//!   earnings (fare × multiplier at dispatch), repositioning and
//!   log-on/off counts; every ride's first request, quoted multiplier,
//!   attempts and wait (or abandonment); every cell's price changes. The
//!   market benchmark (`primetime-market`) turns it into metrics.

#![forbid(unsafe_code)]

pub mod config;
pub mod rng;

mod city;
mod demand;
mod noise;
mod sim;

use std::io::{BufWriter, Write};

use primetime_proto::LogWriter;

pub use config::{DemandPeak, MarketConfig, Noise, SimConfig, StadiumEvent, SupplyShock};
pub use noise::Label;
pub use sim::{
    CLEARING_HORIZON_MIN, DEMAND_ELASTICITY, MarketLog, MinuteStats, Ride, SimRecord, Simulator,
};

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
