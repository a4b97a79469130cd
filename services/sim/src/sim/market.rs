//! The closed loop (crate docs, "Closed loop"): riders who see the price,
//! the pickup leg, drivers who reposition and log on and off, the prices
//! the driver of the simulation observes, and the outcome log. Only runs
//! when [`SimConfig::market`](crate::SimConfig::market) is set; the open
//! loop never enters this module.

use primetime_core::{CellId, DemandKind, DriverStatus};

use super::{
    Action, Body, CHECK_GAP_MS, DriverState, MAX_CHECKS, NO_SLOT, OFFLINE_MIN_MS, REQUEST_GAP_MS,
    REQUEST_PROBABILITY, STADIUM_REQUEST_PROBABILITY, STADIUM_SPREAD_KM, STEP_MS, Simulator, Step,
    TRIP_MAX_MS, TRIP_MIN_MS,
};
use crate::city::Spot;
use crate::config::MarketConfig;
use crate::demand::stadium_released;
use crate::rng::Rng;

/// Random streams of the closed loop. Arrivals have their own stream and
/// every rider draws from a stream of its own (keyed by its number and the
/// step of its session), so two runs of one seed priced differently see
/// the same riders arrive, at the same places, with the same willingness
/// to pay and patience: common random numbers between policies.
const ARRIVAL_STREAM: u64 = 3;
const INIT_STREAM: u64 = 4;
const RIDER_STREAM: u64 = 0x100;
/// A rider's draws: its number of checks, each check, each attempt.
const RIDER_KEY_CHECKS: u64 = 0;
const RIDER_KEY_ATTEMPT: u64 = 8;

/// Unmatched requests are retried every 20–40 s (an app re-requesting).
const RETRY_GAP_MS: (i64, i64) = (20_000, 40_000);
/// Road distance over straight-line distance in a street grid.
const ROAD_FACTOR: f64 = 1.3;
/// A cell's expected requests per minute at which a driver there has an
/// even chance of a ride soon, per idle driver already there (queueing).
const RIDE_CHANCE_HALF_PER_MIN: f64 = 0.3;
const MINUTE_MS: i64 = 60_000;

/// One ride request and how it ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ride {
    /// The first attempt, Unix ms.
    pub first_request_ms: i64,
    /// The multiplier the rider saw and accepted.
    pub multiplier: f64,
    /// A stadium rider.
    pub event: bool,
    /// Attempts made (1 = matched or given up at the first).
    pub attempts: u16,
    /// From the first attempt to the driver's arrival; `None`: abandoned
    /// (unfulfilled).
    pub wait_ms: Option<i64>,
    /// Pickup leg alone (driving + overhead); 0 when abandoned.
    pub pickup_ms: i64,
}

/// What happened in one minute of simulated time (minute `i` is
/// `[start + i min, start + (i + 1) min)`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MinuteStats {
    /// Rider sessions started (stadium ones included).
    pub sessions: u64,
    /// Stadium sessions started.
    pub event_sessions: u64,
    /// Driver time by state, in driver-ms (sampled per 1 s step).
    pub idle_ms: u64,
    pub en_route_ms: u64,
    pub on_trip_ms: u64,
    pub offline_ms: u64,
    /// Fares × multiplier of the trips dispatched.
    pub earnings: f64,
    /// Repositioning choices made; among those made with a multiplier
    /// other than 1.0 in sight (the cell or a neighbour), the expected
    /// number of moves and the part of those moves the prices account for
    /// (the total variation distance between the choice with and without
    /// prices).
    pub decisions: u64,
    pub expected_moves: f64,
    pub price_moves: f64,
    pub log_ons: u64,
    pub log_offs: u64,
}

/// The closed loop's outcome log: everything the market benchmark
/// measures, as raw series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarketLog {
    /// The simulation start (minute 0).
    pub start_ms: i64,
    pub minutes: Vec<MinuteStats>,
    /// Every resolved ride request, in order of resolution.
    pub rides: Vec<Ride>,
    /// The city's cells, in the order of `price_changes`.
    pub cells: Vec<CellId>,
    /// Per cell, every change of the multiplier riders see, as (Unix ms
    /// from which it applies, multiplier); every cell starts at 1.0.
    pub price_changes: Vec<Vec<(i64, f64)>>,
}

