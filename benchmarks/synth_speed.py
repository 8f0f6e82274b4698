"""Time the study generator: studies per second at 1 and N workers (prints figures).

Usage: python benchmarks/synth_speed.py [--n 200] [--workers 2]
The 1-worker run is the reference; the figure to report is the speed-up ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from gazerad.synth.study import generate_studies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        generate_studies(os.path.join(d, "one"), n=min(args.n, 40), seed=0, workers=1, progress=False)
        ref = (time.perf_counter() - t) / min(args.n, 40)
        t = time.perf_counter()
        s = generate_studies(os.path.join(d, "many"), n=args.n, seed=0, workers=args.workers, progress=False)
        many = time.perf_counter() - t
    print(f"reference (1 worker): {ref * 1000:.0f} ms/study")
    print(
        f"{args.workers} workers: {args.n} studies in {many:.1f} s ({many / args.n * 1000:.0f} ms/study), "
        f"speed-up x{ref * args.n / many:.2f}; {s.n_readings} readings"
    )


if __name__ == "__main__":
    main()
