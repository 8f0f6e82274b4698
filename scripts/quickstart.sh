#!/usr/bin/env bash
# Command 1 of the README: set everything up in ./.venv (idempotent) and run the main job on
# the sample data: 200 synthetic chest studies with simulated radiologist gaze (+ a preview
# picture), the first models (classification trained on them, a few minutes on a laptop
# CPU, once; attention and localisation copied from the shipped weights that
# scripts/make_weights.py rebuilds, else trained too), then the MONAI Label server with
# GazeRad's app on 127.0.0.1:8000.
# GAZERAD_NO_SERVE=1 stops after preparing studies and models. Extra arguments go to
# `gazerad serve` (e.g. --port 8010).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export PATH="$root/.venv/bin:$PATH"   # the monailabel launcher runs `python` from PATH
out="${GAZERAD_STUDIES:-$root/studies/sample}"
if [ ! -f "$out/labels.csv" ]; then
  gazerad synth --out "$out" --n 200 --seed 0 --overwrite --preview "$out/preview.png"
fi
echo "Study set: $out   (labels.csv, BBox_List_2017.csv, images/, reflacx/main_data/; look at preview.png)"
if [ "${GAZERAD_NO_SERVE:-0}" = "1" ]; then
  exec gazerad serve --studies "$out" --prepare-only "$@"
fi
exec gazerad serve --studies "$out" "$@"
