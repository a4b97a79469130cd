#!/usr/bin/env python3
"""Train the primetime pricing model and export it as a hand-built ONNX graph.

Reads the simulator's feature rows (`primetime simulate --dataset`), fits a
small MLP (scikit-learn) to the market-clearing multiplier, writes the graph
with `onnx.helper` using only standard ops (Add, Log, Sub, Mul, Gemm, Relu,
Clip) so tract can run it, checks onnxruntime against scikit-learn, and
writes the model card and golden input/output pairs for the Rust tests.

    python models/train/train.py --data features.csv --out-dir models \\
        --seed 7 --version primetime-v1 --cap 3.0

See models/train/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings

import numpy as np

# The feature contract (services/core/src/features.rs, DESIGN §4).
FEATURE_NAMES = [
    "supply",
    "requests_1m",
    "requests_5m",
    "checks_1m",
    "supply_ring",
    "requests_5m_ring",
    "prev_multiplier",
]
COLUMNS = ["tick", "cell", *FEATURE_NAMES, "target"]
COUNT_COLUMNS = 6  # columns 0..5 are counts (log1p candidates); 6 is prev_multiplier
HELDOUT_FRACTION = 0.2
GOLDEN_HELDOUT_ROWS = 150
GOLDEN_MIN_ROWS = 200
OPSET = 17
IR_VERSION = 8
INPUT_NAME = "features"
OUTPUT_NAME = "multiplier"
ORT_TOLERANCE = 1e-4

# Fallback formula defaults (services/core/src/policy.rs, FallbackParams).
CHECK_WEIGHT = 0.1
RING_WEIGHT = 1.0 / 6.0
SENSITIVITY = 0.5


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden must be like 32,32, got {text!r}")
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--hidden must be positive sizes, got {text!r}")
    return sizes


# --------------------------------------------------------------------------
# Data


def load_dataset(path: str, cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns (tick int64, cell sort key, X float32 [n,7], y float64), sorted by (tick, cell)."""
    with open(path, "r", encoding="utf-8") as fh:
        header = fh.readline().strip().lstrip("\ufeff")
    got = [c.strip() for c in header.split(",")]
    if got != COLUMNS:
        raise SystemExit(f"{path}: header must be\n  {','.join(COLUMNS)}\ngot\n  {header}")
    numeric_cols = [0] + list(range(2, len(COLUMNS)))
    num = np.loadtxt(path, delimiter=",", skiprows=1, usecols=numeric_cols, dtype=np.float64, ndmin=2)
    cells = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[1], dtype=str, ndmin=1)
    if num.shape[0] == 0:
        raise SystemExit(f"{path}: no rows")
    if not np.all(np.isfinite(num)):
        raise SystemExit(f"{path}: non-finite values")
    tick = num[:, 0]
    if np.any(tick != np.round(tick)):
        raise SystemExit(f"{path}: tick must be an integer")
    tick = tick.astype(np.int64)
    feats = num[:, 1:8]
    y = num[:, 8]
    if np.any(feats[:, :COUNT_COLUMNS] < 0):
        raise SystemExit(f"{path}: negative counts")
    out_of_range = (y < 1.0 - 1e-9) | (y > cap + 1e-9)
    if np.any(out_of_range):
        warnings.warn(f"{int(out_of_range.sum())} targets outside [1, {cap}]; clipped")
        y = np.clip(y, 1.0, cap)

    # Cell sort key: numeric when every id is a decimal integer (u64 index),
    # else the string order (e.g. H3 hex strings). Either is deterministic.
    try:
        key = np.array([int(c, 10) for c in cells], dtype=np.uint64)
    except ValueError:
        _, key = np.unique(cells, return_inverse=True)
    order = np.lexsort((key, tick))
    tick, key, feats, y = tick[order], key[order], feats[order], y[order]
    dup = (tick[1:] == tick[:-1]) & (key[1:] == key[:-1])
    if np.any(dup):
        warnings.warn(f"{int(dup.sum())} duplicate (tick, cell) rows")
    # The model sees float32 rows (FeatureRow = [f32; 7]); train on exactly those.
    X = feats.astype(np.float32)
    return tick, key, X, y


def fallback_multiplier(X: np.ndarray, cap: float) -> np.ndarray:
    """FallbackParams::raw_multiplier (defaults), then clipped to [1, cap]."""
    X = X.astype(np.float64)
    demand = X[:, 1] + CHECK_WEIGHT * X[:, 3]
    sup = X[:, 0] + RING_WEIGHT * X[:, 4]
    ratio = demand / np.maximum(sup, 1.0)
    raw = 1.0 + SENSITIVITY * np.maximum(ratio - 1.0, 0.0)
    return np.clip(raw, 1.0, cap)


def metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    from sklearn.metrics import mean_absolute_error, r2_score

    return {
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)),
    }


# --------------------------------------------------------------------------
# Preprocessing (mirrored exactly by the ONNX graph)


class Prep:
    """x -> [log1p on counts] -> (x - mean) * inv_std, parameters in float32."""

    def __init__(self, log1p: bool, X_train: np.ndarray):
        self.log1p = log1p
        Z = self._transform_only(X_train)
        mean = Z.mean(axis=0)
        std = Z.std(axis=0)
        std[~(std > 1e-12)] = 1.0
        # Stored as float32 initializers; use the same rounded values here.
        self.mean = mean.astype(np.float32)
        self.inv_std = (1.0 / std).astype(np.float32)

    def _transform_only(self, X: np.ndarray) -> np.ndarray:
        Z = X.astype(np.float64)
        if self.log1p:
            # The graph computes Log(x + 1) in float32.
            Z[:, :COUNT_COLUMNS] = np.log(
                (X[:, :COUNT_COLUMNS].astype(np.float32) + np.float32(1.0))
            ).astype(np.float64)
        return Z

    def __call__(self, X: np.ndarray) -> np.ndarray:
        Z = self._transform_only(X)
        return (Z - self.mean.astype(np.float64)) * self.inv_std.astype(np.float64)


def fit_mlp(Z: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], seed: int, max_iter: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from threadpoolctl import threadpool_limits

    mlp = MLPRegressor(
        hidden_layer_sizes=hidden,
        activation="relu",
        solver="adam",
        alpha=1e-4,
        batch_size=512,
        learning_rate_init=1e-3,
        max_iter=max_iter,
        shuffle=True,
        random_state=seed,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=8,
        tol=1e-5,
    )
    # One BLAS thread: the matrices are small, so threads only add overhead
    # (8x slower on a busy 2-core machine), and one thread keeps the
    # floating-point summation order the same on every machine.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(Z, y)
    return mlp


# --------------------------------------------------------------------------
# ONNX export (by hand: standard ops only, so tract can run it)


