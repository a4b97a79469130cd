//! The [`Simulator`]: the world stepped in fixed steps, and the ingest-
//! ordered output queue.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use primetime_core::{CellId, DemandKind, DriverStatus, RegionId};
use primetime_proto::{LogEntry, Topic, v1};
use prost::Message;

use crate::SimError;
use crate::city::{City, Spot};
use crate::config::SimConfig;
use crate::demand::{TimeOfDay, stadium_released};
use crate::noise::{Faults, Label, bad_clock_offset_ms, corrupt};
use crate::rng::Rng;

mod clearing;
mod drivers;
mod market;
mod records;
mod wheel;

use wheel::{Pending, Wheel};

pub use market::{MarketLog, MinuteStats, Ride};

/// Length of one world step. Records are generated a step at a time; every
/// record of the step starting at `t` has ingest time ≥ `t`, which is what
/// makes the output independent of how [`Simulator::advance_to`] is
/// chunked.
const STEP_MS: i64 = 1_000;

/// Independent random streams: noise never perturbs the world.
const WORLD_STREAM: u64 = 1;
const NOISE_STREAM: u64 = 2;

/// Network delay between an action and its ingest: 20–400 ms, skewed
/// towards the low end (20 + 380·u²).
const MIN_DELAY_MS: f64 = 20.0;
const DELAY_SPAN_MS: f64 = 380.0;
const DELAY_MAX_MS: i64 = 400;

/// Driver behaviour.
const MIN_SPEED_MPS: f64 = 2.0;
const MAX_SPEED_MPS: f64 = 8.0;
/// Standard deviation of the heading change per ping, radians.
const HEADING_JITTER: f64 = 0.5;
/// Share of available drivers going offline per minute.
const OFFLINE_PER_MINUTE: f64 = 0.01;
const OFFLINE_MIN_MS: i64 = 2 * 60_000;
const OFFLINE_MAX_MS: i64 = 8 * 60_000;
const TRIP_MIN_MS: i64 = 5 * 60_000;
const TRIP_MAX_MS: i64 = 20 * 60_000;
/// Share of drivers starting at a demand hotspot (the rest uniformly).
const DRIVERS_AT_HOTSPOTS: f64 = 0.5;

/// Rider behaviour.
const MAX_CHECKS: i64 = 3;
const CHECK_GAP_MS: (i64, i64) = (2_000, 8_000);
const REQUEST_GAP_MS: (i64, i64) = (3_000, 15_000);
const REQUEST_PROBABILITY: f64 = 0.6;
/// Price elasticity of ride demand used by the market-clearing target:
/// a 10 % higher price loses ~11 % of requests.
pub const DEMAND_ELASTICITY: f64 = 1.2;
/// Demand over this many minutes competes for the currently available
/// drivers in the market-clearing target.
pub const CLEARING_HORIZON_MIN: f64 = 5.0;
/// Random stream and sample count of the demand-share measurement.
const SHARE_STREAM: u64 = 0x5_4a2e;
const SHARE_SAMPLES: u32 = 400_000;
const STADIUM_REQUEST_PROBABILITY: f64 = 0.9;
const RETRY_PROBABILITY: f64 = 0.5;
const RETRY_GAP_MS: (i64, i64) = (30_000, 90_000);
/// Spread of stadium riders around the stadium, kept inside its cell.
const STADIUM_SPREAD_KM: f64 = 0.12;

/// Noise magnitudes (see [`crate::Noise`]).
const DUPLICATE_GAP_MS: (i64, i64) = (500, 20_000);
const OUT_OF_ORDER_MS: (i64, i64) = (500, 4_000);
const LATE_MS: (i64, i64) = (10_000, 120_000);

/// Slot value of a driver position outside every city cell (only possible
/// mid-trip).
const NO_SLOT: u32 = u32::MAX;

/// One input record as a Kafka consumer would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRecord {
    /// Partition of the region the record's location falls in.
    pub partition: u32,
    /// Offset within the partition, from 0, without gaps.
    pub offset: i64,
    /// Trusted ingest time, Unix ms.
    pub ingest_time_ms: i64,
    pub topic: Topic,
    /// Encoded `DriverLocation` / `DemandEvent` (garbage when
    /// `label == Malformed`).
    pub payload: Vec<u8>,
    /// The fault injected, if any.
    pub label: Label,
}

