"""Descriptor backends: the same fitted descriptor run by torch, by ONNX Runtime, or as a TensorRT
engine (tensorrt.py). Each takes B x 3 x H x W float images in [0, 1] and returns B x D
float32 unit vectors, and raises ValueError on non-finite output, as GlobalDescriptor.describe does.

Asking for a device the backend cannot use here (CUDA without a GPU or without onnxruntime-gpu) is
a ValueError naming what is missing, never a silent CPU run.
"""

import copy
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.inputs.images import to_float_nchw
from vpr_ros.core.runtime.devices import GraphedCall, resolve_device, resolve_precision
from vpr_ros.core.runtime.export import ensure_onnx, read_export_metadata


class TorchBackend:
    """The descriptor module itself on a torch device.

    On CUDA: the backbone runs in `precision` (fp16 by default, under autocast; the aggregation
    (VLAD, GeM, optimal transport, ...) and PCA stay float32) and, with `cuda_graphs`, each batch size is captured once as a CUDA graph and
    replayed, the input staged through pinned host memory. On the CPU it is the plain module in fp32.
    """

    name = "torch"

    def __init__(self, descriptor: GlobalDescriptor, device: str = "cpu", precision: str = "auto",
                 cuda_graphs: bool = True):
        device = resolve_device(device)
        self.precision = resolve_precision(precision, device)
        # on CUDA a private copy: a captured graph reads the weights at fixed addresses, so nobody else may move them
        self.descriptor = copy.deepcopy(descriptor).to(device) if device.startswith("cuda") else descriptor.to(device)
        self.device = device
        self.input_size, self.dim = descriptor.input_size, descriptor.dim
        self._graphed = GraphedCall(self._forward) if cuda_graphs and device.startswith("cuda") else None
        self._pinned: dict[tuple, torch.Tensor] = {}

    @property
    def label(self) -> str:
        extra = f", {self.precision}" + (", CUDA graphs" if self._graphed is not None else "")
        return f"torch/{self.device}" + (extra if self.device.startswith("cuda") else "")

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        images = to_float_nchw(images)  # a uint8 batch is converted inside the graph
        fp16 = self.precision == "fp16"  # fp32 means fp32: no TF32 convolutions either
        with torch.autocast("cuda", dtype=torch.float16, enabled=fp16), \
                torch.backends.cudnn.flags(enabled=True, allow_tf32=fp16):
            feats = self.descriptor.features(images)
        feats = tuple(f.float() for f in feats) if isinstance(feats, tuple) else feats.float()
        return self.descriptor.aggregate(feats)

    @torch.inference_mode()
    def describe(self, images: torch.Tensor) -> np.ndarray:
        if not self.device.startswith("cuda"):
            return self.descriptor.describe(images)
        if images.device.type == "cpu":  # pinned staging makes the upload asynchronous and faster
            key = (tuple(images.shape), images.dtype)
            if key not in self._pinned:
                self._pinned[key] = torch.empty(images.shape, dtype=images.dtype, pin_memory=True)
            images = self._pinned[key].copy_(images).to(self.device, non_blocking=True)
        else:
            images = images.to(self.device)
        out = (self._graphed(images) if self._graphed is not None else self._forward(images)).cpu().numpy()
        if not np.isfinite(out).all():
            raise ValueError("descriptor is not finite (NaN or infinity); the input image is unusable")
        return out


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
        array = np.ascontiguousarray(to_float_nchw(images.detach().cpu()).numpy(), dtype=np.float32)
        out = self.session.run(None, {"images": array})[0]
        if not np.isfinite(out).all():
            raise ValueError("descriptor is not finite (NaN or infinity); the input image is unusable")
        return out


def _torch(descriptor, device, cache, precision, cuda_graphs):
    return TorchBackend(descriptor, device, precision, cuda_graphs)


def _onnxruntime(descriptor, device, cache, precision, cuda_graphs):
    fingerprint = descriptor.fingerprint()
    return OnnxRuntimeBackend(ensure_onnx(descriptor, cache, fingerprint), fingerprint, device)


def _tensorrt(descriptor, device, cache, precision, cuda_graphs):
    from vpr_ros.core.runtime.tensorrt import TensorRTBackend  # tensorrt is imported only when asked for

    return TensorRTBackend(descriptor, device, "fp16" if precision == "auto" else precision, cache=cache)


# name -> factory(descriptor, device, cache, precision, cuda_graphs); config.BACKEND_NAMES lists the names
BACKENDS = {"torch": _torch, "onnxruntime": _onnxruntime, "tensorrt": _tensorrt}


def make_backend(name: str, descriptor: GlobalDescriptor, device: str = "cpu", cache: Path | None = None,
                 precision: str = "auto", cuda_graphs: bool = True):
    """A backend by name for a fitted descriptor; onnxruntime exports to the cache on first use.
    precision and cuda_graphs apply to torch on CUDA (TensorRT builds fp16 engines by default)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown descriptor backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](descriptor, device, cache, precision, cuda_graphs)
