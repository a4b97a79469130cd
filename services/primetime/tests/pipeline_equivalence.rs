//! The actor pipeline's decisions equal the reference `Engine`'s on the
//! same simulated log (with every kind of noise), for 1, 2 and 7 shards,
//! with the hash placement and with regions moving between shards.

use std::sync::Arc;

use primetime::config::ServiceConfig;
use primetime::pipeline::{
    CollectSink, Input, InputRecord, PipelineOptions, PlacementOptions, Poll,
};
use primetime::replay;
use primetime_core::{Engine, FormulaModel, IngestTime, PriceModel};

use primetime_sim::{Noise, SimConfig, SimRecord, Simulator};

/// A finite in-memory input, delivered in chunks.
struct VecInput {
    records: std::vec::IntoIter<InputRecord>,
    partitions: u32,
    /// Records per poll: big polls let several ingest workers share one.
    per_poll: usize,
}

impl Input for VecInput {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn poll(&mut self, out: &mut Vec<InputRecord>) -> anyhow::Result<Poll> {
        out.extend(self.records.by_ref().take(self.per_poll));
        Ok(if self.records.len() == 0 {
            Poll::End
        } else {
            Poll::More
        })
    }
}

fn simulated(minutes: i64) -> (Vec<SimRecord>, u32) {
    let config = SimConfig {
        drivers: 800,
        demand_per_s: 4.0,
        noise: Noise {
            duplicate: 0.02,
            out_of_order: 0.05,
            late: 0.02,
            bad_clock: 0.01,
            malformed: 0.01,
        },
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(config).expect("valid sim config");
    let mut out = Vec::new();
    let end = sim.now_ms() + minutes * 60_000;
    sim.advance_to(end, &mut out);
    (out, sim.partitions())
}

fn engine_decisions<M: PriceModel>(
    records: &[SimRecord],
    partitions: u32,
    service: &ServiceConfig,
    model: M,
) -> Vec<String> {
    let mut engine = Engine::new(service.core.clone(), partitions, 1, model).expect("config");
    for r in records {
        match primetime_proto::decode(r.topic, &r.payload) {
            Ok(record) => {
                let _ = engine.push(r.partition, r.offset, IngestTime(r.ingest_time_ms), &record);
            }
            Err(_) => engine.push_malformed(r.partition, r.offset),
        }
    }
    engine.finish();
    engine
        .take_decisions()
        .iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect()
}

fn model_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/primetime-v1.onnx")
}

fn check_equal(
    records: &[SimRecord],
    partitions: u32,
    model: &dyn Fn() -> Arc<dyn PriceModel + Send + Sync>,
) {
    check_equal_placed(records, partitions, model, None);
}

fn check_equal_placed(
    records: &[SimRecord],
    partitions: u32,
    model: &dyn Fn() -> Arc<dyn PriceModel + Send + Sync>,
    placement: Option<PlacementOptions>,
) {
    let service = ServiceConfig {
        batch_size: 512,
        mailbox: 4,
        ..ServiceConfig::default()
    };
    let expected = engine_decisions(records, partitions, &service, model());
    assert!(
        expected.len() > 50,
        "the simulation must produce surge decisions, got {}",
        expected.len()
    );
    // (shards, ingest workers): the parallel ingest at 1, 2 and 7 workers.
    for (shards, workers) in [(1, 1), (2, 2), (7, 7), (2, 1), (1, 7)] {
        let config = ServiceConfig {
            shards,
            ingest_workers: workers,
            ..service.clone()
        };
        let input = VecInput {
            records: records
                .iter()
                .cloned()
                .map(SimRecord::into_log_entry)
                .collect::<Vec<InputRecord>>()
                .into_iter(),
            partitions,
            per_poll: if workers > 1 { 20_000 } else { 1_000 },
        };
        let sink = CollectSink::default();
        let options = PipelineOptions {
            ingest_workers: config.ingest_workers,
            placement,
            ..PipelineOptions::sized(config.shards, config.mailbox, config.batch_size)
        };
        let summary = replay::run_with_options(&config, options, input, sink.clone(), model())
            .expect("replay");
        let got: Vec<String> = sink
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|d| serde_json::to_string(d).expect("json"))
            .collect();
        assert_eq!(summary.records, records.len() as u64);
        assert!(summary.rejected.total() > 0, "noise must be rejected");
        if got != expected {
            let first = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            panic!(
                "{shards} shards, {workers} ingest workers, placement {placement:?}: {} decisions vs {} from the engine; first difference at {first}:\n actors: {:?}\n engine: {:?}",
                got.len(),
                expected.len(),
                got.get(first),
                expected.get(first)
            );
        }
    }
}

#[test]
fn actors_equal_the_reference_engine_for_1_2_and_7_shards() {
    let (records, partitions) = simulated(12);
    let labels: std::collections::HashSet<_> =
        records.iter().map(|r| format!("{:?}", r.label)).collect();
    assert!(
        labels.len() >= 5,
        "the log must carry every kind of noise: {labels:?}"
    );
    let fallback = ServiceConfig::default().core.policy.fallback;
    check_equal(&records, partitions, &|| {
        Arc::new(FormulaModel::new(fallback))
    });
}

