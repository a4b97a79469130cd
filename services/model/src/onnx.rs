//! Loading an ONNX model with tract and running it in fixed-shape batches.
//!
//! tract plans built for a fixed input shape run about twice as fast as one
//! built for a symbolic batch dimension, so [`load`] builds one optimised
//! plan for [`MAX_BATCH`] rows. [`OnnxModel::predict`] splits a batch into
//! runs of that size, padding the last with zero rows whose outputs are
//! discarded.
//!
//! One plan size, not several: tract picks its kernels by shape and CPU
//! (on AVX-512 hosts a 64-row plan and a 1-row plan round differently in
//! the last bit), and the engine's contract is that a row's price does not
//! depend on its batch — on how many cells a shard happens to hold. With
//! one shape every row goes through the same kernels whatever the batch
//! (tested in `tests/load.rs`); a small tick pays a padded run (~0.4 ms).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use crate::LoadError;
use crate::card::{ModelCard, card_path};
use primetime_core::{FEATURE_COUNT, FeatureRow, ModelError, PriceModel};

/// Rows of the one plan: bigger batches run in several runs of this
/// many rows, smaller ones padded.
pub const MAX_BATCH: usize = 4096;

/// One optimised plan for a fixed `[batch, 7]` input.
struct Plan {
    batch: usize,
    runnable: Arc<TypedRunnableModel>,
}

/// An ONNX model that passed every load check, ready to predict.
///
/// Immutable after [`load`]: `predict` takes `&self`, and the model is
/// `Send + Sync`, so one instance can serve several threads.
pub struct OnnxModel {
    card: ModelCard,
    path: PathBuf,
    /// The plan for [`MAX_BATCH`] rows.
    plan: Plan,
}

/// Loads the model at `path` and its card `<stem>.card.json`.
///
/// Checks, in order: the model file is readable; the card is present and
/// has `version`, `feature_order`, `sha256` and `cap`; the file's sha256
/// equals the card's; the feature order equals
/// [`primetime_core::FEATURE_NAMES`]; the bytes parse as ONNX; the model has
/// one float32 `[N, 7]` input and one `[N, 1]` output; tract builds a plan
/// for every batch size.
pub fn load(path: &Path) -> Result<OnnxModel, LoadError> {
    // Read once: the bytes hashed are the bytes parsed.
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::MissingFile {
            path: path.to_owned(),
        },
        _ => LoadError::Io {
            path: path.to_owned(),
            source: e,
        },
    })?;
    let card_file = card_path(path);
    let card = ModelCard::read(&card_file)?;
    load_parts(&bytes, card, path)
}

/// The model the binary carries: `models/primetime-v1.onnx` and its card,
/// embedded at build time, so `serve` and `replay` price with it from any
/// directory. Same checks as [`load`]; errors name the path `embedded:…`.
pub fn embedded() -> Result<OnnxModel, LoadError> {
    let path = Path::new(EMBEDDED_NAME);
    let card = ModelCard::parse(EMBEDDED_CARD).map_err(|message| LoadError::InvalidCard {
        path: card_path(path),
        message,
    })?;
    load_parts(EMBEDDED_ONNX, card, path)
}

/// How the embedded model is named in logs and errors.
pub const EMBEDDED_NAME: &str = "embedded:models/primetime-v1.onnx";
const EMBEDDED_ONNX: &[u8] = include_bytes!("../../../models/primetime-v1.onnx");
const EMBEDDED_CARD: &str = include_str!("../../../models/primetime-v1.card.json");

/// Checks a model's bytes against its card and builds its plan; `path`
/// only names the model in errors.
fn load_parts(bytes: &[u8], card: ModelCard, path: &Path) -> Result<OnnxModel, LoadError> {
    let card_file = card_path(path);
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != card.sha256 {
        return Err(LoadError::ShaMismatch {
            path: path.to_owned(),
            expected: card.sha256,
            actual,
        });
    }
    card.check_feature_order(&card_file)?;

    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| LoadError::Corrupt {
            path: path.to_owned(),
            message: format!("{e:#}"),
        })?;
    check_interface(&model).map_err(|message| LoadError::WrongShape {
        path: path.to_owned(),
        message,
    })?;

    let plan = build_plan(model, MAX_BATCH, path)?;
    Ok(OnnxModel {
        card,
        path: path.to_owned(),
        plan,
    })
}

/// Checks the interface the ONNX file declares, before tract is told the
/// input shape (which would otherwise mask a declared `[N, 5]`).
fn check_interface(model: &InferenceModel) -> Result<(), String> {
    let n_in = model.input_outlets().map_err(|e| format!("{e:#}"))?.len();
    let n_out = model.output_outlets().map_err(|e| format!("{e:#}"))?.len();
    if n_in != 1 || n_out != 1 {
        return Err(format!("it has {n_in} inputs and {n_out} outputs"));
    }
    let input = model.input_fact(0).map_err(|e| format!("{e:#}"))?;
    check_declared("input", input, FEATURE_COUNT, true)?;
    let output = model.output_fact(0).map_err(|e| format!("{e:#}"))?;
    check_declared("output", output, 1, false)
}