def build_onnx(mlp, prep: Prep, cap: float, version: str):
    """features [N,7] -> (log1p counts) -> Sub mean -> Mul 1/std -> (Gemm, Relu)* -> Gemm -> Clip."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []

    def const(name: str, arr) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name=name))
        return name

    cur = INPUT_NAME
    if prep.log1p:
        # log1p on the count columns 0..5 only, prev_multiplier passes through
        # unchanged: z = Log(x * m + 1) + x * (1 - m), m = [1,1,1,1,1,1,0].
        # Exact for the passthrough column (x*0 + 1 = 1, Log(1) = 0, x*1 = x).
        mask = np.array([1.0] * COUNT_COLUMNS + [0.0] * (len(FEATURE_NAMES) - COUNT_COLUMNS))
        const("log1p_mask", mask)
        const("log1p_keep", 1.0 - mask)
        const("one", np.array(1.0))
        nodes += [
            helper.make_node("Mul", [cur, "log1p_mask"], ["counts"], name="log1p_select"),
            helper.make_node("Add", ["counts", "one"], ["counts_plus_1"], name="log1p_add1"),
            helper.make_node("Log", ["counts_plus_1"], ["counts_log1p"], name="log1p_log"),
            helper.make_node("Mul", [cur, "log1p_keep"], ["passthrough"], name="log1p_passthrough"),
            helper.make_node("Add", ["counts_log1p", "passthrough"], ["transformed"], name="log1p_merge"),
        ]
        cur = "transformed"
    const("mean", prep.mean)
    const("inv_std", prep.inv_std)
    nodes += [
        helper.make_node("Sub", [cur, "mean"], ["centred"], name="standardise_sub"),
        helper.make_node("Mul", ["centred", "inv_std"], ["standardised"], name="standardise_mul"),
    ]
    cur = "standardised"
    n_layers = len(mlp.coefs_)
    for i, (W, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        last = i == n_layers - 1
        const(f"W{i}", W)  # [in, out]: Gemm with transB = 0
        const(f"b{i}", b)
        out = "raw" if last else f"h{i}_lin"
        nodes.append(
            helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [out], name=f"dense{i}", alpha=1.0, beta=1.0)
        )
        cur = out
        if not last:
            nodes.append(helper.make_node("Relu", [cur], [f"h{i}"], name=f"relu{i}"))
            cur = f"h{i}"
    const("clip_min", np.array(1.0))
    const("clip_max", np.array(cap))
    nodes.append(helper.make_node("Clip", [cur, "clip_min", "clip_max"], [OUTPUT_NAME], name="clip"))

    graph = helper.make_graph(
        nodes,
        "primetime",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", len(FEATURE_NAMES)])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="primetime-train",
        producer_version=version,
        doc_string=f"primetime {version}: float32[N,7] features -> float32[N,1] multiplier in [1, {cap}]",
    )
    model.ir_version = IR_VERSION
    for k, v in [
        ("version", version),
        ("feature_order", ",".join(FEATURE_NAMES)),
        ("cap", repr(float(cap))),
        ("log1p", "true" if prep.log1p else "false"),
    ]:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model, full_check=True)
    return model


def ort_session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def tract_predict(path: str, X: np.ndarray) -> np.ndarray | None:
    """The graph run by tract (Python bindings of the engine Rust uses); None if not installed."""
    try:
        import tract
    except ImportError:
        return None
    runnable = tract.onnx().load(path).into_model().into_runnable()
    out = runnable.run([np.ascontiguousarray(X, dtype=np.float32)])[0].to_numpy()
    assert out.shape == (X.shape[0], 1), out.shape
    return out[:, 0]


def ort_predict(sess, X: np.ndarray) -> np.ndarray:
    out = sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(X, dtype=np.float32)})[0]
    assert out.shape == (X.shape[0], 1) and out.dtype == np.float32, (out.shape, out.dtype)
    return out[:, 0]


# --------------------------------------------------------------------------
# Golden rows


def edge_rows(cap: float) -> list[list[float]]:
    """Hand-picked rows: zeros, huge values, prev at 1 and cap, spikes, busy/quiet."""
    rows: list[list[float]] = []
    zeros = [0.0] * COUNT_COLUMNS
    rows.append(zeros + [0.0])  # all zeros, literally
    for prev in (1.0, 1.05, 1.5, 2.0, cap - 0.05, cap):
        rows.append(zeros + [prev])
    for big in (1e3, 1e6, 4294967295.0, 1e30):
        for prev in (1.0, cap):
            rows.append([big] * COUNT_COLUMNS + [prev])
    # 1e30 in one column (others quiet), and a huge demand with no supply.
    for col in range(COUNT_COLUMNS):
        r = zeros + [1.0]
        r[col] = 1e30
        rows.append(r)
    rows.append([0.0, 1e6, 1e6, 1e6, 0.0, 1e6, 1.0])
    # The largest finite float32 (rows whose output is not finite, possible
    # without log1p, are dropped from the golden file: JSON has no NaN).
    f32_max = float(np.finfo(np.float32).max)
    rows.append([f32_max] * COUNT_COLUMNS + [1.0])
    rows.append([0.0, f32_max, 0.0, 0.0, 0.0, 0.0, 1.0])
    rows.append([1e6, 0.0, 0.0, 0.0, 1e6, 0.0, cap])
    # Single-feature spikes over a zero row at prev 1.0.
    for col in range(COUNT_COLUMNS):
        for v in (1.0, 10.0, 100.0, 1e4):
            r = zeros + [1.0]
            r[col] = v
            rows.append(r)
    # Typical rows: quiet, normal, busy, surge, at prev 1, mid and cap.
    typical = [
        [8, 0, 1, 2, 40, 5],  # quiet, well supplied
        [5, 1, 4, 5, 25, 20],  # normal
        [3, 4, 15, 12, 15, 60],  # busy
        [1, 8, 35, 30, 6, 150],  # surge
        [0, 12, 50, 60, 2, 220],  # no supply, heavy demand
        [20, 2, 8, 6, 90, 30],  # lots of drivers
    ]
    for t in typical:
        for prev in (1.0, 1.75, cap):
            rows.append([float(v) for v in t] + [prev])
    return rows


def f32_list(a) -> list[float]:
    return [float(np.float32(v)) for v in a]


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train and export the primetime ONNX model.")
    ap.add_argument("--data", required=True, help="features.csv from `primetime simulate --dataset`")
    ap.add_argument("--out-dir", required=True, help="where <version>.onnx/.card.json/.golden.json go")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--version", default="primetime-v1")
    ap.add_argument("--cap", type=float, default=3.0)
    ap.add_argument("--hidden", type=parse_hidden, default=(32, 32), help="hidden layer sizes, e.g. 32,32")
    ap.add_argument("--max-rows", type=int, default=400_000,
                    help="deterministic subsample when the CSV is larger (0 = all rows)")
    ap.add_argument("--log1p", choices=["auto", "on", "off"], default="auto",
                    help="log1p on the count columns: auto fits both and keeps the lower held-out MAE")
    ap.add_argument("--max-iter", type=int, default=60, help="MLP epochs at most (early stopping usually ends sooner)")
    args = ap.parse_args(argv)
    if not (math.isfinite(args.cap) and args.cap >= 1.0):
        ap.error("--cap must be a finite number >= 1.0")

    import onnx
    import onnxruntime
    import sklearn

    t_start = time.perf_counter()
    np.random.seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)

    # ---- data
    t0 = time.perf_counter()
    data_sha = sha256_file(args.data)
    tick, _cell, X, y = load_dataset(args.data, args.cap)
    n_rows = X.shape[0]
    ticks = np.unique(tick)
    if ticks.size < 2:
        raise SystemExit("need at least 2 distinct ticks to split train/held-out by time")
    # Last 20 % of the ticks are held out (no leakage across time).
    n_held_ticks = max(1, int(math.ceil(HELDOUT_FRACTION * ticks.size)))
    heldout_from = int(ticks[ticks.size - n_held_ticks])
    keep = np.ones(n_rows, dtype=bool)
    if args.max_rows and n_rows > args.max_rows:
        rng = np.random.default_rng([args.seed, 0])
        sel = np.sort(rng.choice(n_rows, size=args.max_rows, replace=False))
        keep[:] = False
        keep[sel] = True
    train_mask = keep & (tick < heldout_from)
    held_mask = keep & (tick >= heldout_from)
    Xtr, ytr = X[train_mask], y[train_mask]
    Xho, yho = X[held_mask], y[held_mask]
    if Xtr.shape[0] < 100 or Xho.shape[0] < 1:
        raise SystemExit(f"too few rows: train {Xtr.shape[0]}, held-out {Xho.shape[0]}")
    log(f"data: {n_rows} rows, {ticks.size} ticks, sha256 {data_sha}")
    log(f"split: train {Xtr.shape[0]} rows (ticks < {heldout_from}), held-out {Xho.shape[0]} rows "
        f"(last {n_held_ticks} ticks){', subsampled' if not keep.all() else ''} [{time.perf_counter() - t0:.1f}s]")

    # ---- fit (raw and/or log1p standardisation)
    variants = {"auto": [False, True], "off": [False], "on": [True]}[args.log1p]
    fits = {}
    for use_log in variants:
        t0 = time.perf_counter()
        prep = Prep(use_log, Xtr)
        mlp = fit_mlp(prep(Xtr), ytr, args.hidden, args.seed, args.max_iter)
        pred = np.clip(mlp.predict(prep(Xho)), 1.0, args.cap)
        m = metrics(yho, pred)
        fits[use_log] = (prep, mlp, m)
        log(f"fit: log1p={str(use_log).lower():5} epochs {mlp.n_iter_:3d}  held-out MAE {m['mae']:.5f}  "
            f"R2 {m['r2']:.4f} [{time.perf_counter() - t0:.1f}s]")
    use_log = min(fits, key=lambda k: (fits[k][2]["mae"], k))
    prep, mlp, _ = fits[use_log]
    log(f"chosen: log1p={str(use_log).lower()}")

    # ---- export + verify
    t0 = time.perf_counter()
    model = build_onnx(mlp, prep, args.cap, args.version)
    onnx_path = os.path.join(args.out_dir, f"{args.version}.onnx")
    onnx.save(model, onnx_path)
    model_sha = sha256_file(onnx_path)
    sess = ort_session(onnx_path)
    ort_ho = ort_predict(sess, Xho)
    skl_ho = np.clip(mlp.predict(prep(Xho)), 1.0, args.cap)
    max_diff = float(np.max(np.abs(ort_ho.astype(np.float64) - skl_ho)))
    log(f"verify: onnxruntime vs sklearn on {Xho.shape[0]} held-out rows: max abs diff {max_diff:.3g} "
        f"(limit {ORT_TOLERANCE:g})")
    if not (max_diff < ORT_TOLERANCE):
        raise SystemExit(f"onnxruntime and sklearn disagree: {max_diff} >= {ORT_TOLERANCE}")
    if not np.all(np.isfinite(ort_ho)):
        raise SystemExit("non-finite model output on held-out rows")

    model_m = metrics(yho, ort_ho.astype(np.float64))
    fb_m = metrics(yho, fallback_multiplier(Xho, args.cap))

    # ---- golden pairs
    rng = np.random.default_rng([args.seed, 1])
    edges = np.array(edge_rows(args.cap), dtype=np.float32)
    n_sample = min(Xho.shape[0], max(GOLDEN_HELDOUT_ROWS, GOLDEN_MIN_ROWS - edges.shape[0]))
    sample = Xho[np.sort(rng.choice(Xho.shape[0], size=n_sample, replace=False))]
    golden_X = np.concatenate([sample, edges]).astype(np.float32)
    golden_y = ort_predict(sess, golden_X)
    finite = np.isfinite(golden_y)
    if not finite.all():
        log(f"golden: dropping {int((~finite).sum())} rows with non-finite output")
        golden_X, golden_y = golden_X[finite], golden_y[finite]
    # ---- tract: the Rust side's engine must load the graph and agree.
    tract_version = None
    tract_diff = None
    check_X = np.concatenate([Xho, golden_X])
    tract_out = tract_predict(onnx_path, check_X)
    if tract_out is None:
        log("verify: tract (pip package) not installed; tract check skipped")
    else:
        from importlib.metadata import version as dist_version

        tract_version = dist_version("tract")
        ref = np.concatenate([ort_ho, golden_y])
        tract_diff = float(np.max(np.abs(tract_out.astype(np.float64) - ref)))
        log(f"verify: tract {tract_version} vs onnxruntime on {check_X.shape[0]} held-out + golden rows: "
            f"max abs diff {tract_diff:.3g}")
        if not (tract_diff < ORT_TOLERANCE):
            raise SystemExit(f"tract and onnxruntime disagree: {tract_diff} >= {ORT_TOLERANCE}")

    golden = {
        "model_sha256": model_sha,
        "rows": [f32_list(r) for r in golden_X],
        "outputs": f32_list(golden_y),
    }
    golden_path = os.path.join(args.out_dir, f"{args.version}.golden.json")
    with open(golden_path, "w", encoding="utf-8") as fh:
        json.dump(golden, fh)
        fh.write("\n")

    # ---- card
    card = {
        "version": args.version,
        "feature_order": FEATURE_NAMES,
        "inputs": {"name": INPUT_NAME, "shape": ["N", len(FEATURE_NAMES)], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", 1], "dtype": "float32"},
        "cap": float(args.cap),
        "dataset": {
            "path": args.data,
            "seed": args.seed,
            "rows": int(n_rows),
            "train_rows": int(Xtr.shape[0]),
            "heldout_rows": int(Xho.shape[0]),
            "sha256": data_sha,
            "heldout_from_tick": heldout_from,
            "max_rows": int(args.max_rows),
        },
        "heldout": {
            "model": model_m,
            "fallback": fb_m,
        },
        "verification": {
            "onnxruntime_vs_sklearn_max_abs_diff": max_diff,
            "tract": tract_version,
            "tract_vs_onnxruntime_max_abs_diff": tract_diff,
        },
        "training": {
            "hidden": list(args.hidden),
            "sklearn": sklearn.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
            "log1p": bool(use_log),
            "log1p_selection": {
                ("log1p" if k else "raw"): {"mae": v[2]["mae"], "r2": v[2]["r2"]} for k, v in fits.items()
            },
            "epochs": int(mlp.n_iter_),
            "opset": OPSET,
            "ir_version": IR_VERSION,
        },
        "sha256": model_sha,
    }
    card_path = os.path.join(args.out_dir, f"{args.version}.card.json")
    with open(card_path, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2)
        fh.write("\n")
    log(f"export: {onnx_path} ({os.path.getsize(onnx_path)} bytes), {card_path}, "
        f"{golden_path} ({len(golden['rows'])} rows) [{time.perf_counter() - t0:.1f}s]")

    log("")
    log(f"summary {args.version}: rows {n_rows} (train {Xtr.shape[0]}, held-out {Xho.shape[0]}), "
        f"log1p={str(use_log).lower()}, hidden {','.join(map(str, args.hidden))}")
    log(f"  held-out MAE  model {model_m['mae']:.5f}   fallback {fb_m['mae']:.5f}")
    log(f"  held-out R2   model {model_m['r2']:.4f}    fallback {fb_m['r2']:.4f}")
    if model_m["mae"] >= fb_m["mae"]:
        log("  WARNING: the model does not beat the fallback formula on the held-out rows")
    log(f"  onnx sha256   {model_sha}")
    log(f"  total {time.perf_counter() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
