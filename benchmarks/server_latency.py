"""Server latency and load: attention and localisation infer over HTTP vs. the same model in-process.

Starts a real ``monailabel start_server`` with GazeRad's app on 127.0.0.1 over a small
study set with 512 x 512 and 2048 x 2048 X-rays, trains (or reuses) the two models, then:

1. p50/p95 latency of ``POST /infer/attention`` (``heatmap: false``) and
   ``POST /infer/localization`` (``output=json``, keep-alive session) per image size, against
   the same service objects called in-process on the same files (reference measured in the
   same run, one phase each): overhead ratio = HTTP / in-process. Also the attention
   request with its heatmap file (``output=image``), the way a viewer asks for it.
2. ``--clients`` concurrent clients hammering both endpoints for ``--seconds``: requests,
   throughput, p50/p95, errors (goal: zero).

    python benchmarks/server_latency.py [--reps 30] [--clients 8] [--seconds 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mass_studies import mass_boxes, mass_studies, simulated_gaze_csv  # noqa: E402
from server_helpers import Server, run_threads  # noqa: E402


def pct(v: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(v) * 1000.0, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workdir", default=None, help="reuse a folder (studies and trained models are kept)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="gazerad-bench-"))
    studies = work / "masses"
    if not studies.exists():
        mass_studies(studies, n=64, seed=3)
        # large images: the same chests upsampled to 512 and 2048 px
        for side in (512, 2048):
            img = Image.open(studies / "images" / "00060.png")
            img.resize((side, side), Image.BILINEAR).save(studies / "images" / f"big{side}.png")
    server = Server(studies / "images", work).start()
    try:
        if not (server.model_dir / "attention.pt").is_file():
            boxes = mass_boxes(studies)
            for k, p in enumerate(sorted((studies / "images").glob("0*.png"))):
                f = simulated_gaze_csv(work / "g.csv", boxes.get(p.name), seed=k)
                requests.put(
                    f"{server.url}/datastore/label", params={"image": p.stem, "tag": "gaze"}, files={"label": ("g.csv", f.read_bytes())}, timeout=60
                ).raise_for_status()
            print("training attention ...", flush=True)
            assert server.train("attention", {"epochs": 4, "input_size": 64, "device": "cpu"})["status"] == "DONE"
        if not (server.model_dir / "localization.pt").is_file():
            print("training localization ...", flush=True)
            assert server.train("localization", {"epochs": 4, "device": "cpu"})["status"] == "DONE"

        from gazerad.serving.infer import AttentionService, LocalizationService

        services = {
            "attention": AttentionService(server.model_dir / "attention.pt", "cpu"),
            "localization": LocalizationService(server.model_dir / "localization.pt", "cpu"),
        }
        rows = []
        for side in (512, 2048):
            image_id = f"big{side}"
            path = studies / "images" / f"{image_id}.png"
            # a keep-alive session, as an interactive client keeps; JSON answers (attention:
            # no heatmap file), so both sides do the same model work; then the attention
            # heatmap file as a viewer asks for it, against writing it in-process
            session = requests.Session()
            heat_tmp = work / "inproc_heat.nrrd"
            cases = [
                (
                    "attention",
                    lambda: services["attention"](path, None),
                    lambda: session.post(
                        f"{server.url}/infer/attention",
                        params={"image": image_id, "output": "json"},
                        data={"params": json.dumps({"heatmap": False})},
                        timeout=120,
                    ),
                ),
                (
                    "localization",
                    lambda: services["localization"](path),
                    lambda: session.post(f"{server.url}/infer/localization", params={"image": image_id, "output": "json"}, timeout=120),
                ),
                (
                    "attention+file",
                    lambda: services["attention"](path, heat_tmp),
                    lambda: session.post(f"{server.url}/infer/attention", params={"image": image_id, "output": "image"}, timeout=120),
                ),
            ]
            for model, call, http in cases:
                for _ in range(3):  # warm-up: load weights, caches
                    call()
                    http().raise_for_status()
                # the two sides in separate phases: right after an in-process call this
                # process's OpenMP threads keep spinning for a while and, on a 2-core
                # machine, would slow the server's next request
                t_in, t_http = [], []
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    call()
                    t_in.append(time.perf_counter() - t0)
                time.sleep(1.0)
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    r = http()
                    t_http.append(time.perf_counter() - t0)
                    r.raise_for_status()
                row = {
                    "model": model,
                    "size": side,
                    "inproc_p50_ms": pct(t_in, 50),
                    "inproc_p95_ms": pct(t_in, 95),
                    "http_p50_ms": pct(t_http, 50),
                    "http_p95_ms": pct(t_http, 95),
                }
                row["overhead_p50"] = row["http_p50_ms"] / row["inproc_p50_ms"]
                row["overhead_p95"] = row["http_p95_ms"] / row["inproc_p95_ms"]
                rows.append(row)
                print(
                    f"{model:14s} {side:4d} px  in-process p50 {row['inproc_p50_ms']:7.1f} ms p95 {row['inproc_p95_ms']:7.1f} ms | "
                    f"HTTP p50 {row['http_p50_ms']:7.1f} ms p95 {row['http_p95_ms']:7.1f} ms | overhead x{row['overhead_p50']:.2f} (p50) "
                    f"x{row['overhead_p95']:.2f} (p95)",
                    flush=True,
                )

        # load: N clients alternate attention / localisation on the 512 px image
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop = time.time() + args.seconds

        def client(k: int) -> None:
            s = requests.Session()
            i = k
            while time.time() < stop:
                model = ("attention", "localization")[i % 2]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = s.post(f"{server.url}/infer/{model}", params={"image": "big512", "output": "json"}, timeout=300)
                    ok = r.status_code == 200
                    msg = f"{r.status_code} {r.text[:200]}"
                except requests.RequestException as exc:
                    ok, msg = False, repr(exc)
                with lock:
                    (lat.append(time.perf_counter() - t0) if ok else errors.append(msg))

        wall = run_threads(client, args.clients)
        load = {
            "clients": args.clients,
            "seconds": wall,
            "requests": len(lat) + len(errors),
            "errors": len(errors),
            "throughput_rps": len(lat) / wall,
            "p50_ms": pct(lat, 50) if lat else None,
            "p95_ms": pct(lat, 95) if lat else None,
            "first_errors": errors[:3],
        }
        print(
            f"load: {args.clients} clients x {wall:.0f} s: {load['requests']} requests, {load['errors']} errors, "
            f"{load['throughput_rps']:.2f} req/s, p50 {load['p50_ms']:.0f} ms, p95 {load['p95_ms']:.0f} ms",
            flush=True,
        )
        if args.json:
            Path(args.json).write_text(json.dumps({"latency": rows, "load": load}, indent=1))
        return 0 if not errors else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
