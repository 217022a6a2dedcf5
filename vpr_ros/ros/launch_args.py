"""The argument logic of launch/localize.launch.py, as plain functions (no `launch` import needed).

The params file is the configuration; a launch argument overrides its namesake only when the user
gives it (`ros2 launch vpr_ros localize.launch.py params_file:=my.yaml` keeps every value of
my.yaml). An argument left at its empty default is not given. `rerank:=off` turns re-ranking off
(`ros2 launch` rejects an empty `rerank:=`).

`fastdds_shm` (default true) points the node's Fast DDS participant at config/fastdds_shm.xml, a
32 MB shared-memory segment for camera images, unless that is not safe or not wanted: another
middleware is selected (RMW_IMPLEMENTATION), or the user already set FASTDDS_DEFAULT_PROFILES_FILE.
The bag replay and the demo use the same profile (shared_memory_environment).
"""

import contextlib
import os
from pathlib import Path

# launch argument -> description; each overrides the node parameter of the same name when given
OVERRIDES = {
    "mode": "localize (prebuilt map) or slam (online loop closure); default: the params file's",
    "map_path": "map directory built with vpr_build_map; default: the params file's",
    "image_topic": "camera image topic (the base topic: compressed transport adds /compressed); default: the "
                   "params file's",
    "image_transport": "raw or compressed; default: the params file's",
    "rerank": "re-ranking matcher (xfeat-mnn, xfeat-lighterglue, ...) or off; default: the params file's",
    "camera_info_topic": "sensor_msgs/CameraInfo topic; default: the params file's",
    "odom_topic": "nav_msgs/Odometry topic; default: the params file's",
    "autostart": "true: configure and activate at start (a plain node); false: wait for a lifecycle manager "
                 "(Nav2's); default: the params file's",
}
FASTDDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parameter_overrides(given: dict[str, str]) -> dict[str, str | bool]:
    """The launch arguments' values -> the parameters that override the params file: only those the
    user gave (non-empty). Raises ValueError for an unknown name or a value the node would refuse."""
    from vpr_ros.ros.parameters import PARAMETERS, check_choice

    overrides = {}
    for name, value in given.items():
        if name not in OVERRIDES:
            raise ValueError(f"unknown launch argument {name!r}; known: {sorted(OVERRIDES)}")
        value = "" if value is None else str(value).strip()
        if not value:
            continue
        check_choice(name, value)
        overrides[name] = flag_value(name, value) if isinstance(PARAMETERS[name][0], bool) else value
    assert set(overrides) <= set(PARAMETERS)
    return overrides


def flag_value(name: str, value: str) -> bool:
    """A true/false launch argument; raises ValueError naming it otherwise."""
    flag = str(value).strip().lower()
    if flag not in TRUE + FALSE:
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return flag in TRUE


def pose_graph_overrides(given: dict[str, str]) -> dict[str, str]:
    """What vpr_pose_graph takes from the localizer's launch arguments (`pose_graph:=true`): the odometry topic
    when one was given; the rest comes from its own params file (config/pose_graph.yaml)."""
    odom = str(given.get("odom_topic") or "").strip()
    return {"odom_topic": odom} if odom else {}


def fastdds_environment(enabled: str, environ: dict[str, str], profile: str) -> dict[str, str]:
    """Environment the node process gets for `fastdds_shm:=<enabled>`: {} or {FASTDDS_DEFAULT_PROFILES_FILE: profile}."""
    flag = str(enabled).strip().lower()
    if flag not in TRUE + FALSE:
        raise ValueError(f"fastdds_shm must be true or false, got {enabled!r}")
    if flag in FALSE or environ.get(FASTDDS_PROFILE_VARIABLE):
        return {}
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw and rmw not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return {}
    return {FASTDDS_PROFILE_VARIABLE: profile}


def shared_memory_environment() -> dict[str, str]:
    """Fast DDS with the shipped 32 MB shared-memory profile (config/fastdds_shm.xml) for the processes of a
    replay (ros/replay.py) and the demo, as the launch file starts the node on a robot; {} when a profile is
    already chosen or another RMW runs. Over the default UDP transport a 640x480 depth image (1.2 MB) published just before its colour
    frame reached the node later than the frame in a fifth of the frames (fragments resent), which then lost
    its depth. A process that makes a participant before the replay (vpr_demo's environment check) must set
    it before that one: Fast DDS reads the profile once per process."""
    profile = next((p for p in _profile_candidates() if p.is_file()), None)
    return fastdds_environment("true", dict(os.environ), str(profile)) if profile is not None else {}


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """os.environ with `values` set, restored afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _profile_candidates() -> list[Path]:
    """config/fastdds_shm.xml where it lies: the installed package's share folder, or the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("vpr_ros")) / "config" / "fastdds_shm.xml")
    except (ImportError, LookupError, OSError, ValueError):  # not installed with colcon (no ament index)
        pass
    return candidates + [Path(__file__).resolve().parents[2] / "config" / "fastdds_shm.xml"]