/// Closed-loop state.
#[derive(Debug)]
pub(super) struct Market {
    cfg: MarketConfig,
    arrival_rng: Rng,
    /// The multiplier riders see, per city cell.
    prices: Vec<f64>,
    log: MarketLog,
    /// Damped earnings per online hour drivers react to.
    earnings_rate: f64,
    p_on_per_ping: f64,
    p_off_per_ping: f64,
    /// Expected ride requests per minute city-wide at price 1.0, without
    /// the stadium (what drivers know of demand), this minute.
    city_requests_per_min: f64,
}

impl Market {
    pub fn log(&self) -> &MarketLog {
        &self.log
    }

    /// The demand peak's factor at `t` (1.0 without one).
    fn peak(&self, t: i64) -> f64 {
        self.cfg
            .demand_peak
            .as_ref()
            .map_or(1.0, |p| p.factor_at(t - self.log.start_ms))
    }

    fn minute(&mut self, t: i64) -> &mut MinuteStats {
        let i = ((t - self.log.start_ms).max(0) / MINUTE_MS) as usize;
        if self.log.minutes.len() <= i {
            self.log.minutes.resize(i + 1, MinuteStats::default());
        }
        &mut self.log.minutes[i]
    }
}

impl Simulator {
    /// Builds the closed loop's state and puts the world near its steady
    /// state: a share of the pool offline, a share of the rest on trips.
    pub(super) fn start_market(&mut self, cfg: MarketConfig) {
        let start = self.config.start_ms;
        let mut rng = Rng::new(self.config.seed, INIT_STREAM);
        for i in 0..self.drivers.len() {
            let d = self.drivers[i];
            if !rng.chance(cfg.online_share) {
                self.remove_available(i as u32, d.slot);
                self.drivers[i].state = DriverState::Offline { until_ms: start };
            } else if rng.chance(cfg.initial_busy) {
                self.remove_available(i as u32, d.slot);
                let to = self.city.demand_spot(&mut rng);
                let length = rng.range_i64(TRIP_MIN_MS, TRIP_MAX_MS);
                let done = rng.range_i64(0, length - 1);
                self.drivers[i].state = DriverState::OnTrip {
                    from: (d.x, d.y),
                    to,
                    start_ms: start - done,
                    end_ms: start - done + length,
                };
            }
            self.drivers[i].next_decision_ms = start + rng.range_i64(0, cfg.reposition_interval_ms);
        }
        let cells = self.cells();
        let slots = cells.len();
        let mut market = Market {
            arrival_rng: Rng::new(self.config.seed, ARRIVAL_STREAM),
            prices: vec![1.0; slots],
            log: MarketLog {
                start_ms: start,
                cells,
                price_changes: vec![Vec::new(); slots],
                ..MarketLog::default()
            },
            earnings_rate: cfg.reference_earnings_per_hour,
            p_on_per_ping: 0.0,
            p_off_per_ping: 0.0,
            city_requests_per_min: 0.0,
            cfg,
        };
        self.update_rates(&mut market, start);
        // Drivers need every cell's demand share from the first step.
        self.demand_share
            .get_or_init(|| self.measure_demand_share());
        self.market = Some(Box::new(market));
    }

    /// The closed loop's outcome log; `None` for the open loop.
    pub fn market_log(&self) -> Option<&MarketLog> {
        self.market.as_deref().map(Market::log)
    }

    /// Sets the multipliers riders see from now on ([`Self::now_ms`]): a
    /// cell not listed keeps its last value (a pricing pipeline publishes
    /// changes only); cells outside the city and values that are not
    /// finite and positive are ignored. The open loop ignores prices.
    pub fn observe_prices(&mut self, prices: &[(CellId, f64)]) {
        let now = self.world_ms;
        let Some(market) = self.market.as_deref_mut() else {
            return;
        };
        for &(cell, m) in prices {
            let Some(slot) = self.city.slot(cell.as_u64()) else {
                continue;
            };
            let s = slot as usize;
            if m.is_finite() && m > 0.0 && market.prices[s] != m {
                market.prices[s] = m;
                market.log.price_changes[s].push((now, m));
            }
        }
    }

