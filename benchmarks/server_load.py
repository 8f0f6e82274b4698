"""Mixed load on a real server: infer, gaze uploads and reads from N clients at once (issue 15).

Starts ``monailabel start_server`` with GazeRad's app on 127.0.0.1 over a small study set,
trains quick attention and localisation models, measures the read latency of an idle
server (reference, same run), then runs ``--clients`` clients for ``--seconds``; each loops
over a mix of

- ``POST /infer/attention`` (JSON) and ``POST /infer/localization`` (JSON),
- ``PUT /datastore/label?tag=gaze`` (a new reading appended, reader ``c<client>_<n>``),
- ``GET /info/``, ``GET /datastore/image/info``, ``GET /datastore/?output=stats``.

Reported: requests and errors per kind (goal: 0 errors), p50/p95 latency, reads under load
against the idle reference (ratio), and whether every acknowledged upload is stored (each
acknowledged reader id is looked up in the stored gaze files and in the server's answer).
Writes ``benchmarks/results/server_load.json`` and a PNG of latency over time.

    python benchmarks/server_load.py [--clients 8] [--seconds 60] [--json benchmarks/results/server_load.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mass_studies import mass_boxes, mass_studies, simulated_gaze_csv  # noqa: E402
from server_helpers import Server, run_threads  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MIX = ["attention"] * 2 + ["localization"] * 2 + ["upload"] * 3 + ["info", "image_info", "stats"]


def pct(v: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(v) * 1000.0, q)) if v else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--workdir", default=None, help="reuse a folder (studies and trained models are kept)")
    ap.add_argument("--json", default=str(RESULTS / "server_load.json"))
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="gazerad-load-"))
    studies = work / "masses"
    if not studies.exists():
        mass_studies(studies, n=args.images, seed=3)
    server = Server(studies / "images", work, env={"PYTHONFAULTHANDLER": "1"}).start()
    ids = sorted(p.stem for p in (studies / "images").glob("0*.png"))
    try:
        boxes = mass_boxes(studies)
        gaze_files = {}
        for k, i in enumerate(ids):
            gaze_files[i] = simulated_gaze_csv(work / f"g{i}.csv", boxes.get(f"{i}.png"), seed=k).read_bytes()
        if not (server.model_dir / "attention.pt").is_file():
            for i in ids:
                requests.put(
                    f"{server.url}/datastore/label", params={"image": i, "tag": "gaze"}, files={"label": ("g.csv", gaze_files[i])}, timeout=60
                ).raise_for_status()
            print("training attention ...", flush=True)
            assert server.train("attention", {"epochs": 3, "input_size": 64, "device": "cpu"})["status"] == "DONE"
        if not (server.model_dir / "localization.pt").is_file():
            print("training localization ...", flush=True)
            assert server.train("localization", {"epochs": 3, "image_size": 64, "device": "cpu"})["status"] == "DONE"

        def call(s: requests.Session, kind: str, k: int, n: int) -> tuple[bool, str, str | None]:
            iid = ids[(k * 7 + n) % len(ids)]
            if kind in ("attention", "localization"):
                r = s.post(
                    f"{server.url}/infer/{kind}",
                    params={"image": iid, "output": "json"},
                    data={"params": json.dumps({"heatmap": False})} if kind == "attention" else None,
                    timeout=300,
                )
            elif kind == "upload":
                reader = f"c{k}_{n}"
                r = s.put(
                    f"{server.url}/datastore/label",
                    params={"image": iid, "tag": "gaze"},
                    data={"params": json.dumps({"reader": reader})},
                    files={"label": ("g.csv", gaze_files[iid])},
                    timeout=300,
                )
                return r.status_code == 200, f"{r.status_code} {r.text[:200]}", f"{iid}/{reader}" if r.status_code == 200 else None
            elif kind == "info":
                r = s.get(f"{server.url}/info/", timeout=300)
            elif kind == "image_info":
                r = s.get(f"{server.url}/datastore/image/info", params={"image": iid}, timeout=300)
            else:
                r = s.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=300)
            return r.status_code == 200, f"{r.status_code} {r.text[:200]}", None

        # reference: reads on the idle server
        s0 = requests.Session()
        idle = defaultdict(list)
        for kind in ("attention", "localization", "info", "image_info", "stats") * 3:
            call(s0, kind, 0, 0)  # warm-up
        for n in range(30):
            for kind in ("info", "image_info", "stats"):
                t0 = time.perf_counter()
                ok, msg, _ = call(s0, kind, 0, n)
                assert ok, msg
                idle[kind].append(time.perf_counter() - t0)

        lat: dict[str, list[float]] = defaultdict(list)
        timeline: list[tuple[float, str, float]] = []
        errors: dict[str, list[str]] = defaultdict(list)
        acked: list[str] = []
        lock = threading.Lock()
        t_start = time.time()
        stop = t_start + args.seconds

        def client(k: int) -> None:
            s = requests.Session()
            rng = random.Random(k)
            n = 0
            while time.time() < stop:
                kind = rng.choice(MIX)
                t0 = time.perf_counter()
                try:
                    ok, msg, key = call(s, kind, k, n)
                except requests.RequestException as exc:
                    ok, msg, key = False, repr(exc), None
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        lat[kind].append(dt)
                        timeline.append((time.time() - t_start, kind, dt))
                        if key:
                            acked.append(key)
                    else:
                        errors[kind].append(msg)
                n += 1

        wall = run_threads(client, args.clients)

        # every acknowledged upload is stored: in the files and in the server's answers
        stored = set()
        for i in ids:
            f = studies / "images" / "labels" / "gaze" / f"{i}.json"
            if f.is_file():
                stored |= {f"{i}/{r['reader_id']}" for r in json.loads(f.read_text())["records"]}
        lost = sorted(set(acked) - stored)
        answered = set()
        for i in ids:
            answered |= {
                f"{i}/{r}"
                for r in requests.get(f"{server.url}/datastore/image/info", params={"image": i}, timeout=60).json().get("gaze", {}).get("readers", [])
            }
        lost_in_answer = sorted(set(acked) - answered)
        kinds = {}
        for kind in sorted(set(MIX)):
            kinds[kind] = {
                "requests": len(lat[kind]) + len(errors[kind]),
                "errors": len(errors[kind]),
                "p50_ms": pct(lat[kind], 50),
                "p95_ms": pct(lat[kind], 95),
                "first_errors": errors[kind][:3],
            }
            if kind in idle:
                kinds[kind]["idle_p50_ms"] = pct(idle[kind], 50)
                kinds[kind]["p50_vs_idle"] = kinds[kind]["p50_ms"] / kinds[kind]["idle_p50_ms"] if lat[kind] else None
            print(
                f"{kind:13s} {kinds[kind]['requests']:5d} requests, {kinds[kind]['errors']} errors, p50 {kinds[kind]['p50_ms'] or 0:7.1f} ms, "
                f"p95 {kinds[kind]['p95_ms'] or 0:7.1f} ms"
                + (f", idle p50 {kinds[kind]['idle_p50_ms']:.1f} ms (x{kinds[kind]['p50_vs_idle']:.1f} under load)" if kind in idle and lat[kind] else ""),
                flush=True,
            )
        total = sum(v["requests"] for v in kinds.values())
        n_err = sum(v["errors"] for v in kinds.values())
        out = {
            "clients": args.clients,
            "seconds": round(wall, 1),
            "images": len(ids),
            "requests": total,
            "errors": n_err,
            "throughput_rps": round((total - n_err) / wall, 2),
            "acknowledged_uploads": len(acked),
            "lost_uploads": len(lost),
            "lost_in_server_answer": len(lost_in_answer),
            "kinds": kinds,
            "machine": f"{__import__('os').cpu_count()} CPUs",
        }
        print(
            f"total: {total} requests in {wall:.0f} s ({out['throughput_rps']} req/s), {n_err} errors; "
            f"{len(acked)} uploads acknowledged, {len(lost)} missing from the files, {len(lost_in_answer)} missing from the server's answer",
            flush=True,
        )
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        _plot(timeline, Path(args.json).with_suffix(".png"), out)
        return 0 if n_err == 0 and not lost and not lost_in_answer else 1
    finally:
        server.stop()


def _plot(timeline: list[tuple[float, str, float]], path: Path, out: dict) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for kind in sorted({k for _, k, _ in timeline}):
        pts = [(t, dt * 1000) for t, k, dt in timeline if k == kind]
        ax.scatter(*zip(*pts), s=6, label=kind, alpha=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("time into the run (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(
        f"{out['clients']} clients x {out['seconds']:.0f} s: {out['requests']} requests, {out['errors']} errors, "
        f"{out['acknowledged_uploads']} uploads, {out['lost_uploads']} lost"
    )
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
