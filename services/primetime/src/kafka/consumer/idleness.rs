//! The idleness rules (DESIGN §3, §7 "Idleness"), pure: no Kafka calls,
//! time passed in. The poller feeds it what it saw (records, end-of-log
//! answers, rebalances) and reads back which partitions are idle; the
//! epoch's input reads the watermark to use while every partition is idle.
//!
//! - A partition is idle when it delivered no record for `idle_timeout`
//!   *and* it is at the end of its log, or when it is not assigned here.
//!   A quiet partition that is not at the end of its log (a backlog,
//!   however slow the fetches) is not idle; its quiet time starts again, so
//!   the end of its log is asked again one timeout later (one broker round
//!   trip per timeout per quiet partition).
//! - A record makes its partition not idle at once; the flags travel with
//!   the batch the record is in, so the source sees the partition come back
//!   before it sees its record and starts it from the service watermark
//!   (`max(wm_p, service watermark)`, applied by `pipeline::source`).
//! - While every partition is idle, the watermark follows the ingest clock
//!   ([`IngestClock`]): the newest ingest time read plus the wall time
//!   since, minus `idle_timeout`.
//!   An epoch restored from a snapshot starts the clock at the newest
//!   ingest time of the snapshot's records (`KafkaInput::resumed_at`):
//!   with every log already read, it must still fire its remaining ticks.

use std::time::{Duration, Instant};

use primetime_core::Watermark;

/// One partition's idleness inputs.
#[derive(Debug, Clone, Copy)]
struct PartitionQuiet {
    assigned: bool,
    /// Wall time of the last record (or of the last reset: assignment,
    /// epoch start, a "not at the end" answer).
    quiet_since: Instant,
    /// Confirmed at the end of its log since `quiet_since`.
    at_end: bool,
}

/// Per pipeline input partition: is it idle? See the module docs.
#[derive(Debug, Clone)]
pub struct Idleness {
    timeout: Duration,
    parts: Vec<PartitionQuiet>,
}

impl Idleness {
    /// `partitions` pipeline input partitions, none assigned yet.
    pub fn new(partitions: usize, timeout: Duration, now: Instant) -> Self {
        let quiet = PartitionQuiet {
            assigned: false,
            quiet_since: now,
            at_end: false,
        };
        Self {
            timeout,
            parts: vec![quiet; partitions],
        }
    }

    /// A record of `partition` was read at `now`: it is not idle.
    pub fn record(&mut self, partition: u32, now: Instant) {
        self.reset(partition, now);
    }

    /// `partition` starts (or stops) being read here, from a new position:
    /// quiet time and end-of-log answer start again.
    pub fn set_assigned(&mut self, partition: u32, assigned: bool, now: Instant) {
        if let Some(p) = self.parts.get_mut(partition as usize) {
            p.assigned = assigned;
        }
        self.reset(partition, now);
    }

    /// `partition` was sought to a new start (an epoch): as if it had just
    /// delivered a record.
    pub fn reset(&mut self, partition: u32, now: Instant) {
        if let Some(p) = self.parts.get_mut(partition as usize) {
            p.quiet_since = now;
            p.at_end = false;
        }
    }

    /// Assigned partitions quiet for the timeout whose end of log is not
    /// confirmed yet: ask the broker, then call [`Self::end_of_log`].
    pub fn due_for_end_check(&self, now: Instant) -> Vec<u32> {
        (0..self.parts.len() as u32)
            .filter(|&i| {
                let p = &self.parts[i as usize];
                p.assigned && self.quiet(p, now) && !p.at_end
            })
            .collect()
    }

    /// The broker's answer for `partition`: at the end of its log, or not
    /// (a backlog: quiet time starts again).
    pub fn end_of_log(&mut self, partition: u32, at_end: bool, now: Instant) {
        if let Some(p) = self.parts.get_mut(partition as usize) {
            if at_end {
                p.at_end = true;
            } else {
                p.quiet_since = now;
            }
        }
    }

    /// Every partition's idle flag at `now`.
    pub fn flags(&self, now: Instant) -> Vec<bool> {
        self.parts
            .iter()
            .map(|p| !p.assigned || (self.quiet(p, now) && p.at_end))
            .collect()
    }

    fn quiet(&self, p: &PartitionQuiet, now: Instant) -> bool {
        now.saturating_duration_since(p.quiet_since) >= self.timeout
    }
}

/// The watermark while every partition is idle: the ingest clock run on
/// by the wall clock. Live, that is `wall − idle_timeout`; on a backlog it
/// starts from the backlog's own time, so old records are never made late
/// by a wall-clock jump.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestClock {
    /// Newest ingest time read (ms), and when it was read.
    newest: Option<(i64, Instant)>,
}

impl IngestClock {
    /// A batch whose newest ingest time is `max_ingest_ms` was read at
    /// `now`; an older one does not move the clock.
    pub fn observe(&mut self, max_ingest_ms: i64, now: Instant) {
        if self.newest.is_none_or(|(m, _)| max_ingest_ms > m) {
            self.newest = Some((max_ingest_ms, now));
        }
    }