    /// The multiplier riders see in `cell` now (1.0 for the open loop).
    pub fn price(&self, cell: CellId) -> f64 {
        match (self.market.as_deref(), self.city.slot(cell.as_u64())) {
            (Some(m), Some(slot)) => m.prices[slot as usize],
            _ => 1.0,
        }
    }

    /// The oracle's prices now: every city cell's clearing multiplier at
    /// the riders' elasticity ([`Self::clearing_multiplier_with`]: true
    /// expected demand over the horizon against the idle drivers in
    /// reach), rounded to 0.05 inside `[1, cap]` as published prices are.
    /// Counting the drivers whose trips end within the horizon as supply
    /// too was tried: the oracle then priced New Year's Eve at 1.03 on
    /// average and left a third of the requests unserved, like flat.
    pub fn oracle_prices(&self, cap: f64) -> Vec<(CellId, f64)> {
        let elasticity = self
            .market
            .as_deref()
            .map_or(crate::DEMAND_ELASTICITY, |m| m.cfg.elasticity)
            .max(1e-3);
        let top = (cap.max(1.0) * 20.0 + 1e-9).floor();
        self.cells()
            .into_iter()
            .map(|c| {
                let m = self.clearing_multiplier_with(c, cap, elasticity);
                (c, (m * 20.0).round().clamp(20.0, top.max(20.0)) / 20.0)
            })
            .collect()
    }

    /// The demand peak's factor at `t_ms` (1.0 without one).
    pub(super) fn peak_factor(&self, t_ms: i64) -> f64 {
        self.market.as_deref().map_or(1.0, |m| m.peak(t_ms))
    }

    /// New sessions of `[t0, t1)` from the arrival stream (the demand
    /// peak included), and once a minute the drivers' earnings signal.
    pub(super) fn market_step_start(&mut self, t0: i64, t1: i64) {
        let Some(mut market) = self.market.take() else {
            return;
        };
        if (t0 - self.config.start_ms) % MINUTE_MS == 0 {
            self.update_rates(&mut market, t0);
        }
        let rate = self.config.demand_per_s * self.tod.factor(t0) * market.peak(t0);
        let arrivals = market.arrival_rng.poisson(rate * (STEP_MS as f64 / 1e3));
        let mut starts = Vec::with_capacity(arrivals as usize);
        for _ in 0..arrivals {
            let time_ms = market.arrival_rng.range_i64(t0, t1 - 1);
            starts.push((
                time_ms,
                self.city.demand_spot(&mut market.arrival_rng),
                false,
            ));
        }
        if let Some(s) = &self.stadium {
            let released = |t: i64| stadium_released(s.riders, s.duration_ms, t - s.start_ms);
            for _ in 0..released(t1) - released(t0) {
                let time_ms = market.arrival_rng.range_i64(t0, t1 - 1);
                let (x, y, slot) = (s.spot.x, s.spot.y, s.spot.slot);
                let spot =
                    self.city
                        .spot_in_cell(x, y, slot, STADIUM_SPREAD_KM, &mut market.arrival_rng);
                starts.push((time_ms, spot, true));
            }
        }
        for &(time_ms, _, stadium) in &starts {
            let m = market.minute(time_ms);
            m.sessions += 1;
            m.event_sessions += u64::from(stadium);
        }
        self.market = Some(market);
        for (time_ms, spot, stadium) in starts {
            let rider = self.sessions;
            self.sessions += 1;
            let checks = self
                .rider_rng(rider, RIDER_KEY_CHECKS)
                .range_i64(1, MAX_CHECKS) as u8;
            self.schedule(Action {
                time_ms,
                seq: 0,
                rider,
                spot,
                stadium,
                step: Step::Check { remaining: checks },
            });
        }
    }

    /// Driver time by state over the step that just ran.
    pub(super) fn market_step_end(&mut self, t0: i64) {
        let mut counts = [0u64; 4];
        for d in &self.drivers {
            counts[match d.state {
                DriverState::Available => 0,
                DriverState::EnRoute { .. } => 1,
                DriverState::OnTrip { .. } => 2,
                DriverState::Offline { .. } => 3,
            }] += 1;
        }
        if let Some(market) = self.market.as_deref_mut() {
            let step = STEP_MS as u64;
            let m = market.minute(t0);
            m.idle_ms += counts[0] * step;
            m.en_route_ms += counts[1] * step;
            m.on_trip_ms += counts[2] * step;
            m.offline_ms += counts[3] * step;
        }
    }

