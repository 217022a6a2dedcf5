"""TensorRT engines of the exported descriptor graph: built from the ONNX export (FP16 by default),
cached on disk, run on a CUDA stream with preallocated torch buffers.

An engine only fits the TensorRT version and GPU it was built with, and the descriptor it was built
from, so the cache key is all three plus the precision and the batch range:
`<cache>/engine-<fingerprint16>-<key16>.plan` with a JSON sidecar that records them. A cached engine
whose sidecar does not match is rebuilt (`rebuild=True`, the default) or refused with what differs.

Needs `tensorrt` (pip, matching the machine's CUDA) and a CUDA GPU visible to torch; without either,
constructing the backend raises ValueError saying which is missing.
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.core import LOGGER
from vpr_ros.core.descriptors.global_descriptor import GlobalDescriptor
from vpr_ros.core.inputs.images import to_float_nchw
from vpr_ros.core.runtime.export import cache_dir, ensure_onnx
from vpr_ros.core.descriptors.joint import Encoded

PRECISIONS = ("fp16", "fp32")
WORKSPACE_BYTES = 2 << 30


def tensorrt_available() -> tuple[bool, str]:
    """(usable, why not) for TensorRT here."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the tensorrt package is not installed (pip install tensorrt, matching the CUDA version)"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA GPU"
    return True, ""


def engine_key(fingerprint: str, precision: str, max_batch: int, device_index: int = 0) -> dict:
    import tensorrt as trt

    return {"fingerprint": fingerprint, "tensorrt": trt.__version__,
            "gpu": torch.cuda.get_device_name(device_index),
            "compute_capability": list(torch.cuda.get_device_capability(device_index)),
            "precision": precision, "max_batch": max_batch}


def engine_path(key: dict, folder: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (folder or cache_dir()) / f"engine-{key['fingerprint'][:16]}-{digest}.plan"


def build_engine(onnx_file: Path, path: Path, key: dict, input_shape: tuple[int, int, int]) -> Path:
    """Parse the ONNX export and build a serialized engine with a dynamic-batch profile 1..max_batch."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_file).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if key["precision"] == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    channels, height, width = input_shape
    profile.set_shape("images", (1, channels, height, width), (1, channels, height, width),
                      (key["max_batch"], channels, height, width))
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"TensorRT could not build an engine from {onnx_file} (see its log above)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(bytes(serialized))
    path.with_suffix(".json").write_text(json.dumps(key, indent=2) + "\n")
    tmp.rename(path)
    LOGGER.info("built TensorRT %s engine %s in %.0f s", key["precision"], path.name, time.perf_counter() - start)
    return path


class TensorRTBackend:
    """The descriptor as a TensorRT engine on a CUDA device."""

    name = "tensorrt"

    def __init__(self, descriptor: GlobalDescriptor, device: str = "cuda", precision: str = "fp16",
                 max_batch: int = 8, cache: Path | None = None, rebuild: bool = True):
        usable, why = tensorrt_available()
        if not usable:
            raise ValueError(f"the tensorrt backend was asked for but {why}")
        if not device.startswith("cuda"):
            raise ValueError(f"the tensorrt backend runs on a CUDA device, not {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        import tensorrt as trt

        self.device = torch.device(device if ":" in device else "cuda:0")
        fingerprint = descriptor.fingerprint()
        key = engine_key(fingerprint, precision, max_batch, self.device.index or 0)
        path = engine_path(key, cache)
        width, height = descriptor.input_size
        stored = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else None
        if not path.is_file() or stored != key:
            if path.is_file() and not rebuild:
                differs = sorted(k for k in key if (stored or {}).get(k) != key[k])
                raise ValueError(f"cached engine {path} was built for another {', '.join(differs)}; "
                                 "rebuild it (vpr_export --engine) or allow rebuilding")
            build_engine(ensure_onnx(descriptor, cache, fingerprint), path, key, (3, height, width))
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with torch.cuda.device(self.device):
            self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise ValueError(f"TensorRT could not load {path}; delete it to rebuild")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
            # preallocated buffers for the largest batch; a smaller batch uses their first rows
            self.input = torch.empty((max_batch, 3, height, width), dtype=torch.float32, device=self.device)
            self.output = torch.empty((max_batch, descriptor.dim), dtype=torch.float32, device=self.device)
        self.path, self.precision, self.max_batch = path, precision, max_batch
        self.input_size, self.dim = (width, height), descriptor.dim

    @property
    def label(self) -> str:
        return f"tensorrt-{self.precision}/{self.device}"

    def encode(self, images: torch.Tensor) -> Encoded:
        """The descriptors only: the engine is the global descriptor's graph."""
        return Encoded(self.describe(images))

    def describe(self, images: torch.Tensor) -> np.ndarray:
        images = to_float_nchw(images.to(self.device, non_blocking=True))
        batch = images.shape[0]
        # the images were made on the caller's stream: the engine's stream must not read them before that
        # work is done, and their memory must not be reused while the engine's stream still copies them
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        images.record_stream(self.stream)
        out = []
        for start in range(0, batch, self.max_batch):  # batches above the profile run in chunks
            chunk = images[start:start + self.max_batch]
            n = chunk.shape[0]
            with torch.cuda.stream(self.stream):
                self.input[:n].copy_(chunk, non_blocking=True)
                self.context.set_input_shape("images", tuple(self.input[:n].shape))
                self.context.set_tensor_address("images", self.input.data_ptr())
                self.context.set_tensor_address("descriptors", self.output.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT execution failed")
                result = self.output[:n].float().cpu()  # synchronises the stream
            out.append(result.numpy())
        array = np.concatenate(out)
        if not np.isfinite(array).all():
            raise ValueError("descriptor is not finite (NaN or infinity); the input image is unusable")
        return array
