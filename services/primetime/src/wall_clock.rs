//! The one place the service reads the wall clock (DESIGN §1: wall time
//! serves liveness only — idle partitions, staleness flags, timeouts,
//! where a simulated stream starts — never a decision).

/// Wall clock in ms since the Unix epoch (0 before 1970, `i64::MAX` past
/// the year 292 million: neither happens on a sane host).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
