"""Optional import of the vpr_ros_interfaces messages.

A robot may run vpr_ros without having built the interface package. The node then publishes only
standard messages; `load_interfaces` returns None and logs one clear warning saying what is lost.
"""

import importlib
import logging
from types import SimpleNamespace

_LOGGER = logging.getLogger("vpr_ros")
_cache: dict[str, SimpleNamespace | None] = {}

MESSAGES = ("PlaceHypothesis", "PlaceHypotheses", "StageTiming", "LoopClosure")
SERVICES = ("LoadMap", "SaveMap")


def load_interfaces(logger=None) -> SimpleNamespace | None:
    """The project's message and service classes by name, or None (after one warning) when absent."""
    if "interfaces" not in _cache:
        try:
            msg = importlib.import_module("vpr_ros_interfaces.msg")
            srv = importlib.import_module("vpr_ros_interfaces.srv")
            _cache["interfaces"] = SimpleNamespace(**{name: getattr(msg, name) for name in MESSAGES},
                                                   **{name: getattr(srv, name) for name in SERVICES})
        except ImportError as exc:
            (logger or _LOGGER).warning(
                f"vpr_ros_interfaces is not available ({exc}); publishing standard messages only: "
                "no PlaceHypotheses or LoopClosure topics and no load_map/save_map services. Build "
                "vpr_ros_interfaces (colcon, or scripts/build_interfaces.py) to get them.")
            _cache["interfaces"] = None
    return _cache["interfaces"]
