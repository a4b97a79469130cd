//! Loading and inference against the fixtures of `tests/fixtures/`
//! (regenerate with `make_fixtures.py` there).

use std::path::{Path, PathBuf};

use primetime_model::{FeatureRow, LoadError, MAX_BATCH, OnnxModel, PriceModel, load};
use serde::Deserialize;

/// onnxruntime vs tract on outputs in [1, 3].
const TOLERANCE: f32 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tiny() -> OnnxModel {
    load(&fixture("tiny.onnx")).unwrap_or_else(|e| panic!("tiny.onnx loads: {e}"))
}

#[derive(Deserialize)]
struct Golden {
    rows: Vec<FeatureRow>,
    outputs: Vec<f32>,
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(fixture("tiny.golden.json")).expect("golden file");
    let g: Golden = serde_json::from_str(&text).expect("golden json");
    assert_eq!(g.rows.len(), g.outputs.len());
    assert!(g.rows.len() >= 200);
    g
}

fn predict(model: &impl PriceModel, rows: &[FeatureRow]) -> Vec<f32> {
    let mut out = vec![f32::NAN; 3]; // predict clears what was there
    model.predict(rows, &mut out).expect("predict");
    assert_eq!(out.len(), rows.len());
    out
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOLERANCE,
            "{what}: row {i}: tract {g}, onnxruntime {w}"
        );
    }
}

#[test]
fn loads_the_card() {
    let model = tiny();
    assert_eq!(model.version(), "tiny-v1");
    assert_eq!(model.card().cap, 3.0);
    assert_eq!(model.card().feature_order, primetime_model::FEATURE_NAMES);
    assert_eq!(model.path(), fixture("tiny.onnx"));
}

#[test]
fn golden_outputs_one_row_at_a_time() {
    let (model, g) = (tiny(), golden());
    let got: Vec<f32> = g
        .rows
        .iter()
        .flat_map(|r| predict(&model, std::slice::from_ref(r)))
        .collect();
    assert_close(&got, &g.outputs, "batch 1");
}

#[test]
fn golden_outputs_in_batches_of_64() {
    let (model, g) = (tiny(), golden());
    let got: Vec<f32> = g.rows.chunks(64).flat_map(|c| predict(&model, c)).collect();
    assert_close(&got, &g.outputs, "batch 64");
}

#[test]
fn golden_outputs_in_one_batch() {
    let (model, g) = (tiny(), golden());
    assert_close(&predict(&model, &g.rows), &g.outputs, "whole golden set");
}

/// 5,000 rows: one full run of `MAX_BATCH`, then 904 rows in a padded
/// run.
#[test]
fn golden_outputs_across_chunks_and_padding() {
    let (model, g) = (tiny(), golden());
    let n = 5000;
    assert!(n > MAX_BATCH);
    let rows: Vec<FeatureRow> = g.rows.iter().cycle().take(n).copied().collect();
    let want: Vec<f32> = g.outputs.iter().cycle().take(n).copied().collect();
    assert_close(&predict(&model, &rows), &want, "5000 rows");
}

/// The engine's contract: a row's output depends on that row only, so
/// shards that batch rows differently publish the same prices. Holds
/// bit for bit across every batch length, plan and padding.
#[test]
fn output_of_a_row_does_not_depend_on_its_batch() {
    let (model, g) = (tiny(), golden());
    let alone: Vec<f32> = g
        .rows
        .iter()
        .flat_map(|r| predict(&model, std::slice::from_ref(r)))
        .collect();
    for len in [
        2, 7, 8, 9, 63, 65, 100, 300, 513, 600, 2100, 4000, 4095, 4097,
    ] {
        let rows: Vec<FeatureRow> = g.rows.iter().cycle().take(len).copied().collect();
        let got = predict(&model, &rows);
        for (i, v) in got.iter().enumerate() {
            let want = alone[i % alone.len()];
            assert_eq!(
                v.to_bits(),
                want.to_bits(),
                "batch of {len}, row {i}: {v} vs alone {want}"
            );
        }
    }
}

#[test]
fn empty_batch_gives_no_outputs() {
    assert!(predict(&tiny(), &[]).is_empty());
}

#[test]
fn non_finite_outputs_pass_through() {
    let model = load(&fixture("nan.onnx"))
        .expect("nan.onnx loads: non-finite outputs are the policy's job");
    let row = |prev: f32| [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, prev];
    let out = predict(&model, &[row(1.0), row(2.0), row(3.0), row(1.5)]);
    assert!(out[0].is_nan(), "{out:?}");
    assert_eq!(out[1], f32::NEG_INFINITY, "{out:?}");
    assert_eq!(out[2], 0.0, "{out:?}");
    assert!(out[3].is_nan(), "{out:?}");
}

#[test]
fn model_is_shared_across_threads() {
    let (model, g) = (tiny(), golden());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert_close(&predict(&model, &g.rows), &g.outputs, "thread"));
        }
    });
}

