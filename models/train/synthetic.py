#!/usr/bin/env python3
"""Synthetic stand-in for `primetime simulate --dataset` (testing only).

Writes a features.csv with the dataset contract of train.py:

    tick,cell,supply,requests_1m,requests_5m,checks_1m,supply_ring,
    requests_5m_ring,prev_multiplier,target

so the training pipeline can be exercised end to end before the simulator
writes real rows. It is a small vectorised toy market on a hexagonal grid
(axial coordinates, 6 neighbours):

- demand per cell = lognormal base x a daily-like cycle x moving event
  bumps; requests are damped by the published multiplier (price
  elasticity), price checks are not;
- supply = distinct drivers per 60 s, Poisson around a per-cell base that
  is drawn towards surging cells;
- windows are exact rolling sums of per-tick arrivals (tick = 10 s, so
  1 min = 6 ticks and 5 min = 30 ticks); ring features are the 6
  neighbours' values at the previous tick;
- target = a smooth clearing multiplier of the demand/supply pressure,
  partly persistent, clipped to [1, cap]; prev_multiplier is the previous
  target moved with the policy's step limits (+0.5 / -0.25) and quantised
  to 0.05, like a published multiplier.

Only cells with any count or a multiplier above 1.0 are written (active
cells). Output is deterministic for a given --seed. Never write the output
under models/: the real model is trained from the simulator's dataset.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

TICK_S = 10
W1 = 60 // TICK_S  # ticks in the 1-minute window
W5 = 300 // TICK_S  # ticks in the 5-minute window
HEADER = (
    "tick,cell,supply,requests_1m,requests_5m,checks_1m,supply_ring,"
    "requests_5m_ring,prev_multiplier,target"
)
# Axial hex neighbours.
NEIGHBOURS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, -1), (-1, 1)]


def ring_sum(grid: np.ndarray) -> np.ndarray:
    """Sum of the 6 axial neighbours of every cell (no wrap-around)."""
    h, w = grid.shape
    padded = np.zeros((h + 2, w + 2), dtype=grid.dtype)
    padded[1:-1, 1:-1] = grid
    out = np.zeros_like(grid)
    for dq, dr in NEIGHBOURS:
        out += padded[1 + dr : 1 + dr + h, 1 + dq : 1 + dq + w]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="CSV path to write (keep it out of models/)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--side", type=int, default=24, help="grid is side x side cells")
    ap.add_argument("--cap", type=float, default=3.0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    side, ticks, cap = args.side, args.ticks, args.cap
    shape = (side, side)
    # Fake H3-like cell ids (hex strings), one per grid position.
    ids = np.array(
        [f"{0x882A100000FFFFF + (i << 20):x}" for i in range(side * side)]
    ).reshape(shape)

    # Per-cell base rates: a busy centre, sparse periphery.
    yy, xx = np.mgrid[0:side, 0:side]
    centre = np.exp(-(((xx - side / 2) ** 2 + (yy - side / 2) ** 2) / (2 * (side / 4) ** 2)))
    demand_base = 0.004 + 0.06 * centre * rng.lognormal(0.0, 0.5, shape)  # requests / s
    supply_base = 0.5 + 6.0 * centre * rng.lognormal(0.0, 0.4, shape)  # drivers / min

    # Moving event bumps (concerts, rain...).
    n_events = max(1, ticks // 80)
    ev_t = rng.uniform(0, ticks, n_events)
    ev_x = rng.uniform(0, side, n_events)
    ev_y = rng.uniform(0, side, n_events)
    ev_amp = rng.lognormal(1.0, 0.5, n_events)
    ev_w = rng.uniform(20, 60, n_events)
    ev_r = rng.uniform(1.0, 3.0, n_events)

    req_hist = np.zeros((ticks, side, side), dtype=np.int64)
    chk_hist = np.zeros((ticks, side, side), dtype=np.int64)
    prev = np.ones(shape)  # published multiplier before this tick
    prev_supply = np.zeros(shape, dtype=np.int64)
    prev_req5 = np.zeros(shape, dtype=np.int64)
    chunks: list[str] = []
    rows = 0
    for k in range(ticks):
        cycle = 1.0 + 0.6 * np.sin(2 * np.pi * k / (ticks / 2.0))
        bump = np.zeros(shape)
        for e in range(n_events):
            dt = (k - ev_t[e]) / ev_w[e]
            if abs(dt) < 3:
                d2 = (xx - ev_x[e]) ** 2 + (yy - ev_y[e]) ** 2
                bump += ev_amp[e] * np.exp(-0.5 * dt * dt) * np.exp(-d2 / (2 * ev_r[e] ** 2))
        rate = demand_base * cycle * (1.0 + bump)
        # Requests are damped by price; checks (app opens) are not.
        req_hist[k] = rng.poisson(rate * TICK_S * prev**-0.7)
        chk_hist[k] = rng.poisson(rate * TICK_S * 3.0)
        req1 = req_hist[max(0, k - W1 + 1) : k + 1].sum(axis=0)
        req5 = req_hist[max(0, k - W5 + 1) : k + 1].sum(axis=0)
        chk1 = chk_hist[max(0, k - W1 + 1) : k + 1].sum(axis=0)
        supply = rng.poisson(supply_base * (1.0 + 0.25 * (prev - 1.0)) * (0.8 + 0.2 * cycle))
        s_ring = ring_sum(prev_supply)
        r5_ring = ring_sum(prev_req5)

        demand = req1 + 0.15 * chk1 + 0.08 * req5 / W1 + 0.01 * r5_ring / 6.0
        sup = supply + 0.25 * s_ring / 6.0 + 0.5
        pressure = demand / sup
        clearing = 1.0 + 1.1 * np.log1p(np.maximum(pressure - 0.7, 0.0) * 1.5)
        target = 0.8 * clearing + 0.2 * prev + rng.normal(0.0, 0.03, shape)
        target = np.clip(target, 1.0, cap)

        active = (req5 > 0) | (chk1 > 0) | (supply > 0) | (prev > 1.0)
        idx = np.flatnonzero(active.ravel())
        rows += idx.size
        cols = [
            req1.ravel()[idx],
            req5.ravel()[idx],
            chk1.ravel()[idx],
            s_ring.ravel()[idx],
            r5_ring.ravel()[idx],
        ]
        sup_a = supply.ravel()[idx]
        prev_a = prev.ravel()[idx]
        tgt_a = target.ravel()[idx]
        cell_a = ids.ravel()[idx]
        lines = [
            f"{k},{c},{s},{a},{b},{ch},{sr},{rr},{p:.2f},{t:.6f}"
            for c, s, a, b, ch, sr, rr, p, t in zip(
                cell_a, sup_a, *cols, prev_a, tgt_a
            )
        ]
        chunks.append("\n".join(lines))

        # Publish: step limits and 0.05 quantisation, like the policy.
        step = np.clip(target - prev, -0.25, 0.5)
        prev = np.clip(np.round((prev + step) * 20.0) / 20.0, 1.0, cap)
        prev_supply, prev_req5 = supply, req5

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="ascii", newline="\n") as fh:
        fh.write(HEADER + "\n")
        for chunk in chunks:
            if chunk:
                fh.write(chunk + "\n")
    print(
        f"synthetic: wrote {rows} rows ({ticks} ticks x {side * side} cells, active only) "
        f"to {args.out} in {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
