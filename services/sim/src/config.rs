//! [`SimConfig`] and its parts, with documented defaults and validation.

use serde::{Deserialize, Serialize};

/// Everything a simulation depends on: the output is a pure function of
/// this struct (and of how far the simulation is advanced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed of every random choice. Default 7.
    pub seed: u64,
    /// Simulation start, Unix ms (UTC). Default 1_800_000_000_000
    /// (2027-01-15 08:00 UTC, midnight in San Francisco); the service
    /// overrides it with "now". Must be in [1970, 2100).
    pub start_ms: i64,
    /// Latitude of the city centre, degrees. Default 37.7749 (San
    /// Francisco). Must be within ±80.
    pub center_lat: f64,
    /// Longitude of the city centre, degrees. Default -122.4194.
    pub center_lng: f64,
    /// Radius of the city around its centre. Default 12 km; 0.5..=50.
    pub radius_km: f64,
    /// Number of drivers. Default 3_000; at most 1_000_000.
    pub drivers: u32,
    /// Interval between two location pings of a driver. Default 4 s;
    /// 100 ms..=10 min.
    pub ping_interval_ms: i64,
    /// City-wide rider sessions started per second of simulated time, at a
    /// time-of-day factor of 1.0 (the factor's daily mean). Default 6.0;
    /// 0..=100_000.
    pub demand_per_s: f64,
    /// Number of input partitions (per topic). Default 4; 1..=4096.
    pub partitions: u32,
    /// A stadium emptying out: a burst of demand in one cell. Default
    /// `Some(StadiumEvent::default())`.
    pub stadium: Option<StadiumEvent>,
    /// Injected input faults. Default: none.
    pub noise: Noise,
    /// The closed-loop market (riders see prices, pickups take time,
    /// drivers respond): see [`MarketConfig`] and the crate docs. Default
    /// none: the open-loop simulator, whose output does not depend on this
    /// field's existence (it is not even serialised when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market: Option<MarketConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            start_ms: 1_800_000_000_000,
            center_lat: 37.7749,
            center_lng: -122.4194,
            radius_km: 12.0,
            drivers: 3_000,
            ping_interval_ms: 4_000,
            demand_per_s: 6.0,
            partitions: 4,
            stadium: Some(StadiumEvent::default()),
            noise: Noise::default(),
            market: None,
        }
    }
}

/// A stadium crowd leaving: `riders` extra sessions start from the res-8
/// cell holding (`lat`, `lng`), 70 % of them in the first third of the
/// event, and request a ride with probability 0.9.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StadiumEvent {
    /// Latitude of the stadium. Default 37.7786 (Oracle Park). Must lie in
    /// the city.
    pub lat: f64,
    /// Longitude of the stadium. Default -122.3893.
    pub lng: f64,
    /// Start of the event after the simulation start. Default 15 s; ≥ 0.
    pub starts_after_ms: i64,
    /// Length of the event. Default 10 min; > 0, at most 1 day.
    pub duration_ms: i64,
    /// Rider sessions the event adds. Default 1_500; at most 10_000_000.
    pub riders: u32,
}

impl Default for StadiumEvent {
    fn default() -> Self {
        Self {
            lat: 37.7786,
            lng: -122.3893,
            starts_after_ms: 15_000,
            duration_ms: 600_000,
            riders: 1_500,
        }
    }
}

/// Input faults, each a probability per generated record in `[0, 1]`; the
/// rates may sum to at most 1, since a record gets at most one fault. The
/// faulty record is labelled with its [`Label`](crate::Label). All default
/// to 0.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Noise {
    /// The record is emitted again, same payload and event id, 0.5–20 s
    /// later in ingest order (the copy is labelled `Duplicate`).
    pub duplicate: f64,
    /// Event time moved back 0.5–4 s, within the engine's default 5 s
    /// out-of-orderness.
    pub out_of_order: f64,
    /// Ingest delayed to 10–120 s after the event time: some are re-timed
    /// to the watermark, those beyond the 60 s lateness are `late`.
    pub late: f64,
    /// Event time off by ± 2 hours .. 2 years (log-uniform): `future` or
    /// `too_old`.
    pub bad_clock: f64,
    /// Payload replaced by bytes that are not valid protobuf for the topic.
    pub malformed: f64,
}

