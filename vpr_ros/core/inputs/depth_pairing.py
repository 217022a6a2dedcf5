"""Pairing colour frames with the depth images of a separate stream, by stamp.

Colour and depth travel on separate topics and arrive in either order, and a frame may wait in the node's
queue (or be matched for hundreds of milliseconds) before its depth is needed. DepthBuffer keeps what
the frames still waiting may need, rather than the last N depth images: every depth image within the
tolerance of a frame not yet paired, the nearest one on either side of it (to say how far off it was when
none is close enough), and the newest `future` images for frames that have not arrived yet. A fixed count
(the last 30) lost the depth of frames that waited behind others while a 30 Hz depth stream ran on.

`pair` waits, up to a deadline counted from the frame's arrival (and at least GRACE_S), until a depth image lies within the
tolerance, a newer one shows that none will, or the stream has been silent for STREAM_GAP_NS (a dead
depth camera must not slow every frame). The payload is opaque (the node stores its ROS messages);
DepthStream turns the paired one into metres and its intrinsics, or says why a frame has none.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vpr_ros.core.inputs.depth import DepthError

STREAM_GAP_NS = 2_000_000_000  # no depth image for this long before a frame: the stream stopped, do not wait
# A frame whose deadline passed while it was matched still waits this long: the executor thread that takes the
# depth messages may not have run while the processing thread held the GIL in a long native call, so a depth
# image already delivered to the process may not be in the buffer yet (seen in lockstep replays: 4-6 of 24
# loop closures of the demo's lap 3 lost their frame's depth; docs/benchmarks.md, issue 39).
GRACE_S = 0.05


@dataclass
class Pairing:
    """What `pair` found for a frame: the payload within the tolerance (or None), and what was held."""

    payload: object | None
    offset_s: float | None  # stamp of the nearest depth image minus the frame's (None: none held)
    held: int  # depth images held when pairing
    waited_s: float

    def why_none(self, topic: str, tolerance_s: float) -> str:
        """Why a frame got no depth image from `topic` (this pairing found none within tolerance_s)."""
        if self.offset_s is None:
            return f"no depth image received on {topic}"
        side = "older" if self.offset_s < 0 else "newer"
        return (f"the nearest depth image is {abs(self.offset_s):.3f} s {side} than the frame (depth_tolerance_s "
                f"{tolerance_s:g})")

    def describe(self) -> str:
        """Which depth stamps the buffer held, for the log of a frame that got none."""
        if self.offset_s is None:
            return f"no depth image held (waited {self.waited_s:.3f} s)"
        side = "older" if self.offset_s < 0 else "newer"
        return (f"{self.held} depth images held, the nearest {abs(self.offset_s):.3f} s {side} than the frame "
                f"(waited {self.waited_s:.3f} s)")


class DepthBuffer:
    """Depth images by stamp for the frames still to be paired (module docstring). Thread-safe."""

    def __init__(self, tolerance_ns: int, future: int = 30):
        self.tolerance_ns, self.future = int(tolerance_ns), int(future)
        self._stamps: list[int] = []  # sorted
        self._payloads: list[object] = []
        self._pending: dict[int, int] = {}  # frame stamp -> frames with it not yet paired
        self._cv = threading.Condition()
        self._last_add: float | None = None  # when the last depth image arrived (monotonic)
        self.closed = False

    def __len__(self) -> int:
        with self._cv:
            return len(self._stamps)

    def add(self, stamp_ns: int, payload) -> None:
        with self._cv:
            at = int(np.searchsorted(self._stamps, stamp_ns, side="right"))
            self._stamps.insert(at, int(stamp_ns))
            self._last_add = time.monotonic()
            self._payloads.insert(at, payload)
            self._prune()
            self._cv.notify_all()

    def since_last_s(self) -> float | None:
        """Seconds since the last depth image arrived (None: none yet)."""
        with self._cv:
            return None if self._last_add is None else time.monotonic() - self._last_add

    def expect(self, stamp_ns: int) -> None:
        """A frame of this stamp will be paired: keep what it may need until `release`."""
        with self._cv:
            self._pending[int(stamp_ns)] = self._pending.get(int(stamp_ns), 0) + 1

    def release(self, stamp_ns: int) -> None:
        """The frame was paired, or will never be (dropped, failed)."""
        with self._cv:
            count = self._pending.get(int(stamp_ns), 0) - 1
            if count > 0:
                self._pending[int(stamp_ns)] = count
            else:
                self._pending.pop(int(stamp_ns), None)
            self._prune()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def pair(self, stamp_ns: int, deadline: float) -> Pairing:
        """The depth image nearest the frame in stamp, once one lies within the tolerance, a newer one shows
        that none will, the stream is silent, or time.monotonic() passes `deadline`."""
        start = time.monotonic()
        deadline = max(deadline, start + GRACE_S)
        with self._cv:
            while not self._settled(stamp_ns) and not self.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            waited = time.monotonic() - start
            if not self._stamps:
                return Pairing(None, None, 0, waited)
            stamps = np.asarray(self._stamps, np.int64)
            nearest = int(np.argmin(np.abs(stamps - stamp_ns)))
            offset = int(stamps[nearest]) - stamp_ns
            payload = self._payloads[nearest] if abs(offset) <= self.tolerance_ns else None
            return Pairing(payload, offset * 1e-9, len(stamps), waited)

    def _settled(self, stamp_ns: int) -> bool:
        if not self._stamps:  # none held: wait only while the stream is alive (a dead camera must not slow frames)
            return self._last_add is None or time.monotonic() - self._last_add > STREAM_GAP_NS * 1e-9
        stamps = np.asarray(self._stamps, np.int64)
        return bool(np.any(np.abs(stamps - stamp_ns) <= self.tolerance_ns)
                    or stamps[-1] > stamp_ns + self.tolerance_ns
                    or stamp_ns - stamps[-1] > STREAM_GAP_NS)

    def _prune(self) -> None:
        """Keep what a pending frame may need (within the tolerance, and the nearest on either side) and the
        newest `future` images beyond every pending frame; drop the rest."""
        if not self._stamps:
            return
        stamps = np.asarray(self._stamps, np.int64)
        keep = np.zeros(len(stamps), bool)
        pending = sorted(self._pending)
        for frame in pending:
            keep |= np.abs(stamps - frame) <= self.tolerance_ns
            before = int(np.searchsorted(stamps, frame, side="right")) - 1
            if before >= 0:
                keep[before] = True
            if before + 1 < len(stamps):
                keep[before + 1] = True
        later = stamps > (pending[-1] + self.tolerance_ns if pending else np.iinfo(np.int64).min)
        future = np.flatnonzero(later)[-self.future:] if self.future > 0 else np.zeros(0, np.int64)
        keep[future] = True
        if not keep.all():
            self._stamps = [s for s, k in zip(self._stamps, keep) if k]
            self._payloads = [p for p, k in zip(self._payloads, keep) if k]


@dataclass
class FrameDepthImage:
    """A frame's depth image from its stream, or why it has none."""

    depth: np.ndarray | None  # metres, NaN no reading
    depth_K: np.ndarray | None  # its own intrinsics (None: the colour camera's)
    note: str = ""  # why there is none (said in the loop closure's scale note)
    problem: str = ""  # the diagnostics counter it raises: "stale_depth", "bad_depth" or ""
    log: str = ""  # the warning line


