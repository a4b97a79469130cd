//! The demand model's pure parts: the time-of-day curve and the stadium's
//! release schedule.

/// San Francisco's offset from UTC in hours (standard time; the simulator
/// ignores daylight saving, which only shifts the curve by an hour).
const UTC_OFFSET_H: i64 = -8;

/// Constant floor of the curve: night-time demand.
const FLOOR: f64 = 0.25;

/// Bumps of the time-of-day curve as (local hour of the peak, width in
/// hours, height): morning commute, lunch, evening commute, nightlife.
const BUMPS: [(f64, f64, f64); 4] = [
    (8.5, 1.25, 1.1),
    (12.5, 1.5, 0.5),
    (18.0, 1.75, 1.3),
    (22.75, 1.5, 0.6),
];

/// Demand factor by local hour: `FLOOR` plus Gaussian bumps (on the 24 h
/// circle), divided by the curve's daily mean so that `demand_per_s` is
/// the average rate over a day. Peaks ≈ 1.9 at 08:30 and ≈ 2.1 at 18:00,
/// trough ≈ 0.35 at 04:00.
#[derive(Debug, Clone)]
pub(crate) struct TimeOfDay {
    mean: f64,
}

impl TimeOfDay {
    pub fn new() -> Self {
        // Midpoint rule over the minutes of a day: exact enough, and a
        // fixed sequence of operations, so the same on every run.
        let sum: f64 = (0..1440).map(|m| raw((f64::from(m) + 0.5) / 60.0)).sum();
        Self { mean: sum / 1440.0 }
    }

    /// The factor at `t_ms` (Unix ms, UTC).
    pub fn factor(&self, t_ms: i64) -> f64 {
        let local_ms = (t_ms + UTC_OFFSET_H * 3_600_000).rem_euclid(86_400_000);
        raw(local_ms as f64 / 3_600_000.0) / self.mean
    }
}

fn raw(hour: f64) -> f64 {
    let mut v = FLOOR;
    for (peak, width, height) in BUMPS {
        let d = (hour - peak).abs();
        let d = d.min(24.0 - d);
        v += height * (-0.5 * (d / width) * (d / width)).exp();
    }
    v
}

/// How many of the stadium's `riders` have left `elapsed_ms` into an
/// event of `duration_ms`: 70 % spread evenly over the first third, the
/// other 30 % over the rest. Exact integer arithmetic, so the count at the
/// end is exactly `riders` and the split between steps is the same
/// however the steps fall.
pub(crate) fn stadium_released(riders: u32, duration_ms: i64, elapsed_ms: i64) -> u64 {
    let riders = u64::from(riders);
    if elapsed_ms <= 0 {
        return 0;
    }
    if elapsed_ms >= duration_ms {
        return riders;
    }
    let d = i128::from(duration_ms);
    let b = d / 3;
    let rest = d - b;
    if b == 0 {
        // Shorter than 3 ms: everyone at the end.
        return 0;
    }
    let e = i128::from(elapsed_ms);
    // Released share = g / (10 · b · rest).
    let g = if e <= b {
        7 * e * rest
    } else {
        7 * b * rest + 3 * (e - b) * b
    };
    (i128::from(riders) * g / (10 * b * rest)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIDNIGHT_SF: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn curve_has_mean_one_and_commute_peaks() {
        let tod = TimeOfDay::new();
        let mean: f64 = (0..1440)
            .map(|m| tod.factor(MIDNIGHT_SF + m * 60_000 + 30_000))
            .sum::<f64>()
            / 1440.0;
        assert!((mean - 1.0).abs() < 1e-9, "{mean}");
        let at = |h: f64| tod.factor(MIDNIGHT_SF + (h * HOUR as f64) as i64);
        assert!(at(8.5) > 1.5 && at(18.0) > 1.5, "{} {}", at(8.5), at(18.0));
        assert!(at(4.0) < 0.5, "{}", at(4.0));
        assert!(at(8.5) > at(11.0) && at(18.0) > at(15.0));
    }

    #[test]
    fn stadium_is_front_loaded_and_exact() {
        let d = 600_000;
        assert_eq!(stadium_released(1_500, d, 0), 0);
        assert_eq!(stadium_released(1_500, d, d / 3), 1_050);
        assert_eq!(stadium_released(1_500, d, d), 1_500);
        assert_eq!(stadium_released(1_499, d, d - 1), 1_498);
        assert_eq!(stadium_released(1_499, d, d + 5), 1_499);
        let mut prev = 0;
        for e in (0..=d).step_by(1_000) {
            let n = stadium_released(1_501, d, e);
            assert!(n >= prev);
            prev = n;
        }
        assert_eq!(stadium_released(10, 2, 1), 0);
        assert_eq!(stadium_released(10, 2, 2), 10);
    }
}
