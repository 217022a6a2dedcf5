"""Which camera frames reach the per-frame pipeline, and in what order: FrameGate decides from the
stamp and odometry pose whether a frame is worth processing; FrameQueue holds the admitted frames
between the thread that receives them and the one processing loop. ROS-free."""

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class FrameGate:
    """Which incoming frames get processed: at least `min_interval_s` after the last processed one,
    and, when the frame has an odometry pose, at least `min_distance_m` or `min_rotation_deg` away
    from it (0 turns a threshold off). A frame without a stamp (0 or negative: a driver that never
    sets it) is timed by `clock` (monotonic nanoseconds) instead, so unset stamps never freeze the gate."""

    min_interval_s: float = 0.0
    min_distance_m: float = 0.0
    min_rotation_deg: float = 0.0
    clock: Callable[[], int] = time.monotonic_ns
    _last_stamp: int | None = None
    _last_pose: np.ndarray | None = None

    def __post_init__(self):
        if min(self.min_interval_s, self.min_distance_m, self.min_rotation_deg) < 0:
            raise ValueError("frame gate thresholds must be >= 0")

    def admit(self, stamp_ns: int, pose: np.ndarray | None = None) -> bool:
        """True (and remember the frame) when the frame should be processed."""
        if stamp_ns <= 0:
            stamp_ns = self.clock()
        if pose is not None and not np.isfinite(pose).all():
            pose = None  # a NaN pose gates nothing (and must not become the reference)
        if self._last_stamp is not None:
            elapsed = stamp_ns - self._last_stamp
            if 0 <= elapsed < self.min_interval_s * 1e9:  # time going back (a replayed bag) resets the gate
                return False
            if pose is not None and self._last_pose is not None:
                moved = float(np.linalg.norm(pose[:3] - self._last_pose[:3]))
                turned = float(np.degrees(2 * np.arccos(min(1.0, abs(float(np.dot(pose[3:], self._last_pose[3:])))))))
                checks = [moved >= self.min_distance_m] if self.min_distance_m > 0 else []
                checks += [turned >= self.min_rotation_deg] if self.min_rotation_deg > 0 else []
                if checks and not any(checks):
                    return False
        self._last_stamp = stamp_ns
        self._last_pose = None if pose is None else np.asarray(pose, np.float64)
        return True


class FrameQueue:
    """Frames waiting for the processing loop. maxlen 1: the newest replaces the waiting one; more:
    first in, first out, the oldest dropped when full. put() returns how many frames were dropped."""

    def __init__(self, maxlen: int, on_drop=None):
        """on_drop(item): called for each frame dropped to make room (outside the queue's lock)."""
        self._items: deque = deque()
        self.maxlen = maxlen
        self._cv = threading.Condition()
        self.closed = False
        self._on_drop = on_drop

    def put(self, item) -> int:
        with self._cv:
            dropped = []
            while len(self._items) >= self.maxlen:
                dropped.append(self._items.popleft())
            self._items.append(item)
            self._cv.notify()
        if self._on_drop is not None:
            for old in dropped:
                self._on_drop(old)
        return len(dropped)

    def get(self, timeout: float = 0.5):
        """The next frame, or None when closed (or after `timeout` without one)."""
        with self._cv:
            if not self._items and not self.closed:
                self._cv.wait(timeout)
            if self.closed or not self._items:
                return None
            return self._items.popleft()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)
