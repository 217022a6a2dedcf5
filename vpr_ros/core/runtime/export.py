"""Export a fitted global descriptor (backbone + aggregation with the map's vocabulary and PCA baked in)
as one ONNX graph with a dynamic batch, and find exports in the on-disk cache.

With `max_keypoints`, the graph is descriptors/joint.py's: one XFeat pass with four outputs, the
global descriptors and the local features' keypoints, descriptors and scores.

Exports are keyed by the descriptor's fingerprint (sha256 over preset, configuration, weights,
vocabulary and PCA), so a map and its export can never disagree: `<cache>/descriptor-<fp16>.onnx`
(`...-xfeat<N>.onnx` with N keypoints) plus a JSON sidecar that records the fingerprint, preset,
input size, output dimension, keypoints, outputs, opset and the torch and onnx versions. The cache
is `$VPR_ROS_CACHE` or `~/.cache/vpr_ros`.
"""

import json
import os
import time
import warnings
from pathlib import Path

import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.joint import OUTPUTS, DescriptorWithKeypoints

OPSET = 17
FORMAT = "vpr_ros.descriptor_onnx"


def cache_dir() -> Path:
    """Where exports and engines live: $VPR_ROS_CACHE, or ~/.cache/vpr_ros."""
    return Path(os.environ.get("VPR_ROS_CACHE") or Path.home() / ".cache" / "vpr_ros")


def onnx_path(fingerprint: str, folder: Path | None = None, max_keypoints: int = 0) -> Path:
    suffix = f"-xfeat{max_keypoints}" if max_keypoints else ""
    return (folder or cache_dir()) / f"descriptor-{fingerprint[:16]}{suffix}.onnx"


def read_export_metadata(path: Path) -> dict:
    meta_path = Path(path).with_suffix(".json")
    if not Path(path).is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"ONNX export {path} (and its {meta_path.name}) not found; run vpr_export")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a vpr_ros descriptor export (format {meta.get('format')!r})")
    return meta


def export_onnx(descriptor: GlobalDescriptor, path: Path | None = None, opset: int = OPSET,
                max_keypoints: int = 0) -> Path:
    """Write the descriptor as ONNX (input `images` B x 3 x H x W in [0, 1], output `descriptors` B x D,
    dynamic B; with max_keypoints, also the joint graph's local features) and its sidecar; the files
    appear whole (written aside, then renamed)."""
    import onnx

    fingerprint = descriptor.fingerprint()
    path = Path(path) if path is not None else onnx_path(fingerprint, max_keypoints=max_keypoints)
    module = DescriptorWithKeypoints(descriptor, max_keypoints) if max_keypoints else descriptor
    outputs = list(OUTPUTS if max_keypoints else OUTPUTS[:1])
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = descriptor.input_size
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{time.monotonic_ns()}")
    device = descriptor.device
    start = time.perf_counter()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # tracing bakes in Python branches such as "PCA fitted?": right, since an export is per fingerprint
            warnings.simplefilter("ignore")
            torch.onnx.export(module.cpu().eval(), (torch.rand(2, 3, height, width),), str(tmp),
                              input_names=["images"], output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]},
                              opset_version=opset, dynamo=False)
        onnx.checker.check_model(str(tmp))
        meta = {"format": FORMAT, "fingerprint": fingerprint, "preset": descriptor.preset,
                "input_size": [width, height], "dim": descriptor.dim, "max_keypoints": int(max_keypoints),
                "outputs": outputs, "opset": opset,
                "torch": torch.__version__, "onnx": onnx.__version__}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)
        descriptor.to(device)
    LOGGER.info("exported descriptor %s (%s, %d-d) to %s in %.1f s", fingerprint[:12], descriptor.preset,
                descriptor.dim, path, time.perf_counter() - start)
    return path


def ensure_onnx(descriptor: GlobalDescriptor, folder: Path | None = None, fingerprint: str | None = None,
                max_keypoints: int = 0) -> Path:
    """The cached export of this descriptor (fingerprint: its precomputed fingerprint; max_keypoints: the
    joint graph), exported first when missing or unreadable."""
    fingerprint = fingerprint or descriptor.fingerprint()
    path = onnx_path(fingerprint, folder, max_keypoints)
    try:
        meta = read_export_metadata(path)
        if meta["fingerprint"] == fingerprint and meta.get("max_keypoints", 0) == max_keypoints:
            return path
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        pass
    return export_onnx(descriptor, path, max_keypoints=max_keypoints)