#[test]
fn actors_equal_the_reference_engine_while_regions_move_every_tick() {
    let (records, partitions) = simulated(12);
    let fallback = ServiceConfig::default().core.policy.fallback;
    let formula = || -> Arc<dyn PriceModel + Send + Sync> { Arc::new(FormulaModel::new(fallback)) };
    // Forced: every other active region moves to the next shard after
    // every tick (with 1 shard nothing can move).
    let forced = PlacementOptions {
        every_ticks: 1,
        force_moves: true,
        ..PlacementOptions::default()
    };
    check_equal_placed(&records, partitions, &formula, Some(forced));
    // The load rule, planning every 2 ticks.
    let by_load = PlacementOptions {
        every_ticks: 2,
        ..PlacementOptions::default()
    };
    check_equal_placed(&records, partitions, &formula, Some(by_load));
    // The load rule without slack (a shard above the mean sheds down to
    // it): regions move at almost every tick, by their measured costs.
    let eager = PlacementOptions {
        every_ticks: 1,
        max_ratio: 1.0,
        ..PlacementOptions::default()
    };
    check_equal_placed(&records, partitions, &formula, Some(eager));
}

#[test]
fn actors_equal_the_reference_engine_with_the_onnx_model() {
    let (records, partitions) = simulated(8);
    let model = primetime_model::load(&model_path()).expect("the committed model loads");
    let model: Arc<dyn PriceModel + Send + Sync> = Arc::new(model);
    check_equal(&records, partitions, &|| Arc::clone(&model));
}

/// Collects snapshots (round-tripped through the stored encoding).
#[derive(Default)]
struct Snapshots(std::sync::Mutex<Vec<primetime::pipeline::PipelineImage>>);

impl primetime::pipeline::SnapshotSink for Snapshots {
    fn write(&self, image: primetime::pipeline::PipelineImage) {
        let bytes = postcard::to_stdvec(&image).expect("encode");
        let image = postcard::from_bytes(&bytes).expect("decode");
        self.0.lock().expect("lock").push(image);
    }
}

#[test]
fn a_pipeline_restored_from_any_snapshot_continues_with_the_same_decisions() {
    restored_snapshots_continue(None);
}

#[test]
fn snapshots_taken_while_regions_move_restore_to_the_same_decisions() {
    // Moves after every tick, snapshots every 3: the cut sees regions off
    // their hash shard; the restored pipeline (hash placement, then its
    // own moves) continues with the same decisions.
    restored_snapshots_continue(Some(PlacementOptions {
        every_ticks: 1,
        force_moves: true,
        ..PlacementOptions::default()
    }));
}

fn restored_snapshots_continue(placement: Option<PlacementOptions>) {
    let (records, partitions) = simulated(12);
    let config = ServiceConfig {
        shards: 3,
        batch_size: 256,
        mailbox: 4,
        ..ServiceConfig::default()
    };
    let fallback = config.core.policy.fallback;
    let model = || -> Arc<dyn PriceModel + Send + Sync> { Arc::new(FormulaModel::new(fallback)) };
    let entries: Vec<InputRecord> = records
        .iter()
        .cloned()
        .map(SimRecord::into_log_entry)
        .collect();
    let options =
        |snapshots: Option<Arc<Snapshots>>, restore| primetime::pipeline::PipelineOptions {
            snapshots: snapshots.map(|s| primetime::pipeline::SnapshotOptions {
                every_ticks: 3,
                sink: s,
            }),
            restore,
            placement,
            ..primetime::pipeline::PipelineOptions::sized(
                config.shards,
                config.mailbox,
                config.batch_size,
            )
        };
    let json = |sink: &CollectSink| -> Vec<(i64, String)> {
        sink.0
            .lock()
            .expect("lock")
            .iter()
            .map(|d| (d.tick.0, serde_json::to_string(d).expect("json")))
            .collect()
    };
    let snapshots = Arc::new(Snapshots::default());
    let whole = CollectSink::default();
    replay::run_with_options(
        &config,
        options(Some(Arc::clone(&snapshots)), None),
        VecInput {
            records: entries.clone().into_iter(),
            partitions,
            per_poll: 1_000,
        },
        whole.clone(),
        model(),
    )
    .expect("replay");
    let whole = json(&whole);
    let images = std::mem::take(&mut *snapshots.0.lock().expect("lock"));
    assert!(images.len() >= 10, "only {} snapshots", images.len());
    for image in [
        &images[1],
        &images[images.len() / 2],
        &images[images.len() - 2],
    ] {
        let from: std::collections::HashMap<u32, i64> = image
            .partitions
            .iter()
            .map(|p| (p.partition, p.next_offset))
            .collect();
        let rest: Vec<InputRecord> = entries
            .iter()
            .filter(|r| from.get(&r.partition).is_none_or(|&o| r.offset >= o))
            .cloned()
            .collect();
        assert!(rest.len() < entries.len(), "the cut is after some records");
        let restored = CollectSink::default();
        replay::run_with_options(
            &config,
            options(None, Some(Arc::new(image.clone()))),
            VecInput {
                records: rest.into_iter(),
                partitions,
                per_poll: 1_000,
            },
            restored.clone(),
            model(),
        )
        .expect("restored replay");
        let expected: Vec<_> = whole
            .iter()
            .filter(|(t, _)| *t > image.tick.0)
            .cloned()
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            json(&restored),
            expected,
            "restored after tick {}",
            image.tick.0
        );
    }
}
