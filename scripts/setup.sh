#!/usr/bin/env bash
# Installs everything the project needs on Debian 12 / Ubuntu: QGIS from the distribution's
# packages, a virtual environment that sees QGIS's Python bindings, and the Python packages.
# Idempotent: each step is skipped when already done.
#   TORCH_SPEC   pip requirement for torch (default torch==2.13.0; e.g. "torch" for the newest CUDA build)
set -euo pipefail
VENV="${1:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in qgis python3-qgis qgis-providers python3-venv xvfb; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo ">> installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo ">> creating $VENV from /usr/bin/python3 (with system site packages, so it sees qgis and PyQt5)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

echo ">> installing Python packages ($TORCH_SPEC)"
"$VENV/bin/python" -m pip install -q --upgrade "pip>=23" 
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC" -e ".[test,onnx]"
"$VENV/bin/python" - <<'PY'
import numpy, rasterio, shapely, skimage, torch, pyogrio
print(f">> ready: numpy {numpy.__version__}, rasterio {rasterio.__version__}, shapely {shapely.__version__}, "
      f"scikit-image {skimage.__version__}, pyogrio {pyogrio.__version__}, torch {torch.__version__}")
PY