    /// Once a minute: the damped earnings rate from the last minute, the
    /// log-on/off probabilities it implies, and the demand drivers expect.
    fn update_rates(&self, market: &mut Market, t: i64) {
        let cfg = &market.cfg;
        let i = ((t - self.config.start_ms) / MINUTE_MS) as usize;
        if let Some(prev) = i.checked_sub(1).and_then(|p| market.log.minutes.get(p)) {
            let online_h = (prev.idle_ms + prev.en_route_ms + prev.on_trip_ms) as f64 / 3.6e6;
            if online_h > 0.0 {
                let rate = prev.earnings / online_h;
                let alpha = 1.0 - 0.5f64.powf(MINUTE_MS as f64 / cfg.earnings_half_life_ms as f64);
                market.earnings_rate += alpha * (rate - market.earnings_rate);
            }
        }
        let x = (market.earnings_rate / cfg.reference_earnings_per_hour).max(1e-3);
        let half = cfg.supply_elasticity / 2.0;
        let per_ping = self.config.ping_interval_ms as f64 / MINUTE_MS as f64;
        market.p_on_per_ping = (cfg.log_on_per_min * x.powf(half)).min(1.0) * per_ping;
        market.p_off_per_ping = (cfg.log_off_per_min * x.powf(-half)).min(1.0) * per_ping;
        market.city_requests_per_min = self.config.demand_per_s
            * 60.0
            * self.tod.factor(t)
            * market.peak(t)
            * REQUEST_PROBABILITY;
    }

    /// The random stream of draw `key` of rider `rider`'s session.
    fn rider_rng(&self, rider: u64, key: u64) -> Rng {
        let mixed = self.config.seed ^ rider.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Rng::new(mixed, RIDER_STREAM + key)
    }

    /// A rider's action in the closed loop: price checks, then at the last
    /// one the decision to request at the price seen, then attempts.
    pub(super) fn act_market(&mut self, action: Action) {
        let Spot { x, y, slot } = action.spot;
        let t = action.time_ms;
        let partition = self.city.partition_of_slot(slot);
        match action.step {
            Step::Check { remaining } => {
                self.emit(
                    t,
                    partition,
                    Body::Demand {
                        rider: action.rider,
                        x,
                        y,
                        kind: DemandKind::PriceCheck,
                    },
                );
                let mut rng = self.rider_rng(action.rider, u64::from(remaining));
                if remaining > 1 {
                    let gap = rng.range_i64(CHECK_GAP_MS.0, CHECK_GAP_MS.1);
                    self.schedule(Action {
                        time_ms: t + gap,
                        step: Step::Check {
                            remaining: remaining - 1,
                        },
                        ..action
                    });
                    return;
                }
                self.decide_request(action, &mut rng);
            }
            Step::Ride { .. } => self.attempt(action),
            Step::Request { .. } => {}
        }
    }

    /// Requests with probability `p0 · m^-ε` at the multiplier `m` seen.
    fn decide_request(&mut self, action: Action, rng: &mut Rng) {
        let Some(market) = self.market.as_deref() else {
            return;
        };
        let m = market.prices[action.spot.slot as usize];
        let p0 = if action.stadium {
            STADIUM_REQUEST_PROBABILITY
        } else {
            REQUEST_PROBABILITY
        };
        let p = p0 * m.max(1e-9).powf(-market.cfg.elasticity);
        let (lo, hi) = (market.cfg.patience_min_ms, market.cfg.patience_max_ms);
        // Every draw happens whatever the price: the rider's stream stays
        // aligned between runs priced differently.
        let accept = rng.uniform() < p;
        let gap = rng.range_i64(REQUEST_GAP_MS.0, REQUEST_GAP_MS.1);
        let patience = rng.range_i64(lo, hi);
        if accept {
            let first_ms = action.time_ms + gap;
            self.schedule(Action {
                time_ms: first_ms,
                step: Step::Ride {
                    attempt: 0,
                    first_ms,
                    deadline_ms: first_ms + patience,
                    multiplier: m as f32,
                },
                ..action
            });
        }
    }

