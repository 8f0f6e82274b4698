"""Time the scanpath schemes on N scanpaths (prints figures).

1. ``dtw``: our scheme's full similarity matrix (``DTWScheme.matrix``: features, DTW,
   mapping) against ``dtaidistance.dtw_ndim.distance_matrix_fast(parallel=True)`` called
   directly on the same normalised scanpaths, in the same run. Goal: ours within 2x.
   Also the blockwise cost (256-record chunks, as :mod:`gazerad.gaze.relation` calls it).
2. ``tima``: the TIMA scheme's full matrix (DBSCAN + moment features, then the batched
   DTW). Goal: < 60 s for N = 1000 on 2 cores.

Scanpaths (``--source``):
- ``synth`` (default): simulated radiologists (:mod:`gazerad.synth.readers`) reading
  synthetic 512 px chest phantoms, 50 readings per phantom over a 5-reader pool
  (about 30-60 fixations each, sweeps plus dwell on findings);
- ``walk``: clustered random walks, ``--fixations`` per scanpath (3 regions visited in
  turn, 5 % jitter), on a 512 x 512 image.

Timings are the best of ``--repeat`` runs (other work on the machine makes them noisy).

Usage: python benchmarks/dtw_speed.py [--n 1000] [--source synth|walk] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from gazerad.gaze import GazeRecord, get_scheme


def synth_records(n: int, seed: int) -> list[GazeRecord]:
    from gazerad.synth import reader_pool, render, sample_spec, simulate_reading

    rng = np.random.default_rng(seed)
    pool = reader_pool(seed)
    recs: list[GazeRecord] = []
    k = 0
    while len(recs) < n:
        spec = sample_spec(rng, size=512)
        rendered = render(spec)
        for i in range(min(50, n - len(recs))):
            s = simulate_reading(rng, pool[i % len(pool)], spec, rendered)
            recs.append(GazeRecord(f"im{k}", s.reader_id, s.fixations, image_size=rendered.image.shape, pixels_per_degree=s.pixels_per_degree))
        k += 1
    return recs


def walk_records(n: int, seed: int, fixations: int = 30, size: int = 512) -> list[GazeRecord]:
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        centres = rng.uniform(0.1 * size, 0.9 * size, (3, 2))
        which = np.sort(rng.integers(0, 3, fixations))
        xy = np.clip(centres[which] + rng.normal(0, 0.05 * size, (fixations, 2)), 0.5, size - 0.5)
        d = rng.uniform(0.1, 0.6, fixations)
        t0 = np.cumsum(d + 0.03) - d
        recs.append(GazeRecord(f"im{i}", "r", np.column_stack([xy, t0, t0 + d]), image_size=(size, size), pixels_per_degree=25.0))
    return recs


def best(fn, repeat: int) -> tuple[float, object]:
    t_best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--source", choices=["synth", "walk"], default="synth")
    ap.add_argument("--fixations", type=int, default=30, help="fixations per walk (--source walk)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-tima", action="store_true")
    args = ap.parse_args()

    from dtaidistance import dtw_ndim

    t = time.perf_counter()
    recs = synth_records(args.n, args.seed) if args.source == "synth" else walk_records(args.n, args.seed, args.fixations)
    lens = np.array([len(r) for r in recs])
    print(
        f"{len(recs)} scanpaths ({args.source}), fixations per scanpath: mean {lens.mean():.1f}, "
        f"range {lens.min()}-{lens.max()} (generated in {time.perf_counter() - t:.1f} s); {os.cpu_count()} cores"
    )

    # ---- DTW: ours vs dtaidistance directly
    sch = get_scheme("dtw")
    series = sch.features(recs)
    t_ref, ref = best(lambda: dtw_ndim.distance_matrix_fast(series, ndim=2, parallel=True), args.repeat)
    t_ours, ours = best(lambda: sch.matrix(recs), args.repeat)
    ref = np.triu(ref, 1)
    ref = ref + ref.T
    err = np.abs(ours - np.exp(-ref / sch.scale)).max()
    print(f"dtw  dtaidistance distance_matrix_fast(parallel=True): {t_ref:.3f} s")
    print(f"dtw  ours (DTWScheme.matrix, incl. features):          {t_ours:.3f} s  ratio ours/dtaidistance = {t_ours / t_ref:.2f}  (max |diff| {err:.1e})")

    def blockwise(bs: int = 256) -> np.ndarray:
        f = sch.features(recs)
        n = len(f)
        m = np.zeros((n, n))
        for a in range(0, n, bs):
            for b in range(a, n, bs):
                blk = sch.block(sch.take(f, list(range(a, min(a + bs, n)))), sch.take(f, list(range(b, min(b + bs, n)))))
                m[a : a + bs, b : b + bs] = blk
                m[b : b + bs, a : a + bs] = blk.T
        return m

    t_blk, mb = best(blockwise, 1)
    print(
        f"dtw  ours blockwise (256-record chunks, upper block triangle): {t_blk:.3f} s  ratio {t_blk / t_ref:.2f}  (max |diff| {np.abs(mb - ours).max():.1e})"
    )

    # ---- TIMA
    if not args.skip_tima:
        tima = get_scheme("tima")
        t = time.perf_counter()
        feats = tima.features(recs)
        t_feat = time.perf_counter() - t
        t = time.perf_counter()
        m = tima.block(feats, feats)
        t_blk = time.perf_counter() - t
        k = np.array([len(x) for x in feats])
        iu = np.triu_indices(len(m), 1)
        print(f"tima features (DBSCAN + moments): {t_feat:.2f} s; moments per scanpath: mean {k.mean():.2f}, range {k.min()}-{k.max()}")
        print(
            f"tima DTW block {len(m)} x {len(m)}: {t_blk:.2f} s; total {t_feat + t_blk:.2f} s (goal < 60 s); "
            f"similarity quartiles {np.round(np.percentile(m[iu], [25, 50, 75]), 3).tolist()}"
        )


if __name__ == "__main__":
    main()
