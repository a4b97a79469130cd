//! Outcome metrics of one run, read from the simulator's [`MarketLog`]
//! over the scenario's windows (issue 15's list, in [`METRICS`] order).

use primetime_sim::{MarketLog, Ride};

use crate::run::RunOutcome;
use crate::scenario::PeakRiders;

const MINUTE_MS: i64 = 60_000;
/// The spike: the first minutes of a scenario's peak.
const SPIKE_MS: i64 = 10 * MINUTE_MS;
/// A multiplier move this large or larger counts towards a reversal.
const REVERSAL_STEP: f64 = 0.1;

/// Metric names, in column order of every runs × metrics table.
pub const METRICS: [&str; 19] = [
    "fulfilment_requests",
    "fulfilment_sessions",
    "unserved",
    "completed",
    "requests",
    "median_eta_min",
    "p90_eta_min",
    "en_route_share",
    "utilisation",
    "earnings_per_hour",
    "mean_multiplier_paid",
    "share_surged",
    "reversals_per_cell_hour",
    "p95_dm_per_min",
    "peak_fulfilment",
    "peak_median_eta_min",
    "spike_p90_eta_min",
    "price_move_share",
    "online_drivers",
];

/// Column of a metric in [`METRICS`].
pub fn col(name: &str) -> usize {
    METRICS
        .iter()
        .position(|m| *m == name)
        .unwrap_or(usize::MAX)
}

/// One run's metrics, in [`METRICS`] order.
pub fn measure(outcome: &RunOutcome) -> [f64; METRICS.len()] {
    let log = &outcome.log;
    let (from, to) = outcome.setup.timeline.window();
    let in_window: Vec<&Ride> = log
        .rides
        .iter()
        .filter(|r| (from..to).contains(&r.first_request_ms))
        .collect();
    let requests = in_window.len() as f64;
    let done: Vec<&Ride> = in_window
        .iter()
        .copied()
        .filter(|r| r.wait_ms.is_some())
        .collect();
    let completed = done.len() as f64;
    let t = MinuteTotals::sum(minute_range(log, from, to));
    let etas = waits(&done);
    let PeakRides { peak, spike } = peak_rides(outcome, &in_window);
    let (reversals, p95_dm) = price_stability(log, from, to);
    let paid: Vec<f64> = done.iter().map(|r| r.multiplier).collect();
    [
        ratio(completed, requests),
        ratio(completed, t.sessions),
        requests - completed,
        completed,
        requests,
        percentile(&etas, 0.5),
        percentile(&etas, 0.9),
        ratio(t.en_route, t.online),
        ratio(t.on_trip, t.online),
        ratio(t.earnings, t.online / 3.6e6),
        if paid.is_empty() {
            1.0
        } else {
            paid.iter().sum::<f64>() / paid.len() as f64
        },
        ratio(
            paid.iter().filter(|m| **m > 1.0 + 1e-9).count() as f64,
            paid.len() as f64,
        ),
        reversals,
        p95_dm,
        ratio(
            peak.iter().filter(|r| r.wait_ms.is_some()).count() as f64,
            peak.len() as f64,
        ),
        percentile(&waits(&peak), 0.5),
        percentile(&waits(&spike), 0.9),
        ratio(t.price_moves, t.expected_moves),
        ratio(t.online, (to - from) as f64),
    ]
}

/// The window's per-minute statistics summed (driver time in ms).
struct MinuteTotals {
    sessions: f64,
    en_route: f64,
    on_trip: f64,
    /// Idle, en route and on trip.
    online: f64,
    earnings: f64,
    price_moves: f64,
    expected_moves: f64,
}

impl MinuteTotals {
    fn sum(minutes: &[primetime_sim::MinuteStats]) -> Self {
        let sum =
            |f: fn(&primetime_sim::MinuteStats) -> f64| -> f64 { minutes.iter().map(f).sum() };
        let idle = sum(|m| m.idle_ms as f64);
        let en_route = sum(|m| m.en_route_ms as f64);
        let on_trip = sum(|m| m.on_trip_ms as f64);
        Self {
            sessions: sum(|m| m.sessions as f64),
            en_route,
            on_trip,
            online: idle + en_route + on_trip,
            earnings: sum(|m| m.earnings),
            price_moves: sum(|m| m.price_moves),
            expected_moves: sum(|m| m.expected_moves),
        }
    }
}

/// Each ride's wait in minutes, for the rides that got one.
fn waits(rides: &[&Ride]) -> Vec<f64> {
    rides
        .iter()
        .filter_map(|r| r.wait_ms)
        .map(|w| w as f64 / MINUTE_MS as f64)
        .collect()
}