    /// One attempt of a ride request: dispatch, else retry within the
    /// rider's patience, else abandon.
    fn attempt(&mut self, action: Action) {
        let Step::Ride {
            attempt,
            first_ms,
            deadline_ms,
            multiplier,
        } = action.step
        else {
            return;
        };
        let Spot { x, y, slot } = action.spot;
        let t = action.time_ms;
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
        let multiplier = f64::from(multiplier);
        let pickup = self.dispatch_market(action.spot, t, multiplier);
        let retry = self
            .rider_rng(action.rider, RIDER_KEY_ATTEMPT + u64::from(attempt))
            .range_i64(RETRY_GAP_MS.0, RETRY_GAP_MS.1);
        if pickup.is_none() && t + retry <= deadline_ms {
            self.schedule(Action {
                time_ms: t + retry,
                step: Step::Ride {
                    attempt: attempt.saturating_add(1),
                    first_ms,
                    deadline_ms,
                    multiplier: multiplier as f32,
                },
                ..action
            });
            return;
        }
        if let Some(market) = self.market.as_deref_mut() {
            market.log.rides.push(Ride {
                first_request_ms: first_ms,
                multiplier,
                event: action.stadium,
                attempts: attempt.saturating_add(1),
                wait_ms: pickup.map(|p| t - first_ms + p),
                pickup_ms: pickup.unwrap_or(0),
            });
        }
    }

    /// Sends the nearest idle driver (grid distance ≤ 2, then straight-line
    /// distance, then driver number) to the rider at `spot`; returns the
    /// pickup leg's duration, `None` when no driver is in reach.
    fn dispatch_market(&mut self, spot: Spot, t: i64, multiplier: f64) -> Option<i64> {
        let mut best: Option<(f64, u32, u32)> = None; // (km², driver, slot)
        for &(s, _) in self.city.dispatch_ring(spot.slot) {
            for &driver in &self.available[s as usize] {
                let d = &self.drivers[driver as usize];
                let d2 = (d.x - spot.x).powi(2) + (d.y - spot.y).powi(2);
                if best.is_none_or(|(b2, bd, _)| (d2, driver) < (b2, bd)) {
                    best = Some((d2, driver, s));
                }
            }
        }
        let (d2, driver, from_slot) = best?;
        let market = self.market.as_deref()?;
        let km = ROAD_FACTOR * d2.sqrt();
        let pickup_ms =
            market.cfg.pickup_overhead_ms + (km / market.cfg.pickup_speed_kmh * 3.6e6) as i64;
        let fare_per_min = market.cfg.fare_per_min;
        self.remove_available(driver, from_slot);
        let to = self.city.demand_spot(&mut self.world_rng);
        let trip_ms = self.world_rng.range_i64(TRIP_MIN_MS, TRIP_MAX_MS);
        let d = &mut self.drivers[driver as usize];
        d.state = DriverState::EnRoute {
            from: (d.x, d.y),
            pickup: spot,
            start_ms: t,
            arrive_ms: t + pickup_ms,
            to,
            trip_ms,
        };
        d.target = None;
        d.last_ms = t;
        if let Some(market) = self.market.as_deref_mut() {
            market.minute(t).earnings += fare_per_min * trip_ms as f64 / 60_000.0 * multiplier;
        }
        Some(pickup_ms)
    }

    /// Whether the supply shock keeps driver `i` offline at `t`.
    fn shocked(&self, i: u32, t: i64) -> bool {
        let Some(s) = self
            .market
            .as_deref()
            .and_then(|m| m.cfg.supply_shock.as_ref())
        else {
            return false;
        };
        let from = self.config.start_ms + s.starts_after_ms;
        (from..from + s.duration_ms).contains(&t) && s.hits(i)
    }