impl Noise {
    /// The rates in [`crate::Label`] order (after `Clean`).
    pub(crate) fn rates(&self) -> [(&'static str, f64); 5] {
        [
            ("duplicate", self.duplicate),
            ("out_of_order", self.out_of_order),
            ("late", self.late),
            ("bad_clock", self.bad_clock),
            ("malformed", self.malformed),
        ]
    }

    /// Whether any fault can be injected.
    pub fn is_active(&self) -> bool {
        self.rates().iter().any(|(_, r)| *r > 0.0)
    }
}

/// The closed-loop market: what changes when [`SimConfig::market`] is set.
/// Every rule is described, with its source, in the crate docs ("Closed
/// loop"); the defaults are the calibrated values of the market benchmark
/// (`QUALITY.md` says how they were chosen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketConfig {
    /// Rider price elasticity ε: a session that would request at price 1.0
    /// with probability `p0` requests at multiplier `m` with probability
    /// `p0 · m^-ε`. Default 0.6 (Cohen, Hahn, Hall, Levitt & Metcalfe,
    /// NBER w22627); 0..=5.
    pub elasticity: f64,
    /// A rider keeps retrying an unmatched request for a patience drawn
    /// uniformly from `[patience_min_ms, patience_max_ms]`, then abandons.
    /// Defaults 2 and 6 min.
    pub patience_min_ms: i64,
    pub patience_max_ms: i64,
    /// Driving speed of a driver on its way to a pickup. Default 14 km/h
    /// (city traffic); 1..=120.
    pub pickup_speed_kmh: f64,
    /// Fixed part of every pickup: accepting, finding the rider. Default
    /// 75 s; 0..=10 min.
    pub pickup_overhead_ms: i64,
    /// Fare per minute of trip at multiplier 1.0, the drivers' currency.
    /// Default 1.0.
    pub fare_per_min: f64,
    /// Idle drivers decide where to cruise this often. Default 30 s;
    /// 1 s..=10 min.
    pub reposition_interval_ms: i64,
    /// Logit scale of the repositioning choice, per unit of fare. Default
    /// 0.6.
    pub logit_scale: f64,
    /// Utility of staying put over moving, in fares: inertia. Default 4.0.
    pub stay_bonus: f64,
    /// Cost of moving one km, in fares. Default 0.5.
    pub move_cost_per_km: f64,
    /// How much drivers weigh the multiplier (the heat map): the expected
    /// fare of a cell is `F · w · (1 + price_response · (m − 1))`. Default
    /// 1.0 (fully); 0 makes drivers blind to prices.
    pub price_response: f64,
    /// Share of the driver pool online at the start. Default 0.48.
    pub online_share: f64,
    /// Share of the online drivers already on a trip at the start (the
    /// world starts near its steady state). Default 0.5.
    pub initial_busy: f64,
    /// Earnings per online hour at which drivers log on and off at their
    /// base rates. Default 30 (fares).
    pub reference_earnings_per_hour: f64,
    /// Base log-off rate of idle drivers and log-on rate of offline ones,
    /// per minute. Defaults 0.02 and 0.01: at the reference earnings and
    /// half the online drivers idle, about half the pool is online.
    pub log_off_per_min: f64,
    pub log_on_per_min: f64,
    /// Elasticity of the log-on/log-off odds to recent earnings per hour.
    /// Default 1.2 (Angrist, Caldwell & Hall, NBER w23891); 0..=5.
    pub supply_elasticity: f64,
    /// Half-life of the earnings average drivers react to (damping).
    /// Default 10 min.
    pub earnings_half_life_ms: i64,
    /// A city-wide demand peak (New Year's Eve). Default none.
    pub demand_peak: Option<DemandPeak>,
    /// A share of the drivers logging off at once. Default none.
    pub supply_shock: Option<SupplyShock>,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            elasticity: 0.6,
            patience_min_ms: 120_000,
            patience_max_ms: 360_000,
            pickup_speed_kmh: 14.0,
            pickup_overhead_ms: 75_000,
            fare_per_min: 1.0,
            reposition_interval_ms: 30_000,
            logit_scale: 0.6,
            stay_bonus: 4.0,
            move_cost_per_km: 0.5,
            price_response: 1.0,
            online_share: 0.48,
            initial_busy: 0.5,
            reference_earnings_per_hour: 30.0,
            log_off_per_min: 0.02,
            log_on_per_min: 0.01,
            supply_elasticity: 1.2,
            earnings_half_life_ms: 600_000,
            demand_peak: None,
            supply_shock: None,
        }
    }
}

/// Every session start rate multiplied by `factor` from `start_ms +
/// starts_after_ms` for `duration_ms`, ramping linearly over `ramp_ms` at
/// both ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemandPeak {
    pub starts_after_ms: i64,
    pub duration_ms: i64,
    /// Default 3.0; 0..=100.
    pub factor: f64,
    /// Default 5 min.
    pub ramp_ms: i64,
}

