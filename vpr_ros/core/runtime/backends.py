"""Descriptor backends: the same fitted descriptor run by torch, by ONNX Runtime, or as a TensorRT
engine (tensorrt.py). Each takes B x 3 x H x W images (uint8, or float in [0, 1]): `describe` returns
B x D float32 unit vectors and raises ValueError on non-finite output, as GlobalDescriptor.describe
does; `encode` returns an Encoded, which with `max_keypoints` (torch and ONNX Runtime) also holds
XFeat's local features from the same backbone pass (descriptors/joint.py).

`auto` picks the fastest backend that is correct here: torch on CUDA; on the CPU ONNX Runtime (about
twice as fast there) when it is installed and its export agrees with torch on probe images, torch
otherwise, saying why.

Asking for a device the backend cannot use here (CUDA without a GPU or without onnxruntime-gpu) is
a ValueError naming what is missing, never a silent CPU run.
"""

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.descriptors.joint import OUTPUTS, DescriptorWithKeypoints, Encoded
from vpr_ros.core.inputs.images import to_float_nchw
from vpr_ros.core.runtime.devices import GraphedCall, resolve_device, resolve_precision
from vpr_ros.core.runtime.export import ensure_onnx, read_export_metadata
from vpr_ros.core.runtime.threads import cpu_threads


def _encoded(outputs: list[np.ndarray]) -> Encoded:
    if not np.isfinite(outputs[0]).all():
        raise ValueError("descriptor is not finite (NaN or infinity); the input image is unusable")
    return Encoded(*outputs)


class TorchBackend:
    """The descriptor module itself on a torch device.

    On CUDA: the backbone runs in `precision` (fp16 by default, under autocast; the aggregation
    (VLAD, GeM, optimal transport, ...), the sparse head and PCA stay float32) and, with
    `cuda_graphs`, each batch size is captured once as a CUDA graph and replayed, the input staged
    through pinned host memory. On the CPU it is the plain module in fp32. With `compile` the pass is
    compiled by torch.compile (Inductor) before capture; off by default until a GPU measurement shows it
    faster than the captured eager pass (benchmarks/gpu_query.py compares the two).
    """

    name = "torch"

    def __init__(self, descriptor: GlobalDescriptor, device: str = "cpu", precision: str = "auto",
                 cuda_graphs: bool = True, max_keypoints: int = 0, compile: bool = False):
        device = resolve_device(device)
        self.precision = resolve_precision(precision, device)
        # on CUDA a private copy: a captured graph reads the weights at fixed addresses, so nobody else may move them
        self.descriptor = copy.deepcopy(descriptor).to(device) if device.startswith("cuda") else descriptor.to(device)
        self.joint = DescriptorWithKeypoints(self.descriptor, max_keypoints).to(device) if max_keypoints else None
        self.device, self.max_keypoints = device, int(max_keypoints)
        self.input_size, self.dim = descriptor.input_size, descriptor.dim
        if compile:  # Inductor kernels (Triton on CUDA, C++ on the CPU) for the whole pass; compiled on first call
            self.forward = torch.compile(self.forward, dynamic=False)
        self.compiled = bool(compile)
        self._graphed = GraphedCall(self.forward) if cuda_graphs and device.startswith("cuda") else None
        self._pinned: dict[tuple, torch.Tensor] = {}

    @property
    def label(self) -> str:
        extra = (f", {self.precision}" + (", torch.compile" if self.compiled else "")
                 + (", CUDA graphs" if self._graphed is not None else ""))
        return f"torch/{self.device}" + (extra if self.device.startswith("cuda") else "")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """B x 3 x H x W (uint8 or float) on the backend's device -> its outputs as device tensors
        (descriptors, then with the joint graph keypoints, local descriptors, scores), nothing read back."""
        images = to_float_nchw(images)  # a uint8 batch is converted inside the graph
        fp16 = self.precision == "fp16"  # fp32 means fp32: no TF32 convolutions either
        dense = self.joint.dense if self.joint is not None else self.descriptor.features
        with torch.autocast("cuda", dtype=torch.float16, enabled=fp16), \
                torch.backends.cudnn.flags(enabled=True, allow_tf32=fp16):
            feats = dense(images)
        feats = tuple(f.float() for f in feats) if isinstance(feats, tuple) else feats.float()
        if self.joint is not None:
            return self.joint.heads(*feats)
        return (self.descriptor.aggregate(feats),)

    def upload(self, images: torch.Tensor) -> torch.Tensor:
        """A host batch onto the backend's device (through pinned memory on CUDA, asynchronously)."""
        if not self.device.startswith("cuda"):
            return images
        if images.device.type == "cpu":  # pinned staging makes the upload asynchronous and faster
            key = (tuple(images.shape), images.dtype)
            if key not in self._pinned:
                self._pinned[key] = torch.empty(images.shape, dtype=images.dtype, pin_memory=True)
            return self._pinned[key].copy_(images).to(self.device, non_blocking=True)
        return images.to(self.device)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> Encoded:
        images = self.upload(images)
        outputs = self._graphed(images) if self._graphed is not None else self.forward(images)
        return _encoded([out.float().cpu().numpy() for out in outputs])

    def describe(self, images: torch.Tensor) -> np.ndarray:
        return self.encode(images).descriptors


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
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        # threads that spin between operators take the cores a busy neighbour needs (docs/benchmarks.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.path, self.device = Path(path), device
        self.input_size, self.dim = tuple(meta["input_size"]), int(meta["dim"])
        self.max_keypoints = int(meta.get("max_keypoints", 0))
        self._outputs = list(OUTPUTS if self.max_keypoints else OUTPUTS[:1])

    @property
    def label(self) -> str:
        return f"onnxruntime/{self.device}"

    def encode(self, images: torch.Tensor) -> Encoded:
        array = np.ascontiguousarray(to_float_nchw(images.detach().cpu()).numpy(), dtype=np.float32)
        return _encoded(self.session.run(self._outputs, {"images": array}))

    def describe(self, images: torch.Tensor) -> np.ndarray:
        return self.encode(images).descriptors