    /// A driver's ping in the closed loop.
    pub(super) fn ping_market(&mut self, i: u32, t: i64) {
        let d = self.drivers[i as usize];
        let (p_on, p_off) = self
            .market
            .as_deref()
            .map_or((0.0, 0.0), |m| (m.p_on_per_ping, m.p_off_per_ping));
        let status = match d.state {
            DriverState::Offline { until_ms } => {
                if t < until_ms || self.shocked(i, t) || !self.world_rng.chance(p_on) {
                    return;
                }
                self.set_available(i, d.x, d.y, d.slot, t);
                self.drivers[i as usize].next_decision_ms = t;
                if let Some(m) = self.market.as_deref_mut() {
                    m.minute(t).log_ons += 1;
                }
                DriverStatus::Available
            }
            DriverState::EnRoute {
                from,
                pickup,
                start_ms,
                arrive_ms,
                to,
                trip_ms,
            } => {
                if t < arrive_ms {
                    let f = (t - start_ms) as f64 / (arrive_ms - start_ms).max(1) as f64;
                    self.move_along(i, from, (pickup.x, pickup.y), f, t);
                    return;
                }
                self.drivers[i as usize].state = DriverState::OnTrip {
                    from: (pickup.x, pickup.y),
                    to,
                    start_ms: arrive_ms,
                    end_ms: arrive_ms + trip_ms,
                };
                self.drivers[i as usize].slot = pickup.slot;
                self.ping_market(i, t);
                return;
            }
            DriverState::OnTrip {
                from,
                to,
                start_ms,
                end_ms,
            } => {
                if t < end_ms {
                    let f = (t - start_ms) as f64 / (end_ms - start_ms).max(1) as f64;
                    self.move_along(i, from, (to.x, to.y), f, t);
                    return;
                }
                self.set_available(i, to.x, to.y, to.slot, t);
                self.drivers[i as usize].next_decision_ms = t;
                DriverStatus::Available
            }
            DriverState::Available => self.idle_ping(i, t, p_off),
        };
        let d = &self.drivers[i as usize];
        let (x, y, partition) = (d.x, d.y, self.city.partition_of_slot(d.slot));
        self.emit(
            t,
            partition,
            Body::Driver {
                driver: i,
                x,
                y,
                status,
            },
        );
    }

    /// An idle driver's ping: log off (the supply shock, or with the
    /// earnings-driven probability `p_off`), or decide where to cruise
    /// when due, and cruise.
    fn idle_ping(&mut self, i: u32, t: i64, p_off: f64) -> DriverStatus {
        let d = self.drivers[i as usize];
        if self.shocked(i, t) || self.world_rng.chance(p_off) {
            self.remove_available(i, d.slot);
            let dm = &mut self.drivers[i as usize];
            dm.state = DriverState::Offline {
                until_ms: t + OFFLINE_MIN_MS,
            };
            dm.target = None;
            dm.last_ms = t;
            if let Some(m) = self.market.as_deref_mut() {
                m.minute(t).log_offs += 1;
            }
            return DriverStatus::Offline;
        }
        if t >= d.next_decision_ms {
            self.reposition(i, t);
        }
        self.cruise(i, t);
        DriverStatus::Available
    }

    /// An unavailable driver's position `f` of the way from `from` to `to`,
    /// pinged as on trip (open and closed loop alike); off the city's cells,
    /// the partition of the H3 cell under it (or 0) carries the ping.
    pub(super) fn move_along(&mut self, i: u32, from: (f64, f64), to: (f64, f64), f: f64, t: i64) {
        let f = f.clamp(0.0, 1.0);
        let x = from.0 + (to.0 - from.0) * f;
        let y = from.1 + (to.1 - from.1) * f;
        let hint = self.drivers[i as usize].slot;
        let spot = self.city.locate(x, y, hint);
        let partition = match spot {
            Some(s) => self.city.partition_of_slot(s.slot),
            None => self
                .city
                .cell_at(x, y)
                .map_or(0, |c| self.city.partition_of_cell(u64::from(c))),
        };
        let dm = &mut self.drivers[i as usize];
        dm.x = x;
        dm.y = y;
        dm.slot = spot.map_or(NO_SLOT, |s| s.slot);
        dm.last_ms = t;
        self.emit(
            t,
            partition,
            Body::Driver {
                driver: i,
                x,
                y,
                status: DriverStatus::OnTrip,
            },
        );
    }