impl Default for DemandPeak {
    fn default() -> Self {
        Self {
            starts_after_ms: 0,
            duration_ms: 2 * 3_600_000,
            factor: 3.0,
            ramp_ms: 300_000,
        }
    }
}

impl DemandPeak {
    /// The demand factor at `elapsed_ms` after the simulation start.
    pub fn factor_at(&self, elapsed_ms: i64) -> f64 {
        let into = elapsed_ms - self.starts_after_ms;
        let left = self.starts_after_ms + self.duration_ms - elapsed_ms;
        if into < 0 || left <= 0 {
            return 1.0;
        }
        let ramp = self.ramp_ms.max(1) as f64;
        let w = (into as f64 / ramp).min(left as f64 / ramp).min(1.0);
        1.0 + (self.factor - 1.0) * w
    }
}

/// Every driver whose number is a multiple of `1 / share` (rounded) logs
/// off at `start_ms + starts_after_ms` (after finishing a trip) and stays
/// off for `duration_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupplyShock {
    pub starts_after_ms: i64,
    pub duration_ms: i64,
    /// Default 1/3; in (0, 1].
    pub share: f64,
}

impl Default for SupplyShock {
    fn default() -> Self {
        Self {
            starts_after_ms: 0,
            duration_ms: 2 * 3_600_000,
            share: 1.0 / 3.0,
        }
    }
}

impl SupplyShock {
    /// Whether driver `i` is one of the shocked drivers.
    pub fn hits(&self, driver: u32) -> bool {
        let every = (1.0 / self.share).round().max(1.0) as u32;
        driver % every == 0
    }
}

impl MarketConfig {
    /// Every problem, as `market.field: message` lines.
    pub(crate) fn problems(&self, out: &mut Vec<String>) {
        self.rate_problems(out);
        self.time_problems(out);
        self.scenario_problems(out);
    }

    /// The real-valued behaviour parameters, each against its range.
    fn rate_problems(&self, out: &mut Vec<String>) {
        let mut bad = |field: &str, msg: String| out.push(format!("market.{field}: {msg}"));
        let in_range = |v: f64, lo: f64, hi: f64| v.is_finite() && (lo..=hi).contains(&v);
        for (name, v, lo, hi) in [
            ("elasticity", self.elasticity, 0.0, 5.0),
            ("pickup_speed_kmh", self.pickup_speed_kmh, 1.0, 120.0),
            ("fare_per_min", self.fare_per_min, 0.01, 1e6),
            ("logit_scale", self.logit_scale, 0.0, 100.0),
            ("stay_bonus", self.stay_bonus, -1e3, 1e3),
            ("move_cost_per_km", self.move_cost_per_km, 0.0, 1e3),
            ("price_response", self.price_response, 0.0, 10.0),
            ("online_share", self.online_share, 0.0, 1.0),
            ("initial_busy", self.initial_busy, 0.0, 1.0),
            (
                "reference_earnings_per_hour",
                self.reference_earnings_per_hour,
                0.01,
                1e6,
            ),
            ("log_off_per_min", self.log_off_per_min, 0.0, 1.0),
            ("log_on_per_min", self.log_on_per_min, 0.0, 1.0),
            ("supply_elasticity", self.supply_elasticity, 0.0, 5.0),
        ] {
            if !in_range(v, lo, hi) {
                bad(name, format!("must be in [{lo}, {hi}], got {v}"));
            }
        }
    }

    /// Rider patience and the driver model's intervals.
    fn time_problems(&self, out: &mut Vec<String>) {
        let mut bad = |field: &str, msg: String| out.push(format!("market.{field}: {msg}"));
        if !(0..=3_600_000).contains(&self.patience_min_ms)
            || !(self.patience_min_ms..=3_600_000).contains(&self.patience_max_ms)
        {
            bad(
                "patience_min_ms/patience_max_ms",
                format!(
                    "need 0 <= min <= max <= 1 hour, got {} and {}",
                    self.patience_min_ms, self.patience_max_ms
                ),
            );
        }
        for (name, v, lo, hi) in [
            ("pickup_overhead_ms", self.pickup_overhead_ms, 0, 600_000),
            (
                "reposition_interval_ms",
                self.reposition_interval_ms,
                1_000,
                600_000,
            ),
            (
                "earnings_half_life_ms",
                self.earnings_half_life_ms,
                60_000,
                86_400_000,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                bad(name, format!("must be in [{lo}, {hi}] ms, got {v}"));
            }
        }
    }