impl SimRecord {
    /// The record as an event-log entry (the label is not logged).
    pub fn into_log_entry(self) -> LogEntry {
        LogEntry {
            partition: self.partition,
            offset: self.offset,
            ingest_time_ms: self.ingest_time_ms,
            topic: self.topic,
            payload: self.payload,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum DriverState {
    Available,
    OnTrip {
        from: (f64, f64),
        to: Spot,
        start_ms: i64,
        end_ms: i64,
    },
    /// Silent until `until_ms`; its next ping after that is available
    /// (closed loop: it may log on from then on).
    Offline {
        until_ms: i64,
    },
    /// Closed loop only: driving from `from` to the rider at `pickup`,
    /// arriving at `arrive_ms`; then on a trip of `trip_ms` to `to`.
    EnRoute {
        from: (f64, f64),
        pickup: Spot,
        start_ms: i64,
        arrive_ms: i64,
        to: Spot,
        trip_ms: i64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Driver {
    /// Position in km from the centre as of `last_ms`.
    x: f64,
    y: f64,
    /// City cell of the position; `NO_SLOT` only while on a trip outside
    /// every city cell. The driver is in `available[slot]` iff available.
    slot: u32,
    heading: f64,
    /// Cruising speed in km per ms.
    speed: f64,
    last_ms: i64,
    state: DriverState,
    /// Closed loop only: where an idle driver is repositioning to (km and
    /// slot of a cell centre), and when it next decides.
    target: Option<(f64, f64, u32)>,
    next_decision_ms: i64,
}

/// What a rider does next.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A price check, then `remaining - 1` more.
    Check { remaining: u8 },
    /// A ride request; an unserved first request may be retried once.
    Request { may_retry: bool },
    /// Closed loop: attempt `attempt` (from 0) of a ride request first made
    /// at `first_ms`, at the quoted `multiplier`; retried until
    /// `deadline_ms`, then abandoned.
    Ride {
        attempt: u16,
        first_ms: i64,
        deadline_ms: i64,
        multiplier: f32,
    },
}

/// A rider's next action, in the agenda.
#[derive(Debug, Clone, Copy)]
struct Action {
    time_ms: i64,
    seq: u64,
    rider: u64,
    spot: Spot,
    stadium: bool,
    step: Step,
}

impl Ord for Action {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time_ms, other.seq).cmp(&(self.time_ms, self.seq))
    }
}

impl PartialOrd for Action {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Action {
    fn eq(&self, other: &Self) -> bool {
        (self.time_ms, self.seq) == (other.time_ms, other.seq)
    }
}

impl Eq for Action {}

#[derive(Debug, Clone)]
struct Stadium {
    spot: Spot,
    cell: CellId,
    start_ms: i64,
    duration_ms: i64,
    riders: u32,
}

/// What a record says, before noise picks its times.
#[derive(Debug, Clone, Copy)]
enum Body {
    Driver {
        driver: u32,
        x: f64,
        y: f64,
        status: DriverStatus,
    },
    Demand {
        rider: u64,
        x: f64,
        y: f64,
        kind: DemandKind,
    },
}

/// The stadium event of `config`, placed in `city`; a stadium outside the
/// city is listed in `problems` instead.
fn place_stadium(config: &SimConfig, city: &City, problems: &mut Vec<String>) -> Option<Stadium> {
    let s = config.stadium.as_ref()?;
    let (x, y) = city.to_km(s.lat, s.lng);
    let found = city.spot(x, y).and_then(|spot| {
        CellId::from_u64(city.cell(spot.slot)).map(|cell| Stadium {
            spot,
            cell,
            start_ms: config.start_ms + s.starts_after_ms,
            duration_ms: s.duration_ms,
            riders: s.riders,
        })
    });
    if found.is_none() {
        problems.push(format!(
            "stadium: ({}, {}) is outside the city ({} km around ({}, {}))",
            s.lat, s.lng, config.radius_km, config.center_lat, config.center_lng
        ));
    }
    found
}

/// The drivers at `config.start_ms`, all available, with the dispatcher's
/// per-cell view of them and their fixed ping order.
struct Fleet {
    drivers: Vec<Driver>,
    available: Vec<Vec<u32>>,
    ping_order: Vec<(i64, u32)>,
}

impl Fleet {
    /// Places every driver (at a demand hotspot or anywhere in the city),
    /// drawing from `world_rng` in driver order: the draws are part of the
    /// simulator's seeded output.
    fn place(config: &SimConfig, city: &City, world_rng: &mut Rng) -> Self {
        let n = config.drivers as usize;
        let mut drivers = Vec::with_capacity(n);
        let mut available = vec![Vec::new(); city.cell_count()];
        let mut ping_order = Vec::with_capacity(n);
        for i in 0..config.drivers {
            let spot = if world_rng.chance(DRIVERS_AT_HOTSPOTS) {
                city.demand_spot(world_rng)
            } else {
                city.uniform_spot(world_rng)
            };
            let speed_mps = world_rng.range_f64(MIN_SPEED_MPS, MAX_SPEED_MPS);
            drivers.push(Driver {
                x: spot.x,
                y: spot.y,
                slot: spot.slot,
                heading: world_rng.range_f64(0.0, std::f64::consts::TAU),
                speed: speed_mps / 1e6,
                last_ms: config.start_ms,
                state: DriverState::Available,
                target: None,
                next_decision_ms: config.start_ms,
            });
            available[spot.slot as usize].push(i);
            ping_order.push((world_rng.range_i64(0, config.ping_interval_ms - 1), i));
        }
        ping_order.sort_unstable();
        Self {
            drivers,
            available,
            ping_order,
        }
    }
}

/// A record's times after noise: when it says it happened, and when it
/// reaches the log.
#[derive(Debug, Clone, Copy)]
struct RecordTimes {
    event_ms: i64,
    ingest_ms: i64,
}

/// The seeded city simulator. See the crate documentation for the model.
pub struct Simulator {
    config: SimConfig,
    city: City,
    stadium: Option<Stadium>,
    tod: TimeOfDay,
    faults: Faults,
    world_rng: Rng,
    noise_rng: Rng,

    drivers: Vec<Driver>,
    driver_ids: Vec<String>,
    /// Available drivers per city cell (the dispatcher's view: positions
    /// as of each driver's last ping).
    available: Vec<Vec<u32>>,
    /// Drivers sorted by ping phase: the fixed order of pings in every
    /// cycle of `ping_interval_ms`.
    ping_order: Vec<(i64, u32)>,
    ping_cursor: usize,
    cycle_start_ms: i64,
    p_offline: f64,

    agenda: BinaryHeap<Action>,
    action_seq: u64,
    sessions: u64,

    /// Start of the next world step.
    world_ms: i64,
    /// Records generated, not yet emitted.
    queue: Wheel,
    queue_seq: u64,
    /// Records generated (event ids), duplicates excluded.
    event_seq: u64,
    id_prefix: String,
    /// Reused buffers for the ids of the record being encoded.
    event_id_buf: String,
    rider_id_buf: String,
    offsets: Vec<i64>,
    now_ms: i64,
    /// Each city cell's share of non-stadium demand (Monte Carlo over the
    /// demand distribution, computed on first use).
    demand_share: std::sync::OnceLock<Vec<f64>>,
    /// The closed loop's state and outcome log, when configured.
    market: Option<Box<market::Market>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.config)
            .field("now_ms", &self.now_ms)
            .field("world_ms", &self.world_ms)
            .field("queued", &self.queue.len)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Validates `config` (every problem is listed in the error) and builds
    /// the city and its drivers at `config.start_ms`.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        let mut problems = config.problems();
        if !problems.is_empty() {
            return Err(SimError::Config(problems));
        }
        let Some(city) = City::new(
            config.center_lat,
            config.center_lng,
            config.radius_km,
            config.partitions,
        ) else {
            return Err(SimError::Config(vec![format!(
                "center_lat/center_lng: ({}, {}) is not a valid coordinate",
                config.center_lat, config.center_lng
            )]));
        };
        let stadium = place_stadium(&config, &city, &mut problems);
        if !problems.is_empty() {
            return Err(SimError::Config(problems));
        }

        let mut world_rng = Rng::new(config.seed, WORLD_STREAM);
        let Fleet {
            drivers,
            available,
            ping_order,
        } = Fleet::place(&config, &city, &mut world_rng);
        let p_offline = OFFLINE_PER_MINUTE * config.ping_interval_ms as f64 / 60_000.0;

        let mut sim = Self {
            city,
            stadium,
            tod: TimeOfDay::new(),
            faults: Faults::new(&config.noise),
            world_rng,
            noise_rng: Rng::new(config.seed, NOISE_STREAM),
            drivers,
            driver_ids: (0..config.drivers).map(|i| format!("drv-{i}")).collect(),
            available,
            ping_order,
            ping_cursor: 0,
            cycle_start_ms: config.start_ms,
            p_offline,
            agenda: BinaryHeap::new(),
            action_seq: 0,
            sessions: 0,
            world_ms: config.start_ms,
            queue: Wheel::new(config.start_ms),
            queue_seq: 0,
            event_seq: 0,
            id_prefix: format!("{:x}-", config.seed),
            event_id_buf: String::new(),
            rider_id_buf: String::new(),
            offsets: vec![0; config.partitions as usize],
            now_ms: config.start_ms,
            demand_share: std::sync::OnceLock::new(),
            market: None,
            config,
        };
        if let Some(m) = sim.config.market.clone() {
            sim.start_market(m);
        }
        Ok(sim)
    }

    /// The city's res-8 cells.
    pub fn cells(&self) -> Vec<CellId> {
        (0..self.city.cell_count() as u32)
            .filter_map(|slot| CellId::from_u64(self.city.cell(slot)))
            .collect()
    }

    /// Whether `cell` is one of the city's res-8 cells.
    pub fn in_city(&self, cell: CellId) -> bool {
        self.city.slot(cell.as_u64()).is_some()
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Number of partitions records are spread over (numbered from 0).
    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// The city's regions (H3 res 5), sorted; region `i` feeds partition
    /// `i % partitions`. Fewer regions than partitions leaves partitions
    /// without records.
    pub fn regions(&self) -> &[RegionId] {
        self.city.regions()
    }

    /// The simulation clock: every record with an ingest time before it has
    /// been emitted.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// The stadium's res-8 cell, if a stadium event is configured.
    pub fn stadium_cell(&self) -> Option<CellId> {
        self.stadium.as_ref().map(|s| s.cell)
    }

    /// Appends every record with ingest time < `until_ms` not emitted yet,
    /// in ingest order (ties in order of generation); offsets count per
    /// partition from 0. The output is a pure function of the config and
    /// the largest `until_ms` so far, however the calls are chunked. An
    /// `until_ms` at or before [`Self::now_ms`] appends nothing.
    pub fn advance_to(&mut self, until_ms: i64, out: &mut Vec<SimRecord>) {
        if until_ms <= self.now_ms {
            return;
        }
        // Every record of a step starting at or after `t` has an ingest
        // time ≥ `t`: once the world is at `t`, everything due before `t`
        // is known. Draining after every step keeps the queue short.
        loop {
            let offsets = &mut self.offsets;
            self.queue.drain(self.world_ms.min(until_ms), |p| {
                let offset = &mut offsets[p.partition as usize];
                out.push(SimRecord {
                    partition: p.partition,
                    offset: *offset,
                    ingest_time_ms: p.ingest_ms,
                    topic: p.topic,
                    payload: p.payload,
                    label: p.label,
                });
                *offset += 1;
            });
            if self.world_ms >= until_ms {
                break;
            }
            self.step();
        }
        self.now_ms = until_ms;
    }

    /// Simulates `[world_ms, world_ms + STEP_MS)`: new sessions first (they
    /// only enter the agenda), then driver pings and rider actions merged
    /// by time (a ping before an action at the same millisecond).
    fn step(&mut self) {
        let t0 = self.world_ms;
        let t1 = t0 + STEP_MS;

        if self.market.is_some() {
            self.market_step_start(t0, t1);
        } else {
            self.open_loop_arrivals(t0, t1);
        }
        self.run_step(t1);
        if self.market.is_some() {
            self.market_step_end(t0);
        }
        self.world_ms = t1;
    }

    /// The open loop's new sessions of `[t0, t1)`, from the world stream.
    fn open_loop_arrivals(&mut self, t0: i64, t1: i64) {
        let expected = self.config.demand_per_s * self.tod.factor(t0) * (STEP_MS as f64 / 1e3);
        let arrivals = self.world_rng.poisson(expected);
        for _ in 0..arrivals {
            let time_ms = self.world_rng.range_i64(t0, t1 - 1);
            let spot = self.city.demand_spot(&mut self.world_rng);
            self.start_session(time_ms, spot, false);
        }
        if let Some(s) = &self.stadium {
            let released = |t: i64| stadium_released(s.riders, s.duration_ms, t - s.start_ms);
            let count = released(t1) - released(t0);
            let (sx, sy, slot) = (s.spot.x, s.spot.y, s.spot.slot);
            for _ in 0..count {
                let time_ms = self.world_rng.range_i64(t0, t1 - 1);
                let spot =
                    self.city
                        .spot_in_cell(sx, sy, slot, STADIUM_SPREAD_KM, &mut self.world_rng);
                self.start_session(time_ms, spot, true);
            }
        }
    }

    /// Driver pings and rider actions before `t1`, merged by time (a ping
    /// before an action at the same millisecond).
    fn run_step(&mut self, t1: i64) {
        loop {
            let ping_ms = self
                .ping_order
                .get(self.ping_cursor)
                .map_or(i64::MAX, |(phase, _)| self.cycle_start_ms + phase);
            let action_ms = self.agenda.peek().map_or(i64::MAX, |a| a.time_ms);
            if ping_ms.min(action_ms) >= t1 {
                break;
            }
            if ping_ms <= action_ms {
                let driver = self.ping_order[self.ping_cursor].1;
                self.ping_cursor += 1;
                if self.ping_cursor == self.ping_order.len() {
                    self.ping_cursor = 0;
                    self.cycle_start_ms += self.config.ping_interval_ms;
                }
                self.ping(driver, ping_ms);
            } else if let Some(action) = self.agenda.pop() {
                self.act(action);
            }
        }
    }

    fn start_session(&mut self, time_ms: i64, spot: Spot, stadium: bool) {
        let rider = self.sessions;
        self.sessions += 1;
        let checks = self.world_rng.range_i64(1, MAX_CHECKS) as u8;
        self.schedule(Action {
            time_ms,
            seq: 0,
            rider,
            spot,
            stadium,
            step: Step::Check { remaining: checks },
        });
    }

    fn schedule(&mut self, mut action: Action) {
        action.seq = self.action_seq;
        self.action_seq += 1;
        self.agenda.push(action);
    }

    fn act(&mut self, action: Action) {
        if self.market.is_some() {
            self.act_market(action);
            return;
        }
        let Spot { x, y, slot } = action.spot;
        let t = action.time_ms;
        match action.step {
            Step::Check { remaining } => {
                self.emit(
                    t,
                    self.city.partition_of_slot(slot),
                    Body::Demand {
                        rider: action.rider,
                        x,
                        y,
                        kind: DemandKind::PriceCheck,
                    },
                );
                let p_request = if action.stadium {
                    STADIUM_REQUEST_PROBABILITY
                } else {
                    REQUEST_PROBABILITY
                };
                let next = if remaining > 1 {
                    let gap = self.world_rng.range_i64(CHECK_GAP_MS.0, CHECK_GAP_MS.1);
                    Some((
                        gap,
                        Step::Check {
                            remaining: remaining - 1,
                        },
                    ))
                } else if self.world_rng.chance(p_request) {
                    let gap = self.world_rng.range_i64(REQUEST_GAP_MS.0, REQUEST_GAP_MS.1);
                    Some((gap, Step::Request { may_retry: true }))
                } else {
                    None
                };
                if let Some((gap, step)) = next {
                    self.schedule(Action {
                        time_ms: t + gap,
                        step,
                        ..action
                    });
                }
            }
            Step::Request { may_retry } => {
                self.emit(
                    t,
                    self.city.partition_of_slot(slot),
                    Body::Demand {
                        rider: action.rider,
                        x,
                        y,
                        kind: DemandKind::RideRequest,
                    },
                );
                let served = self.dispatch(slot, t);
                if !served && may_retry && self.world_rng.chance(RETRY_PROBABILITY) {
                    let gap = self.world_rng.range_i64(RETRY_GAP_MS.0, RETRY_GAP_MS.1);
                    self.schedule(Action {
                        time_ms: t + gap,
                        step: Step::Request { may_retry: false },
                        ..action
                    });
                }
            }
            // Only scheduled by the closed loop, which never gets here.
            Step::Ride { .. } => {}
        }
    }

    /// Assigns the nearest available driver (grid distance ≤ 2, ties to the
    /// lowest driver number) to a request from `slot`; `false` when there
    /// is none.
    fn dispatch(&mut self, slot: u32, t: i64) -> bool {
        let mut best: Option<(u32, u32)> = None; // (driver, its slot)
        let mut best_dist = u8::MAX;
        for &(s, d) in self.city.dispatch_ring(slot) {
            if d > best_dist {
                break;
            }
            for &driver in &self.available[s as usize] {
                if best.is_none_or(|(b, _)| driver < b) {
                    best = Some((driver, s));
                    best_dist = d;
                }
            }
        }
        let Some((driver, from_slot)) = best else {
            return false;
        };
        self.remove_available(driver, from_slot);
        let to = self.city.demand_spot(&mut self.world_rng);
        let duration = self.world_rng.range_i64(TRIP_MIN_MS, TRIP_MAX_MS);
        let d = &mut self.drivers[driver as usize];
        d.state = DriverState::OnTrip {
            from: (d.x, d.y),
            to,
            start_ms: t,
            end_ms: t + duration,
        };
        d.last_ms = t;
        true
    }

    fn remove_available(&mut self, driver: u32, slot: u32) {
        if let Some(list) = self.available.get_mut(slot as usize) {
            if let Some(i) = list.iter().position(|d| *d == driver) {
                list.swap_remove(i);
            }
        }
    }

    fn add_available(&mut self, driver: u32, slot: u32) {
        if let Some(list) = self.available.get_mut(slot as usize) {
            list.push(driver);
        }
    }
}

#[cfg(test)]
mod tests;
