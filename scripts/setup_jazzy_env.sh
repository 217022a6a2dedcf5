#!/usr/bin/env bash
# Create or update .venv-jazzy: the ROS 2 Jazzy wheels (requirements-jazzy.txt), the main .venv's
# non-ROS packages linked in (scripts/link_site_packages.py), vpr_ros itself (editable) and
# vpr_ros_interfaces built against Jazzy. CI runs the node, interface and bag tests in it, so that
# they pass on Jazzy as well as Kilted. Needs .venv (make setup) first. Safe to run again.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAIN="${VPR_ROS_VENV:-$REPO/.venv}"
VENV="${VPR_ROS_JAZZY_VENV:-$REPO/.venv-jazzy}"
PYTHON="$MAIN/bin/python"
cd "$REPO"

if [ ! -x "$PYTHON" ]; then
  echo "error: $MAIN is missing; run 'make setup' first" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  # the same interpreter as the main environment, so that its compiled packages fit
  "$(readlink -f "$PYTHON")" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "== installing the ROS 2 Jazzy wheels"
"${PIP[@]}" install --quiet -r requirements-jazzy.txt 2> >(grep -v "^WARNING: Location" >&2)
echo "== linking the main environment's non-ROS packages"
"$VENV/bin/python" scripts/link_site_packages.py --source "$MAIN"
"${PIP[@]}" install --quiet --no-deps --no-build-isolation --editable . 2> >(grep -v "^WARNING: Location" >&2)

echo "== building vpr_ros_interfaces against Jazzy into $VENV"
"$VENV/bin/python" scripts/build_interfaces.py

echo "== checking the environment"
"$VENV/bin/python" - <<'PY'
import importlib.metadata, sys
import rclpy, vpr_ros_interfaces.msg, torch, faiss, rosbags, vpr_ros  # noqa: F401
version = importlib.metadata.version("ros-rclpy")
assert version.startswith("7."), f"rclpy {version} is not Jazzy's"
assert rclpy.__file__.startswith(sys.prefix), f"rclpy comes from {rclpy.__file__}, not {sys.prefix}"
print(f"rclpy {version} (Jazzy) from {rclpy.__file__}")
PY
echo "== $VENV is ready"
