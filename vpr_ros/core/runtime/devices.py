"""Where the models run: device names, precision, and CUDA graphs of fixed-shape calls.

`resolve_device("auto")` is "cuda" when torch sees a GPU, else "cpu"; any other value is the explicit
override, and asking for CUDA where torch sees none is a ValueError, never a silent CPU run.
`resolve_precision("auto", device)` is fp16 on CUDA (the backbone runs under autocast, the
aggregation stays float32) and fp32 on the CPU, where half precision is slower.

`GraphedCall` captures a function of fixed-shape CUDA tensors once per input shape and replays the
capture afterwards: one launch for the whole network instead of one per layer, which is what a
single-frame pipeline on a fast GPU is bound by.
"""

import re

import torch

from vpr_ros.core import LOGGER

PRECISIONS = ("auto", "fp16", "fp32")  # core/config.py repeats them (it imports no torch); a test keeps them equal


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" or "cpu"; "cpu" and "cuda[:N]" are checked against what torch sees."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA GPU here "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); set device to cpu or auto")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} was asked for but torch sees {torch.cuda.device_count()} GPU(s)")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """"auto" -> fp16 on CUDA, fp32 on CPU; fp16 on the CPU is refused (slower there, and untested)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision == "fp16" and not device.startswith("cuda"):
        raise ValueError("precision fp16 needs a CUDA device; use fp32 (or auto) on the CPU")
    return precision


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU); call before reading a host clock."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class GraphedCall:
    """fn(*tensors) -> a tensor (or a tuple of them), captured as a CUDA graph once per input shape and
    dtype, then replayed.

    fn must be a pure function of its tensor inputs with no host synchronisation (no .item(), no
    data-dependent shapes). What it returns is the capture's own output buffers: they are overwritten
    by the next call, so copy them (e.g. .cpu()) before calling again. Graphs are kept per shape, so a
    new batch size costs one capture (a few warm-up runs).
    """

    def __init__(self, fn, warmup: int = 3):
        self.fn, self.warmup = fn, int(warmup)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    @torch.inference_mode()
    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(inputs)
        graph, static, out = entry
        for buffer, value in zip(static, inputs):
            buffer.copy_(value, non_blocking=True)
        graph.replay()
        return out

    def _capture(self, inputs):
        static = [t.clone() for t in inputs]
        side = torch.cuda.Stream(device=static[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for _ in range(self.warmup):
                self.fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*static)
        LOGGER.debug("captured a CUDA graph for inputs %s", [tuple(t.shape) for t in inputs])
        return graph, static, out


class HostReader:
    """Reads a dict of device tensors back to the host in one synchronisation: every copy is queued
    non-blocking into pinned buffers (kept per name and shape, so a steady pipeline allocates nothing),
    then the stream is waited on once. On the CPU the tensors are simply viewed as numpy."""

    def __init__(self):
        self._pinned: dict[tuple, torch.Tensor] = {}

    def __call__(self, tensors: dict[str, torch.Tensor]) -> dict[str, "np.ndarray"]:
        devices = {t.device for t in tensors.values()}
        if all(d.type == "cpu" for d in devices):
            return {name: t.detach().numpy() for name, t in tensors.items()}
        staged = {}
        for name, t in tensors.items():
            key = (name, tuple(t.shape), t.dtype)
            if key not in self._pinned:
                self._pinned[key] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            staged[name] = self._pinned[key].copy_(t, non_blocking=True)
        for device in devices:
            if device.type == "cuda":
                torch.cuda.current_stream(device).synchronize()
        return {name: t.numpy().copy() for name, t in staged.items()}  # the buffers are reused next frame