/// The window's rides requested in the scenario's peak (only the event's
/// riders when the scenario says so), and those in its first `SPIKE_MS`.
struct PeakRides<'a> {
    peak: Vec<&'a Ride>,
    spike: Vec<&'a Ride>,
}

fn peak_rides<'a>(outcome: &RunOutcome, in_window: &[&'a Ride]) -> PeakRides<'a> {
    let (peak_from, peak_to) = outcome.setup.peak;
    let peak_rider = |r: &&Ride| match outcome.setup.peak_riders {
        PeakRiders::All => true,
        PeakRiders::Event => r.event,
    };
    let peak: Vec<&Ride> = in_window
        .iter()
        .copied()
        .filter(|r| (peak_from..peak_to).contains(&r.first_request_ms))
        .filter(peak_rider)
        .collect();
    let spike: Vec<&Ride> = peak
        .iter()
        .copied()
        .filter(|r| r.first_request_ms < peak_from + SPIKE_MS)
        .collect();
    PeakRides { peak, spike }
}

fn minute_range(log: &MarketLog, from: i64, to: i64) -> &[primetime_sim::MinuteStats] {
    let i = ((from - log.start_ms).max(0) / MINUTE_MS) as usize;
    let j = ((to - log.start_ms).max(0) / MINUTE_MS) as usize;
    let j = j.min(log.minutes.len());
    &log.minutes[i.min(j)..j]
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Nearest-rank percentile `q` of `values`; 0 for none.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Reversals per cell-hour and the 95th percentile of |Δm| per minute,
/// over the cells whose price moved in the window: a reversal is a change
/// of direction after a move of at least 0.1 from the last turning point
/// (a surge that rises and fades is one), and Δm is the change of a
/// cell's price from one minute boundary to the next.
fn price_stability(log: &MarketLog, from: i64, to: i64) -> (f64, f64) {
    let mut reversals = 0u64;
    let mut moving_cells = 0u64;
    let mut deltas = Vec::new();
    for changes in &log.price_changes {
        let before = changes.iter().take_while(|(t, _)| *t < from).last();
        let start_price = before.map_or(1.0, |(_, m)| *m);
        let inside: Vec<(i64, f64)> = changes
            .iter()
            .copied()
            .filter(|(t, _)| (from..to).contains(t))
            .collect();
        if inside.is_empty() {
            continue;
        }
        moving_cells += 1;
        reversals += count_reversals(start_price, inside.iter().map(|(_, m)| *m));
        let mut price = start_price;
        let mut k = 0;
        let mut minute_start = from;
        while minute_start < to {
            let boundary = minute_start + MINUTE_MS;
            let opening = price;
            while k < inside.len() && inside[k].0 < boundary {
                price = inside[k].1;
                k += 1;
            }
            deltas.push((price - opening).abs());
            minute_start = boundary;
        }
    }
    let hours = (to - from) as f64 / 3.6e6;
    (
        ratio(reversals as f64, moving_cells as f64 * hours),
        percentile(&deltas, 0.95),
    )
}

/// Direction changes of a price path after moves of at least
/// 0.1 (a zigzag filter).
pub fn count_reversals(start: f64, path: impl IntoIterator<Item = f64>) -> u64 {
    let mut dir = 0i8;
    let mut extreme = start;
    let mut count = 0;
    for v in path {
        match dir {
            0 => {
                if v - extreme >= REVERSAL_STEP - 1e-9 {
                    dir = 1;
                    extreme = v;
                } else if extreme - v >= REVERSAL_STEP - 1e-9 {
                    dir = -1;
                    extreme = v;
                }
            }
            1 => {
                if v > extreme {
                    extreme = v;
                } else if extreme - v >= REVERSAL_STEP - 1e-9 {
                    count += 1;
                    dir = -1;
                    extreme = v;
                }
            }
            _ => {
                if v < extreme {
                    extreme = v;
                } else if v - extreme >= REVERSAL_STEP - 1e-9 {
                    count += 1;
                    dir = 1;
                    extreme = v;
                }
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_surge_that_rises_and_fades_is_one_reversal() {
        assert_eq!(count_reversals(1.0, [1.2, 1.5, 1.3, 1.0]), 1);
        assert_eq!(count_reversals(1.0, [1.05, 1.0, 1.05, 1.0]), 0);
        assert_eq!(count_reversals(1.0, [1.5, 1.0, 1.5, 1.0]), 3);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&[], 0.9), 0.0);
    }
}