class DepthStream:
    """A depth topic paired with the colour frames by stamp (DepthBuffer), with its tolerance, its wait, how
    its messages become metres (`decode`, raising inputs.depth.DepthError) and their intrinsics (`intrinsics`
    of an image size, None when unknown; no function: the colour camera's)."""

    def __init__(self, topic: str, tolerance_s: float, wait_s: float, decode: Callable[[object], np.ndarray],
                 intrinsics: Callable[[tuple[int, int]], np.ndarray | None] | None = None):
        self.topic, self.tolerance_s, self.wait_s = topic, tolerance_s, wait_s
        self.decode, self.intrinsics = decode, intrinsics
        self.buffer = DepthBuffer(int(tolerance_s * 1e9))

    def for_frame(self, stamp_ns: int, arrived: float) -> FrameDepthImage:
        """The depth image of the colour frame of `stamp_ns` that arrived at `arrived` (monotonic): the one
        nearest in stamp once one is within the tolerance, waiting until wait_s after the frame's arrival at
        most. A depth image that cannot be used is reported, never raised."""
        pairing = self.buffer.pair(stamp_ns, arrived + self.wait_s)
        if pairing.payload is None:
            note = pairing.why_none(self.topic, self.tolerance_s)
            return FrameDepthImage(None, None, note, "stale_depth",
                                   f"{note}: loop closures keep a translation direction ({pairing.describe()})")
        try:
            depth = self.decode(pairing.payload)
        except DepthError as exc:
            return FrameDepthImage(None, None, f"depth image rejected: {exc}", "bad_depth",
                                   f"depth image rejected ({exc.reason}): {exc}")
        depth_K = None
        if self.intrinsics is not None:
            depth_K = self.intrinsics((depth.shape[1], depth.shape[0]))
            if depth_K is None:
                note = "no usable CameraInfo for the depth image yet"
                return FrameDepthImage(None, None, note, "bad_depth", note)
        return FrameDepthImage(depth, depth_K)