def _torch(descriptor, device, cache, precision, cuda_graphs, max_keypoints):
    return TorchBackend(descriptor, device, precision, cuda_graphs, max_keypoints)


def _onnxruntime(descriptor, device, cache, precision, cuda_graphs, max_keypoints):
    fingerprint = descriptor.fingerprint()
    path = ensure_onnx(descriptor, cache, fingerprint, max_keypoints)
    return OnnxRuntimeBackend(path, fingerprint, device)


def _tensorrt(descriptor, device, cache, precision, cuda_graphs, max_keypoints):
    from vpr_ros.core.runtime.tensorrt import TensorRTBackend  # tensorrt is imported only when asked for

    return TensorRTBackend(descriptor, device, "fp16" if precision == "auto" else precision, cache=cache)


def _auto(descriptor, device, cache, precision, cuda_graphs, max_keypoints):
    """torch on CUDA; on the CPU ONNX Runtime when it is installed and agrees with torch, else torch."""
    reference = _torch(descriptor, device, cache, precision, cuda_graphs, max_keypoints)
    if resolve_device(device) != "cpu":
        return reference
    try:
        candidate = _onnxruntime(descriptor, "cpu", cache, precision, cuda_graphs, max_keypoints)
        report = agreement(reference, candidate, probe_images(descriptor.input_size))
    except ImportError as exc:
        LOGGER.info("backend auto: torch (onnxruntime is not installed: %s)", exc)
        return reference
    except Exception as exc:  # an export or session failure must not cost the node its descriptor
        LOGGER.warning("backend auto: torch, because the ONNX Runtime path failed: %s", exc)
        return reference
    if not report["agrees"]:
        LOGGER.warning("backend auto: torch, because ONNX Runtime disagrees with it on probe images: %s", report)
        return reference
    LOGGER.info("backend auto: onnxruntime/cpu (agrees with torch: %s)", report)
    return candidate