    /// The optional demand peak and supply shock.
    fn scenario_problems(&self, out: &mut Vec<String>) {
        let mut bad = |field: &str, msg: String| out.push(format!("market.{field}: {msg}"));
        let in_range = |v: f64, lo: f64, hi: f64| v.is_finite() && (lo..=hi).contains(&v);
        if let Some(p) = &self.demand_peak {
            if !(0..=365 * 86_400_000).contains(&p.starts_after_ms)
                || !(1..=86_400_000).contains(&p.duration_ms)
                || !(0..=86_400_000).contains(&p.ramp_ms)
                || !in_range(p.factor, 0.0, 100.0)
            {
                bad(
                    "demand_peak",
                    format!(
                        "times must be in [0, 1 day] (duration > 0) and factor in [0, 100], got {p:?}"
                    ),
                );
            }
        }
        if let Some(s) = &self.supply_shock {
            let valid = (0..=365 * 86_400_000).contains(&s.starts_after_ms)
                && (1..=86_400_000).contains(&s.duration_ms)
                && s.share.is_finite()
                && s.share > 0.0
                && s.share <= 1.0;
            if !valid {
                bad(
                    "supply_shock",
                    format!(
                        "times must be in [0, 1 day] (duration > 0) and share in (0, 1], got {s:?}"
                    ),
                );
            }
        }
    }
}

/// Latest accepted start: 2100-01-01T00:00:00Z. Keeps every derived time
/// (± 2 years of bad clock included) far from `i64` overflow.
const MAX_START_MS: i64 = 4_102_444_800_000;

impl SimConfig {
    /// Every problem with the scalar fields, as `field: message` lines.
    /// Problems that need the city's geometry (stadium outside the city,
    /// empty city) are added by [`crate::Simulator::new`].
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.city_problems(&mut out);
        if let Some(s) = &self.stadium {
            s.problems(&mut out);
        }
        self.noise.problems(&mut out);
        if let Some(m) = &self.market {
            m.problems(&mut out);
        }
        out
    }

    /// The start time, the city's geometry, its fleet, demand and partitions.
    fn city_problems(&self, out: &mut Vec<String>) {
        let mut bad = |field: &str, msg: String| out.push(format!("{field}: {msg}"));
        if !(0..MAX_START_MS).contains(&self.start_ms) {
            bad(
                "start_ms",
                format!(
                    "must be a Unix ms time in [1970, 2100), got {}",
                    self.start_ms
                ),
            );
        }
        if !(self.center_lat.is_finite() && (-80.0..=80.0).contains(&self.center_lat)) {
            bad(
                "center_lat",
                format!("must be in [-80, 80], got {}", self.center_lat),
            );
        }
        if !(self.center_lng.is_finite() && (-180.0..=180.0).contains(&self.center_lng)) {
            bad(
                "center_lng",
                format!("must be in [-180, 180], got {}", self.center_lng),
            );
        }
        if !(self.radius_km.is_finite() && (0.5..=50.0).contains(&self.radius_km)) {
            bad(
                "radius_km",
                format!("must be in [0.5, 50], got {}", self.radius_km),
            );
        }
        if self.drivers > 1_000_000 {
            bad(
                "drivers",
                format!("must be at most 1000000, got {}", self.drivers),
            );
        }
        if !(100..=600_000).contains(&self.ping_interval_ms) {
            bad(
                "ping_interval_ms",
                format!("must be in [100, 600000] ms, got {}", self.ping_interval_ms),
            );
        }
        if !(self.demand_per_s.is_finite() && (0.0..=100_000.0).contains(&self.demand_per_s)) {
            bad(
                "demand_per_s",
                format!("must be in [0, 100000], got {}", self.demand_per_s),
            );
        }
        if !(1..=4096).contains(&self.partitions) {
            bad(
                "partitions",
                format!("must be in [1, 4096], got {}", self.partitions),
            );
        }
    }
}

impl StadiumEvent {
    /// Every problem, as `stadium.field: message` lines.
    fn problems(&self, out: &mut Vec<String>) {
        let mut bad = |field: &str, msg: String| out.push(format!("{field}: {msg}"));
        if !(self.lat.is_finite() && (-90.0..=90.0).contains(&self.lat)) {
            bad(
                "stadium.lat",
                format!("must be in [-90, 90], got {}", self.lat),
            );
        }
        if !(self.lng.is_finite() && (-180.0..=180.0).contains(&self.lng)) {
            bad(
                "stadium.lng",
                format!("must be in [-180, 180], got {}", self.lng),
            );
        }
        if !(0..=365 * 86_400_000).contains(&self.starts_after_ms) {
            bad(
                "stadium.starts_after_ms",
                format!("must be in [0, 1 year], got {}", self.starts_after_ms),
            );
        }
        if !(1..=86_400_000).contains(&self.duration_ms) {
            bad(
                "stadium.duration_ms",
                format!("must be in [1, 86400000] ms, got {}", self.duration_ms),
            );
        }
        if self.riders > 10_000_000 {
            bad(
                "stadium.riders",
                format!("must be at most 10000000, got {}", self.riders),
            );
        }
    }
}

