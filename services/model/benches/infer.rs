//! Inference cost per row of the tiny fixture, a 7 → 32 → 32 → 1 MLP the
//! size of the real model, and of every model shipped in `models/` (goal:
//! ≤ 250 ns/row at batch 4096 on one core of the 2-core CI machine).
//!
//! Batches of 1, 64, 600 and 4096 rows (all but the last padded to the one
//! 4096-row plan), each cycled from the model's golden rows; `predict` includes copying rows
//! into the padded input tensor and the output out. After criterion, a
//! plain timing loop prints one `ns/row` line per batch size.
//!
//! Run: `cargo bench -p primetime-model --bench infer`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use primetime_model::{FeatureRow, OnnxModel, PriceModel, load};

const BATCHES: [usize; 4] = [1, 64, 600, 4096];

/// `(label, model, golden rows)`: the tiny fixture, then every model in
/// `models/` (the real one has a log1p prefix of five more ops).
fn models() -> Vec<(String, OnnxModel, Vec<FeatureRow>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("tests/fixtures/tiny.onnx")];
    let mut shipped: Vec<PathBuf> = std::fs::read_dir(root.join("../../models"))
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
                .collect()
        })
        .unwrap_or_default();
    shipped.sort();
    paths.extend(shipped);
    paths
        .into_iter()
        .map(|path| {
            let model = load(&path).unwrap_or_else(|e| panic!("{e}"));
            let text = std::fs::read_to_string(path.with_extension("golden.json")).expect("golden");
            let golden: serde_json::Value = serde_json::from_str(&text).expect("json");
            let rows: Vec<FeatureRow> =
                serde_json::from_value(golden["rows"].clone()).expect("golden rows");
            (model.version().to_owned(), model, rows)
        })
        .collect()
}

fn bench_infer(c: &mut Criterion) {
    let models = models();
    let mut out = Vec::new();
    for (label, model, golden) in &models {
        let mut group = c.benchmark_group(label.as_str());
        group.measurement_time(Duration::from_secs(5));
        for batch in BATCHES {
            let rows: Vec<FeatureRow> = golden.iter().cycle().take(batch).copied().collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new("predict", batch), &rows, |b, rows| {
                b.iter(|| {
                    model.predict(black_box(rows), &mut out).expect("predict");
                    black_box(&out);
                })
            });
        }
        group.finish();
    }

    // One line per model and batch size: median over 15 rounds of ~50 ms.
    for (label, model, golden) in &models {
        for batch in BATCHES {
            let rows: Vec<FeatureRow> = golden.iter().cycle().take(batch).copied().collect();
            // ~50 ms per round, from one timed call (a padded small batch
            // costs about as much as a full one).
            let start = Instant::now();
            model.predict(&rows, &mut out).expect("predict");
            let calls = (0.05 / start.elapsed().as_secs_f64().max(1e-7)).clamp(5.0, 1e6) as usize;
            let mut per_row: Vec<f64> = (0..15)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..calls {
                        model.predict(black_box(&rows), &mut out).expect("predict");
                        black_box(&out);
                    }
                    start.elapsed().as_nanos() as f64 / (calls * batch) as f64
                })
                .collect();
            per_row.sort_by(f64::total_cmp);
            eprintln!(
                "{label} batch {batch:>4}: {:>8.1} ns/row (median; min {:.1}), {:.1} µs/call",
                per_row[7],
                per_row[0],
                per_row[7] * batch as f64 / 1e3
            );
        }
    }
}

criterion_group!(benches, bench_infer);
criterion_main!(benches);