/// A declared fact may leave type and shape unknown; what it does declare
/// must match float32 `[N, columns]`. Output types are left to the typed
/// check, as ONNX files may omit or loosen them.
fn check_declared(
    what: &str,
    fact: &InferenceFact,
    columns: usize,
    check_type: bool,
) -> Result<(), String> {
    // No let-chains: the workspace's rust-version is 1.85.
    let wrong_type = check_type
        && fact
            .datum_type
            .concretize()
            .is_some_and(|dt| dt != DatumType::F32);
    let wrong_rank = fact.shape.rank().concretize().is_some_and(|rank| rank != 2);
    let wrong_width = fact
        .shape
        .dim(1)
        .and_then(|d| d.concretize())
        .and_then(|d| d.to_usize().ok())
        .is_some_and(|n| n != columns);
    if wrong_type || wrong_rank || wrong_width {
        return Err(format!("the {what} is declared as {}", describe(fact)));
    }
    Ok(())
}

/// `float32[N, 5]`, with `?` for what the file leaves open.
fn describe(fact: &InferenceFact) -> String {
    let dt = fact
        .datum_type
        .concretize()
        .map_or_else(|| "?".to_owned(), |dt| format!("{dt:?}").to_lowercase());
    let mut dims: Vec<String> = fact
        .shape
        .dims()
        .map(|d| {
            d.concretize()
                .map_or_else(|| "?".to_owned(), |d| d.to_string())
        })
        .collect();
    if fact.shape.is_open() {
        dims.push("..".to_owned());
    }
    let dt = dt.replace("f32", "float32");
    format!("{dt}[{}]", dims.join(", "))
}

/// Fixes the input to float32 `[batch, 7]`, types and optimises the model,
/// and checks that the output is float32 `[batch, 1]`.
fn build_plan(model: InferenceModel, batch: usize, path: &Path) -> Result<Plan, LoadError> {
    build_plan_with(model, batch, path, true)
}

/// Replaces, in every binary op (`Sub`, `Mul`, …) between a `[batch, 7]`
/// tensor and a `[1, 7]` constant (the graph's per-column preprocessing:
/// log1p masks, standardisation), the constant by its `[batch, 7]` tiling.
///
/// tract runs `[N, 7] op [1, 7]` through a generic broadcasting loop (its
/// fast kernels need the broadcast part to be a multiple of the SIMD width
/// or a scalar), but same-shape operands through its vectorised "unicast"
/// kernels: about half the cost of the whole model at 4,096 rows. Each
/// output element is the same IEEE operation on the same two values either
/// way, so results are bit for bit unchanged (tested below on a plan
/// without the rewrite). The tiled constants cost `batch * 28` bytes each.
fn tile_row_constants(model: &mut TypedModel, batch: usize) -> TractResult<()> {
    if batch == 1 {
        return Ok(());
    }
    let row = [1, FEATURE_COUNT];
    let full = [batch, FEATURE_COUNT];
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op_as::<TypedBinOp>().is_none() || node.inputs.len() != 2 {
            continue;
        }
        let facts = model.node_input_facts(id)?;
        let mut found = None;
        for c in 0..2 {
            let (konst, other) = (facts[c], facts[1 - c]);
            let Some(k) = &konst.konst else { continue };
            if konst.shape.as_concrete() == Some(&row[..])
                && other.shape.as_concrete() == Some(&full[..])
            {
                found = Some((c, k.broadcast_to_shape(&full)?));
                break;
            }
        }
        drop(facts);
        let Some((c, tiled)) = found else { continue };
        let (name, op, node_inputs) = (node.name.clone(), node.op.clone(), node.inputs.clone());
        let mut patch = TypedModelPatch::default();
        let mut inputs = patch.taps(model, &node_inputs)?;
        inputs[c] = patch.add_const(format!("{name}.tiled"), tiled)?;
        let out = patch.wire_node(&name, op, &inputs)?;
        patch.shunt_outside(model, id.into(), out[0])?;
        patch.obliterate(id)?;
        patch.apply(model)?;
    }
    Ok(())
}

