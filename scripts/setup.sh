#!/usr/bin/env bash
# Idempotent environment setup into ./.venv. Re-running with unchanged dependency
# files is a no-op (a stamp holds the hash of pyproject.toml and this script).
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh test
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
extras="${1:-}"
py="${PYTHON:-python3}"
venv="$root/.venv"
stamp="$venv/.gazerad-setup-${extras:-base}"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import gazerad" 2>/dev/null; then
  echo "[setup] .venv is up to date (${extras:-base})"
  exit 0
fi

"$py" -c 'import sys; assert sys.version_info >= (3, 10), "GazeRad needs Python >= 3.10, found " + sys.version.split()[0]'
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
# a first install is about 8 GB (9 GB with the test extra; torch's CUDA build is 5 GB of it):
# say so before pip stops half-way with "No space left on device"
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  free_gb=$(df -Pk "$venv" | awk 'NR == 2 {printf "%d", $4 / 1048576}')
  if [ "${free_gb:-0}" -lt 10 ]; then
    echo "[setup] warning: ${free_gb} GB free on the disk holding $venv; a first setup needs about 8 GB (9 GB with the test extra)" >&2
  fi
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)
# numpy<2: monailabel's pydicom-seg and numpymaxflow require it; pyradiomics must be built against it.
"${pip[@]}" --upgrade "pip>=23" "setuptools>=64" wheel versioneer "numpy>=1.24,<2"
# pyradiomics ships no wheels and its isolated build fails: build it against the venv's numpy.
if ! "$venv/bin/python" -c "import radiomics" 2>/dev/null; then
  "${pip[@]}" --no-build-isolation "pyradiomics>=3.0.1"
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
"${pip[@]}" -e "$spec"
"$venv/bin/python" -c "import gazerad, monai, monailabel, radiomics, torch; print('[setup] gazerad', gazerad.__version__, '| monai', monai.__version__, '| monailabel', monailabel.__version__, '| torch', torch.__version__)"
echo "$want" > "$stamp"
