#!/bin/bash
# vpr_eval --dataset on Corridor with two checkouts in one session: OLD (e.g. a worktree of 3e2cdc6,
# whose vpr_eval ran its own per-query loop) and this one (Localizer.process). Recalls must agree.
#   git worktree add /tmp/base 3e2cdc6 && bash benchmarks/eval_paths.sh /tmp/base
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OLD=${1:?usage: eval_paths.sh OLD_CHECKOUT}
PY=$REPO/.venv/bin/python
DATA=${VPR_ROS_DATA:-$REPO/../shared/data}/corridor
cd "$(mktemp -d)"  # not the repository: its editable install would win over PYTHONPATH
run() { local tree=$1; shift; echo "== $tree $*"; PYTHONPATH=$tree "$PY" -m vpr_ros.tools.eval --dataset "$DATA" --quiet "$@" \
          | grep -E "global|reranked|descriptor|match|total"; }
run "$OLD"
run "$REPO" --rerank off
run "$OLD" --rerank xfeat-lighterglue --top-k 5
run "$REPO" --rerank xfeat-lighterglue --top-k 5
run "$REPO"