// ---- load errors

fn load_err(name: &str) -> LoadError {
    match load(&fixture(name)) {
        Ok(m) => panic!("{name} loaded as {m:?}"),
        Err(e) => e,
    }
}

#[test]
fn missing_file() {
    let err = load_err("does-not-exist.onnx");
    assert!(matches!(err, LoadError::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist.onnx"), "{err}");
}

#[test]
fn missing_card() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orphan.onnx");
    std::fs::copy(fixture("tiny.onnx"), &path).expect("copy");
    let err = load(&path).expect_err("no card");
    assert!(matches!(err, LoadError::MissingCard { .. }), "{err:?}");
    assert!(err.to_string().contains("orphan.card.json"), "{err}");
}

#[test]
fn invalid_card() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.onnx");
    std::fs::copy(fixture("tiny.onnx"), &path).expect("copy");
    let card = std::fs::read_to_string(fixture("tiny.card.json")).expect("card");
    let mut json: serde_json::Value = serde_json::from_str(&card).expect("json");
    json.as_object_mut().map(|o| o.remove("sha256"));
    std::fs::write(dir.path().join("m.card.json"), json.to_string()).expect("write");
    let err = load(&path).expect_err("card without sha256");
    assert!(matches!(err, LoadError::InvalidCard { .. }), "{err:?}");
    assert!(err.to_string().contains("sha256"), "{err}");

    std::fs::write(dir.path().join("m.card.json"), "{not json").expect("write");
    let err = load(&path).expect_err("not json");
    assert!(matches!(err, LoadError::InvalidCard { .. }), "{err:?}");
}

#[test]
fn corrupt_onnx() {
    let err = load_err("corrupt.onnx");
    assert!(matches!(err, LoadError::Corrupt { .. }), "{err:?}");
}

#[test]
fn wrong_input_shape() {
    let err = load_err("wrong_shape.onnx");
    assert!(matches!(err, LoadError::WrongShape { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the input is declared as float32[N, 5]"),
        "{err}"
    );
}

#[test]
fn wrong_output_shape() {
    let err = load_err("wrong_output.onnx");
    assert!(matches!(err, LoadError::WrongShape { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("the output is float32[{MAX_BATCH}, 2]")),
        "{err}"
    );
}

#[test]
fn sha256_mismatch() {
    let err = load_err("badsha.onnx");
    let LoadError::ShaMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny.card.json")).expect("card"))
            .expect("json");
    assert_eq!(
        Some(actual.as_str()),
        card["sha256"].as_str(),
        "actual is the file's hash"
    );
    assert_ne!(expected, actual);
}

#[test]
fn shuffled_feature_order() {
    let err = load_err("badorder.onnx");
    let LoadError::FeatureOrder { card, expected, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(expected, &primetime_model::FEATURE_NAMES);
    assert_eq!(card[1], "requests_5m");
    let msg = err.to_string();
    assert!(
        msg.contains("\"requests_5m\", \"requests_1m\"")
            && msg.contains("\"requests_1m\", \"requests_5m\""),
        "{msg}"
    );
}

#[test]
fn errors_read_well() {
    for name in [
        "does-not-exist.onnx",
        "corrupt.onnx",
        "wrong_shape.onnx",
        "wrong_output.onnx",
        "badsha.onnx",
        "badorder.onnx",
    ] {
        let msg = load_err(name).to_string();
        assert!(
            msg.contains(name.trim_end_matches(".onnx")),
            "{name}: {msg}"
        );
        eprintln!("{name}: {msg}");
    }
}

// ---- shipped models

/// Every model shipped in `models/` loads and reproduces its golden pairs
/// (written by `models/train/train.py` with onnxruntime).
#[test]
fn shipped_models_match_their_golden_outputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("models/ directory") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let model = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let golden_path = path.with_extension("golden.json");
        let text = std::fs::read_to_string(&golden_path)
            .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
        let g: Golden = serde_json::from_str(&text).expect("golden json");
        let what = path.display().to_string();
        assert_close(&predict(&model, &g.rows), &g.outputs, &what);
        let alone: Vec<f32> = g
            .rows
            .iter()
            .flat_map(|r| predict(&model, std::slice::from_ref(r)))
            .collect();
        assert_close(&alone, &g.outputs, &what);
        checked += 1;
    }
    assert!(checked > 0, "no model in {}", dir.display());
}

#[test]
fn embedded_model_is_the_committed_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/primetime-v1.onnx");
    let file = load(&root).expect("the committed model loads");
    let embedded = primetime_model::embedded().expect("the embedded model loads");
    assert_eq!(embedded.version(), file.version());
    let text = std::fs::read_to_string(root.with_file_name("primetime-v1.golden.json"))
        .expect("the committed golden file");
    let g: Golden = serde_json::from_str(&text).expect("golden json");
    let (a, b) = (predict(&embedded, &g.rows), predict(&file, &g.rows));
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "embedded and file models give bit-identical outputs"
    );
}
