"""What the node's /diagnostics say, kept free of rclpy so it can be tested on its own.

Counters only grow (totals since start); the level reflects a recent window: one bad frame an hour
ago does not keep the node in WARN. Every method takes a lock, because the subscription callbacks
(executor thread) and the processing loop (main thread) record events concurrently.
"""

import collections
import threading
import time

from vpr_ros.core.evaluation.metrics import latency_summary

OK, WARN, ERROR = 0, 1, 2

# event -> (level it raises while within the window, what the message says)
EVENTS = {
    "errors": (ERROR, "frames or callbacks failed"),
    "bad_frames": (WARN, "bad frames skipped"),
    "bad_camera_info": (WARN, "camera infos rejected"),
    "bad_odometry": (WARN, "odometry messages rejected"),
    "stale_odometry": (WARN, "frames without fresh odometry"),
    "bad_depth": (WARN, "depth images rejected"),
    "stale_depth": (WARN, "frames without a depth image near their stamp"),
    "bad_prior": (WARN, "position priors rejected"),
}
TOTALS = ("received", "processed", "gated", "dropped", "bad_frames", "bad_camera_info", "bad_odometry",
          "stale_odometry", "bad_depth", "stale_depth", "bad_prior", "prior_searches", "errors", "loop_closures",
          "metric_loop_closures", "relocalizations")


class Health:
    """Counters, recent event times, arrival and processing rates, and the diagnostic level."""

    def __init__(self, window_s: float = 10.0, image_timeout_s: float = 5.0, clock=time.monotonic):
        self.window_s, self.image_timeout_s, self.clock = window_s, image_timeout_s, clock
        self.started = clock()
        self.counts: collections.Counter = collections.Counter()
        self._events: dict[str, collections.deque] = {name: collections.deque(maxlen=10000) for name in EVENTS}
        self._arrivals: collections.deque = collections.deque(maxlen=2000)
        self._processed: collections.deque = collections.deque(maxlen=2000)
        self._stages: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def record_stages(self, timings_ms: dict[str, float]) -> None:
        """One processed frame's per-stage milliseconds (the last 200 frames are summarised)."""
        with self._lock:
            for stage, ms in timings_ms.items():
                self._stages.setdefault(stage, collections.deque(maxlen=200)).append(float(ms))

    def count(self, name: str, n: int = 1) -> None:
        if n <= 0:
            return
        now = self.clock()
        with self._lock:
            self.counts[name] += n
            if name in self._events:
                self._events[name].append(now)
            elif name == "received":
                self._arrivals.append(now)
            elif name == "processed":
                self._processed.append(now)

    def snapshot(self) -> dict:
        """Totals, rates over the window, and the events within it (a consistent copy)."""
        now = self.clock()
        with self._lock:
            recent = {name: sum(1 for t in times if now - t <= self.window_s) for name, times in self._events.items()}
            arrivals = [t for t in self._arrivals if now - t <= self.window_s]
            processed = sum(1 for t in self._processed if now - t <= self.window_s)
            last_arrival = self._arrivals[-1] if self._arrivals else None
            totals = {name: self.counts[name] for name in TOTALS}
            stages = {stage: list(samples) for stage, samples in self._stages.items()}
        span = min(self.window_s, max(now - self.started, 1e-3))
        return {"totals": totals, "recent": recent, "stages": stages, "input_rate_hz": len(arrivals) / span,
                "processed_rate_hz": processed / span,
                "since_last_image_s": (now - last_arrival) if last_arrival is not None else now - self.started}

    def values(self, snapshot: dict, fields: dict) -> dict:
        """/diagnostics' key-values: the node's `fields`, then the rates, the totals, the events of the window and
        each stage's p50 and p95 milliseconds."""
        values = {**fields, "input_rate_hz": f"{snapshot['input_rate_hz']:.2f}",
                  "processed_rate_hz": f"{snapshot['processed_rate_hz']:.2f}",
                  "seconds_since_last_image": f"{snapshot['since_last_image_s']:.1f}",
                  **snapshot["totals"], **{f"recent_{k}": v for k, v in snapshot["recent"].items()}}
        for stage, samples in snapshot["stages"].items():
            summary = latency_summary(samples)
            values[f"{stage}_ms_p50"], values[f"{stage}_ms_p95"] = f"{summary['p50']:.1f}", f"{summary['p95']:.1f}"
        return values

    def level(self, snapshot: dict | None = None) -> tuple[int, str]:
        """(OK/WARN/ERROR, message) from the recent window."""
        snap = snapshot or self.snapshot()
        level, reasons = OK, []
        for name, (event_level, text) in EVENTS.items():
            n = snap["recent"][name]
            if n:
                level = max(level, event_level)
                reasons.append(f"{n} {text}")
        if snap["since_last_image_s"] > self.image_timeout_s:
            level = max(level, WARN)
            reasons.append(f"no image for {snap['since_last_image_s']:.0f} s")
        if not reasons:
            return OK, "running"
        return level, "; ".join(reasons) + f" (last {self.window_s:g} s)"
