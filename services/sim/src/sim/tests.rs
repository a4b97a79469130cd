use super::*;

fn small() -> SimConfig {
    SimConfig {
        drivers: 200,
        demand_per_s: 2.0,
        ..SimConfig::default()
    }
}

#[test]
fn event_ids_are_seed_and_sequence_in_hex() {
    let mut sim = Simulator::new(small()).expect("valid");
    for seq in [0, 0xab, 0x1000, u64::MAX] {
        sim.write_event_id(seq);
        assert_eq!(sim.event_id_buf, format!("7-{seq:x}"));
    }
}

#[test]
fn available_index_matches_driver_states() {
    let mut sim = Simulator::new(small()).expect("valid");
    let mut out = Vec::new();
    sim.advance_to(sim.config().start_ms + 20 * 60_000, &mut out);
    let mut indexed = 0;
    for (slot, list) in sim.available.iter().enumerate() {
        for &d in list {
            let driver = &sim.drivers[d as usize];
            assert!(matches!(driver.state, DriverState::Available));
            assert_eq!(driver.slot as usize, slot);
            indexed += 1;
        }
    }
    let available = sim
        .drivers
        .iter()
        .filter(|d| matches!(d.state, DriverState::Available))
        .count();
    assert_eq!(indexed, available);
    // Some drivers got trips and some went offline in 20 minutes.
    assert!(
        sim.drivers
            .iter()
            .any(|d| matches!(d.state, DriverState::OnTrip { .. }))
    );
    assert!(available < sim.drivers.len());
}

#[test]
fn offsets_are_dense_per_partition() {
    let mut sim = Simulator::new(small()).expect("valid");
    let mut out = Vec::new();
    sim.advance_to(sim.config().start_ms + 60_000, &mut out);
    let mut next = vec![0i64; sim.partitions() as usize];
    for r in &out {
        assert_eq!(r.offset, next[r.partition as usize]);
        next[r.partition as usize] += 1;
    }
    assert!(next.iter().all(|n| *n > 0), "{next:?}");
    assert!(
        out.windows(2)
            .all(|w| w[0].ingest_time_ms <= w[1].ingest_time_ms)
    );
}