    /// An idle driver's choice of where to cruise: stay, or head for a
    /// neighbouring cell, by a logit over expected earnings (FleetPy's
    /// `DriverUtilityMax` with the multiplier added).
    fn reposition(&mut self, i: u32, t: i64) {
        let Some(market) = self.market.as_deref() else {
            return;
        };
        let cfg = &market.cfg;
        let d = self.drivers[i as usize];
        let here = d.slot;
        let shares = self.demand_share.get().map(Vec::as_slice).unwrap_or(&[]);
        let trip_fare = cfg.fare_per_min * (TRIP_MIN_MS + TRIP_MAX_MS) as f64 / 2.0 / 60_000.0;
        let mut options: [(u32, f64, f64); 7] = [(NO_SLOT, 0.0, 0.0); 7];
        let mut n = 0;
        for &(s, dist) in self.city.dispatch_ring(here) {
            if dist > 1 || n == options.len() {
                continue;
            }
            let lambda =
                market.city_requests_per_min * shares.get(s as usize).copied().unwrap_or(0.0);
            let idle = self.available[s as usize].len() as f64 - f64::from(u8::from(s == here));
            let chance = lambda / (lambda + RIDE_CHANCE_HALF_PER_MIN * (1.0 + idle.max(0.0)));
            let (cx, cy, _) = self.city.cell_disk(s);
            let km = if s == here {
                0.0
            } else {
                ((cx - d.x).powi(2) + (cy - d.y).powi(2)).sqrt()
            };
            let base = trip_fare * chance - cfg.move_cost_per_km * km
                + if s == here { cfg.stay_bonus } else { 0.0 };
            let surge = trip_fare * chance * cfg.price_response * (market.prices[s as usize] - 1.0);
            options[n] = (s, cfg.logit_scale * (base + surge), cfg.logit_scale * base);
            n += 1;
        }
        let options = &options[..n];
        let surge_in_sight = options.iter().any(|o| market.prices[o.0 as usize] != 1.0);
        let softmax = |pick: fn(&(u32, f64, f64)) -> f64| -> Vec<f64> {
            let top = options.iter().map(pick).fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = options.iter().map(|o| (pick(o) - top).exp()).collect();
            let sum: f64 = w.iter().sum();
            w.into_iter().map(|v| v / sum).collect()
        };
        let with = softmax(|o| o.1);
        let without = softmax(|o| o.2);
        let tv: f64 = with
            .iter()
            .zip(&without)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 2.0;
        let stay = options
            .iter()
            .zip(&with)
            .find(|(o, _)| o.0 == here)
            .map_or(0.0, |(_, p)| *p);
        let interval = cfg.reposition_interval_ms;
        let mut u = self.world_rng.uniform();
        let mut choice = here;
        for (o, p) in options.iter().zip(&with) {
            if u < *p {
                choice = o.0;
                break;
            }
            u -= p;
        }
        let dm = &mut self.drivers[i as usize];
        dm.next_decision_ms = t + interval;
        dm.target = (choice != here).then(|| {
            let (cx, cy, _) = self.city.cell_disk(choice);
            (cx, cy, choice)
        });
        if let Some(m) = self.market.as_deref_mut() {
            let minute = m.minute(t);
            minute.decisions += 1;
            // Only where a price other than 1.0 was in sight: the share
            // compares with Lu, Frazier & Kislev's, measured where drivers
            // saw the surge heat map.
            if surge_in_sight {
                minute.expected_moves += 1.0 - stay;
                minute.price_moves += tv;
            }
        }
    }

    /// An idle driver's movement since its last ping: straight to its
    /// target cell if it has one (dropped on arrival), else the open
    /// loop's random walk.
    fn cruise(&mut self, i: u32, t: i64) {
        let d = self.drivers[i as usize];
        let Some((tx, ty, tslot)) = d.target else {
            self.wander(i, t);
            return;
        };
        let dist = d.speed * (t - d.last_ms) as f64;
        let (dx, dy) = (tx - d.x, ty - d.y);
        let left = (dx * dx + dy * dy).sqrt();
        let f = if left > 0.0 {
            (dist / left).min(1.0)
        } else {
            1.0
        };
        let (x, y) = (d.x + dx * f, d.y + dy * f);
        let spot = self.city.locate(x, y, d.slot).unwrap_or(Spot {
            x: d.x,
            y: d.y,
            slot: d.slot,
        });
        if spot.slot != d.slot {
            self.remove_available(i, d.slot);
            self.add_available(i, spot.slot);
        }
        let dm = &mut self.drivers[i as usize];
        dm.x = spot.x;
        dm.y = spot.y;
        dm.slot = spot.slot;
        dm.heading = dy.atan2(dx);
        dm.last_ms = t;
        if spot.slot == tslot {
            dm.target = None;
        }
    }
}
