//! `write_log` writes exactly what the simulator emits.

use primetime_proto::{LogEntry, LogReader};
use primetime_sim::{Noise, SimConfig, SimError, Simulator, write_log};

#[test]
fn write_log_round_trips_through_log_reader() {
    let config = SimConfig {
        drivers: 300,
        noise: Noise {
            malformed: 0.02,
            duplicate: 0.02,
            late: 0.02,
            ..Noise::default()
        },
        ..SimConfig::default()
    };
    let mut bytes = Vec::new();
    let written = write_log(config.clone(), 2, &mut bytes).expect("writes");

    let mut sim = Simulator::new(config).expect("valid config");
    let mut expected = Vec::new();
    sim.advance_to(sim.now_ms() + 2 * 60_000, &mut expected);
    let expected: Vec<LogEntry> = expected.into_iter().map(|r| r.into_log_entry()).collect();

    let read: Vec<LogEntry> = LogReader::new(bytes.as_slice())
        .collect::<Result<_, _>>()
        .expect("a valid log");
    assert_eq!(written, read.len() as u64);
    assert!(written > 10_000, "{written}");
    assert!(read == expected, "log differs from the simulator's output");
}

#[test]
fn write_log_reports_invalid_config_and_io_errors() {
    let bad = SimConfig {
        partitions: 0,
        ..SimConfig::default()
    };
    assert!(matches!(
        write_log(bad, 1, Vec::new()),
        Err(SimError::Config(p)) if p.len() == 1
    ));

    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let config = SimConfig {
        drivers: 50,
        ..SimConfig::default()
    };
    let err = write_log(config, 1, Broken).expect_err("io error");
    assert!(matches!(err, SimError::Io(_)));
    assert!(err.to_string().contains("disk full"), "{err}");
}