    /// The watermark at `now`; `None` before the first record (hold).
    pub fn watermark(&self, idle_timeout: Duration, now: Instant) -> Option<Watermark> {
        let (max, at) = self.newest?;
        let timeout = i64::try_from(idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let since =
            i64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(i64::MAX);
        Some(Watermark(max.saturating_add(since).saturating_sub(timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Two partitions, both assigned at `t0`.
    fn assigned(t0: Instant) -> Idleness {
        let mut idle = Idleness::new(2, TIMEOUT, t0);
        idle.set_assigned(0, true, t0);
        idle.set_assigned(1, true, t0);
        idle
    }

    #[test]
    fn unassigned_partitions_are_idle() {
        let t0 = Instant::now();
        let mut idle = Idleness::new(3, TIMEOUT, t0);
        assert_eq!(idle.flags(t0), vec![true, true, true]);
        idle.set_assigned(1, true, t0);
        assert_eq!(idle.flags(t0), vec![true, false, true]);
        assert_eq!(
            idle.due_for_end_check(t0 + TIMEOUT),
            vec![1],
            "only assigned ones are asked"
        );
        idle.set_assigned(1, false, t0 + ms(1));
        assert_eq!(idle.flags(t0 + ms(1)), vec![true, true, true]);
    }

    #[test]
    fn quiet_and_at_the_end_of_its_log_is_idle() {
        let t0 = Instant::now();
        let mut idle = assigned(t0);
        idle.record(0, t0);
        let later = t0 + TIMEOUT;
        assert_eq!(idle.due_for_end_check(later), vec![0, 1]);
        idle.end_of_log(0, true, later);
        assert_eq!(idle.flags(later), vec![true, false], "1 not confirmed yet");
        assert_eq!(
            idle.due_for_end_check(later),
            vec![1],
            "0 is not asked again"
        );
    }

    #[test]
    fn at_the_end_but_not_quiet_for_the_timeout_is_not_idle() {
        let t0 = Instant::now();
        let mut idle = assigned(t0);
        let almost = t0 + TIMEOUT - ms(1);
        assert!(
            idle.due_for_end_check(almost).is_empty(),
            "no round trip before the timeout"
        );
        // Even a confirmed end of log does not make it idle early.
        idle.end_of_log(0, true, almost);
        assert_eq!(idle.flags(almost), vec![false, false]);
        assert_eq!(idle.flags(t0 + TIMEOUT), vec![true, false]);
    }

    #[test]
    fn a_quiet_partition_with_a_backlog_is_not_idle() {
        let t0 = Instant::now();
        let mut idle = assigned(t0);
        let later = t0 + TIMEOUT;
        idle.end_of_log(0, false, later);
        assert_eq!(idle.flags(later), vec![false, false]);
        assert_eq!(idle.flags(later + TIMEOUT - ms(1)), vec![false, false]);
        // Its quiet time started again: asked once more a timeout later.
        assert!(!idle.due_for_end_check(later + ms(1)).contains(&0));
        assert!(idle.due_for_end_check(later + TIMEOUT).contains(&0));
        idle.end_of_log(0, true, later + TIMEOUT);
        assert!(idle.flags(later + TIMEOUT)[0]);
    }

    #[test]
    fn a_record_brings_a_partition_back_from_idle_at_once() {
        let t0 = Instant::now();
        let mut idle = assigned(t0);
        let later = t0 + TIMEOUT;
        idle.end_of_log(0, true, later);
        idle.end_of_log(1, true, later);
        assert_eq!(idle.flags(later), vec![true, true], "all idle");
        idle.record(1, later + ms(5));
        assert_eq!(idle.flags(later + ms(5)), vec![true, false]);
        // Back to idle needs both rules again: a full timeout, a new answer.
        assert_eq!(idle.flags(later + ms(5) + TIMEOUT), vec![true, false]);
        assert_eq!(idle.due_for_end_check(later + ms(5) + TIMEOUT), vec![1]);
    }

    #[test]
    fn a_new_assignment_or_start_forgets_the_end_of_log() {
        let t0 = Instant::now();
        let mut idle = assigned(t0);
        let later = t0 + TIMEOUT;
        idle.end_of_log(0, true, later);
        idle.end_of_log(1, true, later);
        idle.reset(0, later);
        idle.set_assigned(1, true, later);
        assert_eq!(idle.flags(later + TIMEOUT), vec![false, false]);
    }

    #[test]
    fn all_idle_the_watermark_follows_the_ingest_clock() {
        let t0 = Instant::now();
        let mut clock = IngestClock::default();
        assert_eq!(clock.watermark(TIMEOUT, t0), None, "no record yet: hold");
        clock.observe(1_000_000, t0);
        assert_eq!(clock.watermark(TIMEOUT, t0), Some(Watermark(990_000)));
        // Runs on with the wall clock.
        assert_eq!(
            clock.watermark(TIMEOUT, t0 + ms(2_500)),
            Some(Watermark(992_500))
        );
        // An older batch (a backlog behind the newest) does not move it.
        clock.observe(500_000, t0 + ms(3_000));
        assert_eq!(
            clock.watermark(TIMEOUT, t0 + ms(3_000)),
            Some(Watermark(993_000))
        );
        // A newer one restarts it from that record's time.
        clock.observe(1_100_000, t0 + ms(4_000));
        assert_eq!(
            clock.watermark(TIMEOUT, t0 + ms(4_000)),
            Some(Watermark(1_090_000))
        );
    }

    #[test]
    fn back_from_idle_a_partition_starts_from_the_service_watermark() {
        // The source raises a partition that was idle to the service
        // watermark before its first record: `max(wm_p, service)`.
        let params = primetime_core::Config::default().partition_params();
        let mut behind = primetime_core::PartitionState::new(params);
        behind.raise_watermark(Watermark(100_000));
        behind.raise_watermark(Watermark(200_000));
        assert_eq!(
            behind.watermark(),
            Watermark(200_000),
            "raised to the service watermark"
        );
        let mut ahead = primetime_core::PartitionState::new(params);
        ahead.raise_watermark(Watermark(300_000));
        ahead.raise_watermark(Watermark(200_000));
        assert_eq!(ahead.watermark(), Watermark(300_000), "never lowered");
    }
}
