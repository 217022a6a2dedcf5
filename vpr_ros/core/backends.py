"""Descriptor backends: the same fitted descriptor run by torch, by ONNX Runtime, or as a TensorRT
engine (tensorrt_engine.py). Each takes B x 3 x H x W float images in [0, 1] and returns B x D
float32 unit vectors, and raises ValueError on non-finite output, as GlobalDescriptor.describe does.

Asking for a device the backend cannot use here (CUDA without a GPU or without onnxruntime-gpu) is
a ValueError naming what is missing, never a silent CPU run.
"""

from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.descriptors import GlobalDescriptor
from vpr_ros.core.export import ensure_onnx, read_export_metadata

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class TorchBackend:
    """The descriptor module itself on a torch device."""

    name = "torch"

    def __init__(self, descriptor: GlobalDescriptor, device: str = "cpu"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but torch sees no CUDA GPU here")
        self.descriptor, self.device = descriptor.to(device), device
        self.input_size, self.dim = descriptor.input_size, descriptor.dim

    @property
    def label(self) -> str:
        return f"torch/{self.device}"

    def describe(self, images: torch.Tensor) -> np.ndarray:
        return self.descriptor.describe(images)


class OnnxRuntimeBackend:
    """An exported descriptor graph in an ONNX Runtime session (CPU, or CUDA with onnxruntime-gpu)."""

    name = "onnxruntime"

    def __init__(self, path: Path, fingerprint: str, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        meta = read_export_metadata(path)
        if meta["fingerprint"] != fingerprint:
            raise ValueError(f"ONNX export {path} belongs to descriptor {meta['fingerprint'][:12]}, not "
                             f"{fingerprint[:12]}; export this map's descriptor with vpr_export")
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(f"device {device!r} was asked for but this onnxruntime has no CUDA provider "
                                 f"({ort.get_available_providers()}); install onnxruntime-gpu or use device cpu")
            providers = [("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)})]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"unknown device {device!r} for onnxruntime; use cpu or cuda[:N]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.path, self.device = Path(path), device
        self.input_size, self.dim = tuple(meta["input_size"]), int(meta["dim"])

    @property
    def label(self) -> str:
        return f"onnxruntime/{self.device}"

    def describe(self, images: torch.Tensor) -> np.ndarray:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        out = self.session.run(None, {"images": array})[0]
        if not np.isfinite(out).all():
            raise ValueError("descriptor is not finite (NaN or infinity); the input image is unusable")
        return out


def make_backend(name: str, descriptor: GlobalDescriptor, device: str = "cpu", cache: Path | None = None):
    """A backend by name for a fitted descriptor; onnxruntime exports to the cache on first use."""
    if name == "torch":
        return TorchBackend(descriptor, device)
    if name == "onnxruntime":
        fingerprint = descriptor.fingerprint()
        return OnnxRuntimeBackend(ensure_onnx(descriptor, cache, fingerprint), fingerprint, device)
    if name == "tensorrt":
        from vpr_ros.core.tensorrt_engine import TensorRTBackend

        return TensorRTBackend(descriptor, device, cache=cache)
    raise ValueError(f"unknown descriptor backend {name!r}; choose one of {BACKENDS}")
