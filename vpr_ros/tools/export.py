"""`vpr_export MAP`: export a map's fitted descriptor to ONNX and check ONNX Runtime against torch.

    vpr_export MAP [--out FILE] [--check 8] [--engine [--precision fp16]]

The export is one graph (backbone, VLAD vocabulary or GeM, PCA) with a dynamic batch, written to the
cache (`$VPR_ROS_CACHE` or ~/.cache/vpr_ros, keyed by the descriptor's fingerprint) unless --out is
given; the node's `backend:=onnxruntime` finds it there (or exports it on first use). The check runs
up to --check of the map's own images (random images when they can no longer be read) through both
and fails when the largest relative difference exceeds --tolerance (1e-3). With --engine, a TensorRT
engine is also built into the cache (where TensorRT and a CUDA GPU exist; an error saying which is
missing elsewhere) and compared the same way (FP16 differs more; the figure is printed).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.inputs.images import batch_to_tensor
from vpr_ros.core.build.sources import SourceLoader
from vpr_ros.core.map.store import VPRMap
from vpr_ros.core.runtime.backends import OnnxRuntimeBackend
from vpr_ros.core.runtime.export import export_onnx, onnx_path


def check_agreement(vpr_map: VPRMap, backend, count: int, seed: int = 0) -> dict:
    """Largest relative L2 difference between torch's and `backend`'s descriptors of `count` images."""
    load = SourceLoader()
    images, kind = [], "map images"
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(vpr_map), size=min(count, len(vpr_map)), replace=False) if len(vpr_map) else []
    try:
        images = [load(vpr_map.frames.sources[i]) for i in picks]
    except (FileNotFoundError, ValueError):
        images = []
    if not images:
        kind = "random images"
        width, height = vpr_map.descriptor.input_size
        images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(max(count, 1))]
    tensor = batch_to_tensor(images, vpr_map.descriptor.input_size)
    reference = vpr_map.descriptor.describe(tensor)
    start = time.perf_counter()
    got = backend.describe(tensor)
    backend_ms = (time.perf_counter() - start) * 1e3 / len(images)
    relative = np.linalg.norm(got - reference, axis=1) / np.maximum(np.linalg.norm(reference, axis=1), 1e-12)
    return {"images": len(images), "kind": kind, "max_relative": float(relative.max()),
            "max_abs": float(np.abs(got - reference).max()), "ms_per_image": backend_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_export", description=__doc__.splitlines()[0])
    parser.add_argument("map", type=Path, help="map directory")
    parser.add_argument("--out", type=Path, help="ONNX file to write (default: the cache)")
    parser.add_argument("--check", type=int, default=8, help="images to compare ONNX Runtime with torch on (0: none)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest relative difference allowed (ONNX)")
    parser.add_argument("--engine", action="store_true", help="also build the TensorRT engine (needs TensorRT and CUDA)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="with --engine")
    parser.add_argument("--checkpoint", type=Path,
                        help="maps of a published-model preset: its weights file, when not where the map records it")
    args = parser.parse_args(argv)
    try:
        vpr_map = VPRMap.load(args.map, checkpoint=args.checkpoint)
        path = export_onnx(vpr_map.descriptor, args.out or onnx_path(vpr_map.descriptor.fingerprint()))
        print(f"{args.map}: descriptor {vpr_map.descriptor.preset} ({vpr_map.descriptor.dim}-d, fingerprint "
              f"{vpr_map.descriptor.fingerprint()[:12]}) -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
        if args.check > 0:
            with torch.inference_mode():
                result = check_agreement(vpr_map, OnnxRuntimeBackend(path, vpr_map.descriptor.fingerprint()),
                                         args.check)
            ok = result["max_relative"] <= args.tolerance
            print(f"  ONNX Runtime vs torch on {result['images']} {result['kind']}: max relative difference "
                  f"{result['max_relative']:.2e} ({'ok' if ok else 'ABOVE'} tolerance {args.tolerance:g}), "
                  f"{result['ms_per_image']:.0f} ms per image on ONNX Runtime CPU")
            if not ok:
                return 1
        if args.engine:
            from vpr_ros.core.runtime.tensorrt import TensorRTBackend

            engine = TensorRTBackend(vpr_map.descriptor, "cuda", args.precision)
            print(f"  TensorRT {args.precision} engine: {engine.path}")
            if args.check > 0:
                with torch.inference_mode():
                    result = check_agreement(vpr_map, engine, args.check)
                print(f"  TensorRT vs torch on {result['images']} {result['kind']}: max relative difference "
                      f"{result['max_relative']:.2e}, {result['ms_per_image']:.2f} ms per image")
    except (FileNotFoundError, ValueError) as exc:  # MapError is a ValueError
        print(f"vpr_export: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
