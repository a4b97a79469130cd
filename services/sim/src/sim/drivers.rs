//! Drivers' pings: a position along a trip, an available driver's
//! random walk, going offline and back.

use super::*;

impl Simulator {
    pub(super) fn ping(&mut self, i: u32, t: i64) {
        if self.market.is_some() {
            self.ping_market(i, t);
            return;
        }
        let d = self.drivers[i as usize];
        let status = match d.state {
            DriverState::Offline { until_ms } => {
                if t < until_ms {
                    return;
                }
                self.set_available(i, d.x, d.y, d.slot, t);
                DriverStatus::Available
            }
            DriverState::OnTrip { to, end_ms, .. } if t >= end_ms => {
                self.set_available(i, to.x, to.y, to.slot, t);
                DriverStatus::Available
            }
            DriverState::OnTrip {
                from,
                to,
                start_ms,
                end_ms,
            } => {
                self.ping_mid_trip(i, t, from, to, start_ms, end_ms);
                return;
            }
            // Only the closed loop sends drivers en route.
            DriverState::EnRoute { .. } => return,
            DriverState::Available => self.ping_available(i, t),
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

    /// A driver on a trip pings from its straight-line position between
    /// `from` and `to` at `t` within `(start_ms, end_ms)`; off the city's
    /// cells, the partition of the H3 cell under it (or 0) carries the ping.
    pub(super) fn ping_mid_trip(
        &mut self,
        i: u32,
        t: i64,
        from: (f64, f64),
        to: Spot,
        start_ms: i64,
        end_ms: i64,
    ) {
        let f = (t - start_ms) as f64 / (end_ms - start_ms) as f64;
        self.move_along(i, from, (to.x, to.y), f, t);
    }

    /// An available driver logs off for a while (status offline) or
    /// wanders on (status available).
    pub(super) fn ping_available(&mut self, i: u32, t: i64) -> DriverStatus {
        if self.world_rng.chance(self.p_offline) {
            let pause = self.world_rng.range_i64(OFFLINE_MIN_MS, OFFLINE_MAX_MS);
            self.remove_available(i, self.drivers[i as usize].slot);
            let dm = &mut self.drivers[i as usize];
            dm.state = DriverState::Offline {
                until_ms: t + pause,
            };
            dm.last_ms = t;
            DriverStatus::Offline
        } else {
            self.wander(i, t);
            DriverStatus::Available
        }
    }

    pub(super) fn set_available(&mut self, i: u32, x: f64, y: f64, slot: u32, t: i64) {
        let d = &mut self.drivers[i as usize];
        d.x = x;
        d.y = y;
        d.slot = slot;
        d.last_ms = t;
        d.state = DriverState::Available;
        self.add_available(i, slot);
    }

    /// Random walk of an available driver since its last ping; a step that
    /// would leave the city turns towards the centre instead, or stays.
    pub(super) fn wander(&mut self, i: u32, t: i64) {
        let d = &self.drivers[i as usize];
        let dist = d.speed * (t - d.last_ms) as f64;
        let mut heading = d.heading + HEADING_JITTER * self.world_rng.normal();
        let (x0, y0, old_slot) = (d.x, d.y, d.slot);
        let (sin, cos) = heading.sin_cos();
        let mut spot = self.city.locate(x0 + dist * cos, y0 + dist * sin, old_slot);
        if spot.is_none() {
            heading = (-y0).atan2(-x0) + HEADING_JITTER * self.world_rng.normal();
            let (sin, cos) = heading.sin_cos();
            spot = self.city.locate(x0 + dist * cos, y0 + dist * sin, old_slot);
        }
        let spot = spot.unwrap_or(Spot {
            x: x0,
            y: y0,
            slot: old_slot,
        });
        if spot.slot != old_slot {
            self.remove_available(i, old_slot);
            self.add_available(i, spot.slot);
        }
        let d = &mut self.drivers[i as usize];
        d.x = spot.x;
        d.y = spot.y;
        d.slot = spot.slot;
        d.heading = heading;
        d.last_ms = t;
    }
}
