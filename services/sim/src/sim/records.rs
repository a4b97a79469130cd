//! From an action to a record: network delay, injected fault, event id,
//! protobuf payload, and the output queue.

use super::*;

impl Simulator {
    /// Turns an action into a record: network delay, fault, payload, queue.
    pub(super) fn emit(&mut self, t: i64, partition: u32, body: Body) {
        let seq = self.event_seq;
        self.event_seq += 1;
        let (label, times) = self.draw_times(t);
        let (topic, mut payload) = self.encode(seq, times.event_ms, body);
        let ingest_ms = times.ingest_ms;
        match label {
            Label::Malformed => corrupt(&mut payload, &mut self.noise_rng),
            Label::Duplicate => {
                let gap = self
                    .noise_rng
                    .range_i64(DUPLICATE_GAP_MS.0, DUPLICATE_GAP_MS.1);
                let copy = payload.clone();
                self.enqueue(ingest_ms, partition, topic, Label::Clean, payload);
                self.enqueue(ingest_ms + gap, partition, topic, Label::Duplicate, copy);
                return;
            }
            _ => {}
        }
        self.enqueue(ingest_ms, partition, topic, label, payload);
    }

    /// The network delay (world stream, first) and the record's fault with
    /// the times it bends (noise stream); the draw order is part of the
    /// seeded output.
    pub(super) fn draw_times(&mut self, t: i64) -> (Label, RecordTimes) {
        let u = self.world_rng.uniform();
        let mut ingest_ms = t + (MIN_DELAY_MS + DELAY_SPAN_MS * u * u) as i64;
        let mut event_ms = t;
        let label = self.faults.draw(&mut self.noise_rng);
        match label {
            Label::OutOfOrder => {
                event_ms -= self
                    .noise_rng
                    .range_i64(OUT_OF_ORDER_MS.0, OUT_OF_ORDER_MS.1);
            }
            Label::Late => {
                ingest_ms = t + self.noise_rng.range_i64(LATE_MS.0, LATE_MS.1);
            }
            Label::BadClock => {
                event_ms = event_ms.saturating_add(bad_clock_offset_ms(&mut self.noise_rng));
            }
            Label::Clean | Label::Duplicate | Label::Malformed => {}
        }
        (
            label,
            RecordTimes {
                event_ms,
                ingest_ms,
            },
        )
    }

    /// The record's topic and protobuf payload. The ids are lent to the
    /// message and taken back after encoding: no allocation per record but
    /// the payload.
    pub(super) fn encode(&mut self, seq: u64, event_ms: i64, body: Body) -> (Topic, Vec<u8>) {
        self.write_event_id(seq);
        let event_id = std::mem::take(&mut self.event_id_buf);
        match body {
            Body::Driver {
                driver,
                x,
                y,
                status,
            } => {
                let (lat, lng) = self.city.to_lat_lng(x, y);
                let mut msg = v1::DriverLocation {
                    event_id,
                    driver_id: std::mem::take(&mut self.driver_ids[driver as usize]),
                    event_time_ms: event_ms,
                    lat,
                    lng,
                    status: status.to_wire(),
                };
                let payload = msg.encode_to_vec();
                self.driver_ids[driver as usize] = std::mem::take(&mut msg.driver_id);
                self.event_id_buf = msg.event_id;
                (Topic::DriverLocations, payload)
            }
            Body::Demand { rider, x, y, kind } => {
                let (lat, lng) = self.city.to_lat_lng(x, y);
                let mut rider_id = std::mem::take(&mut self.rider_id_buf);
                rider_id.clear();
                // Writing to a String cannot fail.
                let _ = write!(rider_id, "rider-{rider}");
                let mut msg = v1::DemandEvent {
                    event_id,
                    rider_id,
                    event_time_ms: event_ms,
                    lat,
                    lng,
                    kind: kind.to_wire(),
                };
                let payload = msg.encode_to_vec();
                self.rider_id_buf = std::mem::take(&mut msg.rider_id);
                self.event_id_buf = msg.event_id;
                (Topic::Demand, payload)
            }
        }
    }

    pub(super) fn enqueue(
        &mut self,
        ingest_ms: i64,
        partition: u32,
        topic: Topic,
        label: Label,
        payload: Vec<u8>,
    ) {
        let seq = self.queue_seq;
        self.queue_seq += 1;
        self.queue.push(Pending {
            ingest_ms,
            seq,
            partition,
            topic,
            label,
            payload,
        });
    }

    /// Writes `{seed:x}-{seq:x}` into `event_id_buf`, without the
    /// formatting machinery.
    pub(super) fn write_event_id(&mut self, seq: u64) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let id = &mut self.event_id_buf;
        id.clear();
        id.push_str(&self.id_prefix);
        let digits = (64 - seq.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            id.push(char::from(HEX[((seq >> (4 * i)) & 0xf) as usize]));
        }
    }
}