# name -> factory(descriptor, device, cache, precision, cuda_graphs, max_keypoints); config.BACKEND_NAMES lists them
BACKENDS = {"auto": _auto, "torch": _torch, "onnxruntime": _onnxruntime, "tensorrt": _tensorrt}


def make_backend(name: str, descriptor: GlobalDescriptor, device: str = "cpu", cache: Path | None = None,
                 precision: str = "auto", cuda_graphs: bool = True, max_keypoints: int = 0):
    """A backend by name for a fitted descriptor; onnxruntime exports to the cache on first use.
    precision and cuda_graphs apply to torch on CUDA (TensorRT builds fp16 engines by default).
    max_keypoints > 0 asks for the joint graph (XFeat local features from the same pass); backends
    without one (TensorRT) ignore it, and their `encode` has no local features."""
    if name not in BACKENDS:
        raise ValueError(f"unknown descriptor backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](descriptor, device, cache, precision, cuda_graphs, max_keypoints)


def probe_images(size: tuple[int, int], count: int = 2, seed: int = 0) -> np.ndarray:
    """count x H x W x 3 uint8 textured images (random fields smoothed at several scales): deterministic
    inputs with structure and keypoints, for comparing backends where no real image is at hand."""
    import cv2

    width, height = size
    rng = np.random.default_rng(seed)
    images = np.zeros((count, height, width, 3), np.float32)
    for i in range(count):
        for cells in (4, 16, 64):
            coarse = rng.random((cells * height // width + 1, cells, 3)).astype(np.float32)
            images[i] += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    images -= images.min(axis=(1, 2, 3), keepdims=True)
    images /= images.max(axis=(1, 2, 3), keepdims=True)
    return (images * 255).astype(np.uint8)


def agreement(reference, candidate, images: np.ndarray, min_cosine: float = 0.999,
              min_shared_keypoints: float = 0.9) -> dict:
    """Compare two backends on B x H x W x 3 uint8 images: the smallest cosine between their global
    descriptors and, for joint graphs, the share of the reference's keypoints the candidate also
    returns and the smallest cosine between their local descriptors there; `agrees` applies the floors."""
    batch = torch.from_numpy(np.ascontiguousarray(images))  # B x H x W x 3 uint8, as images.batch_to_uint8 gives
    want, got = reference.encode(batch), candidate.encode(batch)
    cosine = float(np.min(np.sum(want.descriptors * got.descriptors, 1)))
    report = {"images": len(images), "min_cosine": round(cosine, 6)}
    agrees = report["min_cosine"] >= min_cosine
    if want.has_local != got.has_local:
        return dict(report, agrees=False, local="only one backend returns local features")
    if want.has_local:
        shared, cosines = _shared_keypoints(want, got)
        report.update(shared_keypoints=round(shared, 4), min_local_cosine=round(cosines, 6))
        agrees = agrees and shared >= min_shared_keypoints and cosines >= min_cosine
    return dict(report, agrees=bool(agrees))


def _shared_keypoints(want: Encoded, got: Encoded) -> tuple[float, float]:
    shares, cosines = [], [1.0]
    for b in range(len(want.keypoints)):
        valid_w, valid_g = want.scores[b] > 0, got.scores[b] > 0
        index = {tuple(p): i for i, p in enumerate(np.round(got.keypoints[b][valid_g]).astype(int).tolist())}
        local_g = got.local_descriptors[b][valid_g]
        pairs = [(i, index[tuple(p)]) for i, p in enumerate(np.round(want.keypoints[b][valid_w]).astype(int).tolist())
                 if tuple(p) in index]
        shares.append(len(pairs) / max(int(valid_w.sum()), 1))
        if pairs:
            w_idx, g_idx = np.array(pairs).T
            cosines.append(float(np.min(np.sum(want.local_descriptors[b][valid_w][w_idx] * local_g[g_idx], 1))))
    return float(min(shares)), float(min(cosines))
