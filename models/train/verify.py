#!/usr/bin/env python3
"""Check an exported model against its card and golden file.

    python models/train/verify.py --dir models --version primetime-v1

Checks: the card's and the golden file's sha256 match the .onnx file; the
graph passes onnx.checker, uses only Add/Log/Sub/Mul/Gemm/Relu/Clip, has
input `features` float32 [N, 7] and output `multiplier` float32 [N, 1];
the card's feature order is the contract's; onnxruntime (and tract, when
its pip package is installed) reproduce the golden outputs within 1e-4.
Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np

# One definition of the feature contract: the trainer's.
from train import FEATURE_NAMES  # noqa: E402
ALLOWED_OPS = {"Add", "Log", "Sub", "Mul", "Gemm", "Relu", "Clip"}
TOLERANCE = 1e-4


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check a model against its card and golden pairs.")
    ap.add_argument("--dir", default="models")
    ap.add_argument("--version", default="primetime-v1")
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    base = os.path.join(args.dir, args.version)
    onnx_path, card_path, golden_path = f"{base}.onnx", f"{base}.card.json", f"{base}.golden.json"
    with open(onnx_path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    with open(card_path, encoding="utf-8") as fh:
        card = json.load(fh)
    with open(golden_path, encoding="utf-8") as fh:
        golden = json.load(fh)

    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            problems.append(what)

    check(card.get("sha256") == sha, f"card sha256 matches the file ({sha})")
    check(golden.get("model_sha256") == sha, "golden model_sha256 matches the file")
    check(card.get("version") == args.version, "card version")
    check(card.get("feature_order") == FEATURE_NAMES, "card feature order is the contract's")

    model = onnx.load(onnx_path)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    check(set(ops) <= ALLOWED_OPS, f"standard ops only: {' -> '.join(ops)}")
    check(model.ir_version == 8, f"ir_version {model.ir_version}")

    def io(vi):
        t = vi.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        return vi.name, t.elem_type, dims

    check(
        [io(v) for v in model.graph.input] == [("features", TensorProto.FLOAT, ["N", 7])],
        "input features float32 [N, 7]",
    )
    check(
        [io(v) for v in model.graph.output] == [("multiplier", TensorProto.FLOAT, ["N", 1])],
        "output multiplier float32 [N, 1]",
    )

    X = np.asarray(golden["rows"], dtype=np.float32)
    y = np.asarray(golden["outputs"], dtype=np.float64)
    check(X.ndim == 2 and X.shape[1] == 7 and X.shape[0] == y.shape[0] >= 200, f"golden has {X.shape[0]} rows")
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    out = sess.run(["multiplier"], {"features": X})[0][:, 0].astype(np.float64)
    diff = float(np.max(np.abs(out - y)))
    check(diff < TOLERANCE, f"onnxruntime reproduces golden outputs (max abs diff {diff:.3g})")
    cap = float(card.get("cap", 3.0))
    check(bool(np.all((out >= 1.0) & (out <= cap))), f"outputs within [1, {cap}]")
    try:
        import tract
    except ImportError:
        print("skip tract (pip package not installed)")
    else:
        runnable = tract.onnx().load(onnx_path).into_model().into_runnable()
        tout = runnable.run([X])[0].to_numpy()[:, 0].astype(np.float64)
        tdiff = float(np.max(np.abs(tout - y)))
        check(tdiff < TOLERANCE, f"tract reproduces golden outputs (max abs diff {tdiff:.3g})")

    print(f"{len(problems)} failed" if problems else "all checks passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