impl Noise {
    /// Every fault rate that is not a probability, and rates summing past 1
    /// (each record gets at most one fault).
    fn problems(&self, out: &mut Vec<String>) {
        let mut bad = |field: &str, msg: String| out.push(format!("{field}: {msg}"));
        let mut sum = 0.0;
        let mut all_valid = true;
        for (name, rate) in self.rates() {
            if rate.is_finite() && (0.0..=1.0).contains(&rate) {
                sum += rate;
            } else {
                all_valid = false;
                bad(
                    &format!("noise.{name}"),
                    format!("must be a probability in [0, 1], got {rate}"),
                );
            }
        }
        if all_valid && sum > 1.0 + 1e-9 {
            bad(
                "noise",
                format!("rates must sum to at most 1 (one fault per record), got {sum}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SimConfig::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_listed() {
        let c = SimConfig {
            start_ms: -1,
            radius_km: f64::NAN,
            ping_interval_ms: 0,
            partitions: 0,
            stadium: Some(StadiumEvent {
                duration_ms: 0,
                ..StadiumEvent::default()
            }),
            noise: Noise {
                late: 1.5,
                ..Noise::default()
            },
            ..SimConfig::default()
        };
        let fields: Vec<String> = c
            .problems()
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            fields,
            [
                "start_ms",
                "radius_km",
                "ping_interval_ms",
                "partitions",
                "stadium.duration_ms",
                "noise.late"
            ]
        );
    }

    #[test]
    fn noise_rates_must_sum_to_at_most_one() {
        let c = SimConfig {
            noise: Noise {
                duplicate: 0.6,
                malformed: 0.6,
                ..Noise::default()
            },
            ..SimConfig::default()
        };
        let problems = c.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("noise: rates must sum"),
            "{problems:?}"
        );
    }

    #[test]
    fn market_problems_are_listed_and_defaults_valid() {
        let ok = SimConfig {
            market: Some(MarketConfig {
                demand_peak: Some(DemandPeak::default()),
                supply_shock: Some(SupplyShock::default()),
                ..MarketConfig::default()
            }),
            ..SimConfig::default()
        };
        assert_eq!(ok.problems(), Vec::<String>::new());
        let bad = SimConfig {
            market: Some(MarketConfig {
                elasticity: -1.0,
                patience_min_ms: 10,
                patience_max_ms: 5,
                supply_shock: Some(SupplyShock {
                    share: 0.0,
                    ..SupplyShock::default()
                }),
                ..MarketConfig::default()
            }),
            ..SimConfig::default()
        };
        let fields: Vec<String> = bad
            .problems()
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            fields,
            [
                "market.elasticity",
                "market.patience_min_ms/patience_max_ms",
                "market.supply_shock"
            ]
        );
        // Absent, the field is not serialised: open-loop configs read and
        // write as before.
        let json = serde_json::to_string(&SimConfig::default()).expect("serialises");
        assert!(!json.contains("market"));
    }

    #[test]
    fn demand_peak_ramps_in_and_out() {
        let p = DemandPeak {
            starts_after_ms: 1_000,
            duration_ms: 10_000,
            factor: 3.0,
            ramp_ms: 2_000,
        };
        assert_eq!(p.factor_at(0), 1.0);
        assert_eq!(p.factor_at(2_000), 2.0);
        assert_eq!(p.factor_at(5_000), 3.0);
        assert_eq!(p.factor_at(10_000), 2.0);
        assert_eq!(p.factor_at(11_000), 1.0);
    }

    #[test]
    fn serde_defaults_and_unknown_fields() {
        let c: SimConfig = serde_json::from_str(r#"{"seed": 9, "noise": {"late": 0.1}}"#)
            .expect("partial config parses");
        assert_eq!(c.seed, 9);
        assert_eq!(c.noise.late, 0.1);
        assert_eq!(c.drivers, 3_000);
        assert!(serde_json::from_str::<SimConfig>(r#"{"sead": 9}"#).is_err());
        assert!(serde_json::from_str::<SimConfig>(r#"{"noise": {"lat": 0.1}}"#).is_err());
        let json = serde_json::to_string(&SimConfig::default()).expect("serialises");
        let back: SimConfig = serde_json::from_str(&json).expect("round trips");
        assert_eq!(back, SimConfig::default());
    }
}
