"""Time all-pairs MultiMatch: gazerad's batched implementation vs looping multimatch-gaze.

Usage: python benchmarks/multimatch_speed.py [--n 1000] [--fixations 30] [--ref-pairs 300]
       [--block 0] [--seed 0]

N scanpaths of about ``--fixations`` fixations (random lengths +-5, gaze-like random walks folded
into a 1920 x 1080 screen, durations 80-600 ms). Ours: ``multimatch_all_pairs`` over all N(N-1)/2
pairs (or, with ``--block B > 0``, a B x B block, extrapolated). Reference:
``multimatch_gaze.docomparison`` on ``--ref-pairs`` random pairs, timed per pair and
extrapolated to all N(N-1)/2 pairs. The same pairs are checked for agreement (max |diff|).
Prints the times and the speed-up ratio.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from gazerad.gaze.multimatch import multimatch_all_pairs, multimatch_block

SCREEN = (1920.0, 1080.0)


def make_scanpaths(n: int, fixations: int, seed: int) -> list[np.ndarray]:
    """``n`` random ``(N_k, 3)`` scanpaths ``[x, y, duration_s]``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(max(3, fixations - 5), fixations + 6))
        steps = rng.normal(0.0, 180.0, size=(k, 2))
        xy = np.array([960.0, 540.0]) + np.cumsum(steps, axis=0)
        # fold back into the screen (reflection, not clipping: clipping piles fixations on
        # the borders, whose repeated coordinates make exact alignment ties common)
        size = np.array(SCREEN)
        xy = np.abs((xy + size) % (2 * size) - size)
        dur = rng.uniform(0.08, 0.6, size=k)
        out.append(np.column_stack([xy, dur]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="number of scanpaths")
    ap.add_argument("--fixations", type=int, default=30, help="mean fixations per scanpath")
    ap.add_argument("--ref-pairs", type=int, default=300, help="pairs timed with multimatch-gaze")
    ap.add_argument("--block", type=int, default=0, help="time only a BxB block of ours and extrapolate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from multimatch_gaze import docomparison

    sps = make_scanpaths(args.n, args.fixations, args.seed)
    n_pairs = args.n * (args.n - 1) // 2
    print(f"{args.n} scanpaths, {np.mean([len(s) for s in sps]):.1f} fixations on average; {n_pairs} unordered pairs")

    # --- ours -------------------------------------------------------------------------------
    t = time.perf_counter()
    if args.block > 0:
        b = min(args.block, args.n)
        multimatch_block(sps[:b], sps[b : 2 * b] if 2 * b <= args.n else sps[:b], SCREEN)
        ours_pair = (time.perf_counter() - t) / (b * b)
        ours_total = ours_pair * n_pairs
        print(f"ours: {b}x{b} block in {ours_pair * b * b:.2f} s -> {ours_pair * 1e6:.1f} us/pair, extrapolated all pairs {ours_total:.1f} s")
        allp = None
    else:
        allp = multimatch_all_pairs(sps, SCREEN)
        ours_total = time.perf_counter() - t
        ours_pair = ours_total / n_pairs
        print(f"ours: all {n_pairs} pairs in {ours_total:.2f} s ({ours_pair * 1e6:.1f} us/pair)")

    # --- reference on a random subset ---------------------------------------------------------
    rng = np.random.default_rng(args.seed + 1)
    ii = rng.integers(0, args.n, size=args.ref_pairs)
    jj = (ii + rng.integers(1, args.n, size=args.ref_pairs)) % args.n

    def rec(s: np.ndarray) -> np.ndarray:
        return np.rec.fromarrays([s[:, 0], s[:, 1], s[:, 2]], names="start_x,start_y,duration")

    recs = {k: rec(sps[k]) for k in set(ii.tolist()) | set(jj.tolist())}
    ref = np.empty((args.ref_pairs, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        for p, (i, j) in enumerate(zip(ii, jj)):
            ref[p] = docomparison(recs[i], recs[j], screensize=list(SCREEN))
        ref_pair = (time.perf_counter() - t) / args.ref_pairs
    ref_total = ref_pair * n_pairs
    print(
        f"multimatch-gaze: {args.ref_pairs} pairs in {ref_pair * args.ref_pairs:.2f} s "
        f"({ref_pair * 1e3:.2f} ms/pair) -> extrapolated all pairs {ref_total:.0f} s"
    )
    if allp is not None:
        ours = allp[np.minimum(ii, jj), np.maximum(ii, jj)]
        # the reference is aligned in the (i, j) order drawn; ours stores i < j (symmetric)
        print(f"max |ours - multimatch-gaze| on those pairs: {np.nanmax(np.abs(ours - ref)):.2e}")
    print(f"speed-up: x{ref_total / ours_total:.0f}")


if __name__ == "__main__":
    main()
