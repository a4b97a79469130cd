//! Config validation through the public constructor.

use primetime_sim::{Noise, SimConfig, SimError, Simulator, StadiumEvent};

fn problems(config: SimConfig) -> Vec<String> {
    match Simulator::new(config) {
        Err(SimError::Config(p)) => p,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => Vec::new(),
    }
}

#[test]
fn every_invalid_field_is_reported() {
    let p = problems(SimConfig {
        center_lat: 91.0,
        drivers: 2_000_000,
        demand_per_s: -1.0,
        partitions: 0,
        noise: Noise {
            bad_clock: f64::NAN,
            malformed: -0.1,
            ..Noise::default()
        },
        ..SimConfig::default()
    });
    let fields: Vec<&str> = p.iter().filter_map(|l| l.split(':').next()).collect();
    assert_eq!(
        fields,
        [
            "center_lat",
            "drivers",
            "demand_per_s",
            "partitions",
            "noise.bad_clock",
            "noise.malformed"
        ]
    );
    let err = Simulator::new(SimConfig {
        partitions: 0,
        ..SimConfig::default()
    })
    .expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "invalid simulator configuration:\n  partitions: must be in [1, 4096], got 0"
    );
}

#[test]
fn stadium_must_be_in_the_city() {
    let p = problems(SimConfig {
        stadium: Some(StadiumEvent {
            lat: 40.7128,
            lng: -74.006,
            ..StadiumEvent::default()
        }),
        ..SimConfig::default()
    });
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("stadium: (40.7128, -74.006) is outside the city"),
        "{p:?}"
    );
}

#[test]
fn other_cities_and_sizes_work() {
    for (lat, lng, radius) in [
        (51.5074, -0.1278, 20.0),
        (-33.8688, 151.2093, 0.5),
        (64.1466, -21.9426, 5.0),
    ] {
        let config = SimConfig {
            center_lat: lat,
            center_lng: lng,
            radius_km: radius,
            drivers: 100,
            partitions: 2,
            stadium: None,
            ..SimConfig::default()
        };
        let mut sim = Simulator::new(config).expect("valid config");
        assert!(!sim.regions().is_empty());
        let mut out = Vec::new();
        sim.advance_to(sim.now_ms() + 30_000, &mut out);
        assert!(out.len() > 500, "{lat},{lng}: {}", out.len());
        for r in &out {
            let raw = primetime_proto::decode(r.topic, &r.payload).expect("decodes");
            let (la, ln) = raw.lat_lng();
            assert!((la - lat).abs() < 0.5 && (ln - lng).abs() < 0.5);
        }
    }
}

#[test]
fn zero_drivers_and_zero_demand_are_allowed() {
    let mut sim = Simulator::new(SimConfig {
        drivers: 0,
        demand_per_s: 0.0,
        stadium: None,
        ..SimConfig::default()
    })
    .expect("valid config");
    let mut out = Vec::new();
    sim.advance_to(sim.now_ms() + 60_000, &mut out);
    assert!(out.is_empty());
}