fn build_plan_with(
    mut model: InferenceModel,
    batch: usize,
    path: &Path,
    tile: bool,
) -> Result<Plan, LoadError> {
    let plan_err = |e: TractError| LoadError::Plan {
        path: path.to_owned(),
        batch,
        message: format!("{e:#}"),
    };
    model
        .set_input_fact(
            0,
            InferenceFact::dt_shape(f32::datum_type(), [batch, FEATURE_COUNT]),
        )
        .map_err(plan_err)?;
    // The declared output `[N, 1]` names a symbol the fixed input no longer
    // has; let analysis derive the output instead.
    model
        .set_output_fact(0, InferenceFact::default())
        .map_err(plan_err)?;
    let mut typed = model.into_typed().map_err(plan_err)?;
    if tile {
        tile_row_constants(&mut typed, batch).map_err(plan_err)?;
    }
    let out = typed.output_fact(0).map_err(plan_err)?;
    if out.datum_type != DatumType::F32 || out.shape.as_concrete() != Some(&[batch, 1][..]) {
        return Err(LoadError::WrongShape {
            path: path.to_owned(),
            message: format!(
                "for input float32[{batch}, 7] the output is {}[{}]",
                format!("{:?}", out.datum_type)
                    .to_lowercase()
                    .replace("f32", "float32"),
                out.shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let runnable = typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(plan_err)?;
    Ok(Plan { batch, runnable })
}

impl OnnxModel {
    /// The validated model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn run(&self, plan: &Plan, rows: &[FeatureRow], out: &mut Vec<f32>) -> TractResult<()> {
        debug_assert!(!rows.is_empty() && rows.len() <= plan.batch);
        let mut input = Tensor::zero::<f32>(&[plan.batch, FEATURE_COUNT])?;
        input.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?[..rows.len() * FEATURE_COUNT]
            .copy_from_slice(rows.as_flattened());
        let outputs = plan.runnable.run(tvec!(input.into_tvalue()))?;
        let output = outputs
            .first()
            .ok_or_else(|| TractError::msg("the model returned no output"))?;
        let values = output.try_as_plain_ram()?.as_slice::<f32>()?;
        if values.len() != plan.batch {
            return Err(TractError::msg(format!(
                "expected {} outputs, the model returned shape {:?}",
                plan.batch,
                output.shape()
            )));
        }
        out.extend_from_slice(&values[..rows.len()]);
        Ok(())
    }
}

impl PriceModel for OnnxModel {
    fn version(&self) -> &str {
        &self.card.version
    }

    /// Non-finite outputs are passed through; the policy replaces them per
    /// row with the fallback formula.
    fn predict(&self, rows: &[FeatureRow], out: &mut Vec<f32>) -> Result<(), ModelError> {
        out.clear();
        out.reserve(rows.len());
        for chunk in rows.chunks(MAX_BATCH) {
            self.run(&self.plan, chunk, out).map_err(|e| ModelError {
                version: self.card.version.clone(),
                message: format!("{e:#}"),
            })?;
        }
        Ok(())
    }
}

impl fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxModel")
            .field("version", &self.card.version)
            .field("path", &self.path)
            .field("sha256", &self.card.sha256)
            .field("plan_batch", &MAX_BATCH)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Models are shared across engine threads.
    #[test]
    fn onnx_model_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<OnnxModel>();
    }

    /// The tiling rewrite of `tile_row_constants` changes no output bit:
    /// the shipped model, the plan size, pseudo-random count rows with
    /// edge values (0, huge, infinite, NaN), against plans built
    /// without it.
    #[test]
    fn tiled_plans_give_the_same_bits() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/primetime-v1.onnx");
        let bytes = std::fs::read(&path).unwrap();
        let model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap();
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let specials = [
            0.0f32,
            1.0,
            3.0,
            1e-3,
            1e3,
            1e6,
            4_294_967_295.0,
            1e30,
            f32::MAX,
            f32::INFINITY,
            f32::NAN,
            1.05,
            2.95,
        ];
        let rows: Vec<FeatureRow> = (0..8_200)
            .map(|_| {
                std::array::from_fn(|col| {
                    let r = next();
                    if r % 13 == 0 {
                        specials[(r >> 8) as usize % specials.len()]
                    } else if col == FEATURE_COUNT - 1 {
                        1.0 + ((r >> 20) % 41) as f32 * 0.05
                    } else {
                        ((r >> 11) % (1 << ((r >> 5) % 14))) as f32
                    }
                })
            })
            .collect();
        {
            let batch = MAX_BATCH;
            let plain = build_plan_with(model.clone(), batch, &path, false).unwrap();
            let tiled = build_plan_with(model.clone(), batch, &path, true).unwrap();
            let cards = ModelCard::read(&card_path(&path)).unwrap();
            let run = |plan: Plan| {
                let m = OnnxModel {
                    card: cards.clone(),
                    path: path.clone(),
                    plan,
                };
                let mut out = Vec::new();
                for chunk in rows.chunks(batch) {
                    m.run(&m.plan, chunk, &mut out).unwrap();
                }
                out
            };
            let (a, b) = (run(plain), run(tiled));
            assert_eq!(a.len(), rows.len());
            let differ = a
                .iter()
                .zip(&b)
                .filter(|(p, q)| p.to_bits() != q.to_bits())
                .count();
            assert_eq!(differ, 0, "batch {batch}: {differ} outputs differ");
        }
    }
}
