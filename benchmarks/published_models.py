"""Benchmark of the published VPR architectures: prints figures; not a test.

Per model (one preset per architecture and backbone; latency does not depend on the weights, so
they run with seeded random weights): parameters, descriptor size, torch and ONNX Runtime latency
for one frame (batch 1, p50/p95 after warm-up, the preset's input size, a real Corridor image when
../shared/data is present), ONNX export time and file size, and the ONNX/torch agreement.

    .venv/bin/python benchmarks/published_models.py [--repeats 10] [--presets salad-dinov2-8448 ...]
        [--device cuda] [--json out.json]

--device cuda also times torch on the GPU (fp16 backbone, CUDA graphs: the node's configuration).
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.inputs.images import read_image
from vpr_ros.core.inputs.images import batch_to_tensor
from vpr_ros.core.runtime.backends import OnnxRuntimeBackend, TorchBackend
from vpr_ros.core.runtime.export import export_onnx

from common import CORRIDOR  # benchmarks/ is on sys.path
from retrieval import timed

DEFAULT_PRESETS = ["cosplace-r18-512", "cosplace-r50-2048", "cosplace-r101-2048", "mixvpr-r50-4096",
                   "salad-dinov2-8448", "boq-r50-16384", "boq-dinov2-12288", "megaloc-dinov2-8448"]


def frame() -> np.ndarray:
    path = CORRIDOR / "query" / "0000040.jpg"
    if path.is_file():
        return read_image(path)
    return np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)


def measure(preset: str, repeats: int, device: str | None) -> dict:
    descriptor = GlobalDescriptor(preset, random_weights=True)
    images = batch_to_tensor([frame()], descriptor.input_size)
    row = {"preset": preset, "dim": descriptor.dim, "input_size": list(descriptor.input_size),
           "params_m": sum(p.numel() for p in descriptor.parameters()) / 1e6,
           "torch_cpu_ms": timed(lambda: descriptor.describe(images), repeats, warmup=2)}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = export_onnx(descriptor, Path(folder) / "descriptor.onnx")
        row["export_s"] = time.perf_counter() - start
        row["onnx_mb"] = path.stat().st_size / 1e6
        backend = OnnxRuntimeBackend(path, descriptor.fingerprint())
        row["onnxruntime_cpu_ms"] = timed(lambda: backend.describe(images), repeats, warmup=2)
        got, want = backend.describe(images), descriptor.describe(images)
        row["onnx_rel_diff"] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        del backend
    if device:
        gpu = TorchBackend(descriptor, device, "auto", cuda_graphs=True)
        row["torch_gpu_ms"] = timed(lambda: gpu.describe(images), repeats * 5, warmup=5)
        row["gpu_cosine_to_cpu"] = float((gpu.describe(images) * descriptor.describe(images)).sum())
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", help="also time torch on this CUDA device (cuda or cuda:N)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    print(f"{platform.node()}: {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")
    header = (f"{'preset':22} {'dim':>6} {'input':>8} {'params':>7} {'torch cpu p50/p95':>18} "
              f"{'ort cpu p50/p95':>16} {'export':>7} {'onnx MB':>8} {'ort rel':>8}")
    print(header + ("  torch gpu p50   cos" if args.device else ""))
    rows = []
    for preset in args.presets:
        row = measure(preset, args.repeats, args.device)
        rows.append(row)
        t, o = row["torch_cpu_ms"], row["onnxruntime_cpu_ms"]
        line = (f"{preset:22} {row['dim']:6d} {'x'.join(map(str, row['input_size'])):>8} {row['params_m']:6.1f}M "
                f"{t['p50']:8.1f} / {t['p95']:6.1f} {o['p50']:7.1f} / {o['p95']:6.1f} {row['export_s']:6.1f}s "
                f"{row['onnx_mb']:8.1f} {row['onnx_rel_diff']:8.1e}")
        if args.device:
            line += f"  {row['torch_gpu_ms']['p50']:10.2f} {row['gpu_cosine_to_cpu']:.4f}"
        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
