//! Operator controls in the actor pipeline (issue 18): with the same
//! control log, the pipeline's decisions equal the reference `Engine`'s
//! byte for byte at 1 and 7 shards — the controls apply at the same ticks,
//! including a control stamped after its window opened and its revocation.

use std::sync::Arc;

use primetime::config::ServiceConfig;
use primetime::controls::ControlLog;
use primetime::pipeline::{CollectSink, Input, InputRecord, PipelineOptions, Poll};
use primetime::replay;
use primetime_core::controls::AreaSpec;
use primetime_core::{
    ControlId, ControlKind, ControlLimits, ControlRecord, ControlSpec, Engine, FormulaModel,
    IngestTime, PriceModel, Tick,
};
use primetime_sim::{SimConfig, SimRecord, Simulator};

struct VecInput {
    records: std::vec::IntoIter<InputRecord>,
    partitions: u32,
}

impl Input for VecInput {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn poll(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll> {
        out.extend(self.records.by_ref().take(1_000));
        Ok(if self.records.len() == 0 {
            Poll::End
        } else {
            Poll::More
        })
    }
}

fn simulated(minutes: i64) -> (Vec<SimRecord>, u32, i64) {
    let config = SimConfig {
        drivers: 800,
        demand_per_s: 4.0,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(config).expect("valid sim config");
    let start = sim.now_ms();
    let mut out = Vec::new();
    sim.advance_to(start + minutes * 60_000, &mut out);
    (out, sim.partitions(), start)
}

fn engine_decisions(records: &[SimRecord], partitions: u32, log: &[ControlRecord]) -> Vec<String> {
    let core = ServiceConfig::default().core;
    let model = FormulaModel::new(core.policy.fallback);
    let mut engine = Engine::new(core, partitions, 1, model).expect("config");
    for r in log {
        engine.apply_control(r.clone()).expect("log applies");
    }
    for r in records {
        match primetime_proto::decode(r.topic, &r.payload) {
            Ok(record) => {
                let _ = engine.push(r.partition, r.offset, IngestTime(r.ingest_time_ms), &record);
            }
            Err(_) => engine.push_malformed(r.partition, r.offset),
        }
    }
    engine.finish();
    let decisions = engine.take_decisions();
    decisions
        .iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect()
}

fn pipeline_decisions(
    records: &[SimRecord],
    partitions: u32,
    shards: usize,
    log: &[ControlRecord],
) -> Vec<String> {
    let config = ServiceConfig {
        shards,
        batch_size: 512,
        mailbox: 4,
        ..ServiceConfig::default()
    };
    let controls =
        ControlLog::from_records(config.core.bucket_ms, log.iter().cloned()).expect("log applies");
    let options = PipelineOptions {
        controls: Some(Arc::new(controls)),
        ..PipelineOptions::sized(shards, config.mailbox, config.batch_size)
    };
    let input = VecInput {
        records: records
            .iter()
            .cloned()
            .map(SimRecord::into_log_entry)
            .collect::<Vec<_>>()
            .into_iter(),
        partitions,
    };
    let sink = CollectSink::default();
    let model: Arc<dyn PriceModel + Send + Sync> =
        Arc::new(FormulaModel::new(config.core.policy.fallback));
    replay::run_with_options(&config, options, input, sink.clone(), model).expect("replay");
    let got = sink.0.lock().expect("sink").clone();
    got.iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect()
}

#[test]
fn pipeline_applies_the_log_at_the_engines_ticks_at_any_shard_count() {
    let (records, partitions, start) = simulated(8);
    let baseline = engine_decisions(&records, partitions, &[]);
    let first: serde_json::Value = serde_json::from_str(&baseline[0]).expect("json");
    let k0 = first["tick"].as_i64().expect("tick");
    // A cap of 1.1 over the whole city, issued (stamped) 10 ticks after
    // pricing started — its window opened earlier — and revoked 20 ticks
    // later.
    let spec = ControlSpec {
        area: AreaSpec {
            cells: None,
            bbox: Some(vec![-180.0, -90.0, 180.0, 90.0]),
        },
        kind: ControlKind::Cap,
        multiplier: Some(1.1),
        from: start,
        to: start + 3_600_000,
        reason: "emergency".to_owned(),
        author: "ops".to_owned(),
    };
    let control = spec.validate(&ControlLimits::new(8, start)).expect("valid");
    let log = vec![
        ControlRecord::Issued {
            id: ControlId(1),
            control,
            tick: Tick(k0 + 10),
            recorded_at: start,
        },
        ControlRecord::Revoked {
            id: ControlId(1),
            tick: Tick(k0 + 30),
            recorded_at: start,
            author: "ops".to_owned(),
            reason: "over".to_owned(),
        },
    ];
    let expected = engine_decisions(&records, partitions, &log);
    assert_ne!(expected, baseline, "the cap changes decisions");
    let named = expected
        .iter()
        .filter(|d| d.contains(r#""controls":[1]"#))
        .count();
    assert!(named > 0, "decisions changed by the cap name it");
    for shards in [1, 7] {
        let got = pipeline_decisions(&records, partitions, shards, &log);
        assert!(got == expected, "{shards} shards differ from the engine");
    }
}
