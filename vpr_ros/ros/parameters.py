"""Every parameter of `vpr_localizer`: name, default, description and range or choices. The pipeline's
come from core.config.LocalizerConfig (the one place they are defined); the node's own (topics, QoS,
frame gate, publishing, diagnostics) are listed here. The node declares them, config/localize.yaml is
generated from them (a test keeps the shipped file equal), and the launch file's overrides are checked
against them. No rclpy or torch import, so the launch logic can use it.
"""

import dataclasses
import sys

from vpr_ros.core.config import LocalizerConfig, settings

# name -> (default, description, range (lo, hi) or choices, or None)
NODE_PARAMETERS = {
    "autostart": (True, "configure and activate at start, as a plain node; false: a managed node that waits, "
                  "unconfigured, for a lifecycle manager (Nav2's lifecycle_manager) to configure and activate it",
                  None),
    "map_path": ("", "map directory (localize: required; slam: optional starting map)", None),
    "map_checksums": ("auto", "when the map files' sha256 are verified: before the map opens (before), on a "
                      "background thread while it already answers (background: a mismatch then stops the node, "
                      "exit code 1), or auto (background for maps over 256 MiB, before for the rest)",
                      ("auto", "before", "background")),
    "map_recheck_s": (3600.0, "the map files read from disk while the node serves (memory-mapped local features, "
                      "depths, on-disk index; descriptors of maps over 256 MiB) are verified against their sha256 again "
                      "this often and on SIGUSR1; a damaged one stops the node (exit code 1). 0: only on SIGUSR1",
                      (0.0, 1e7)),
    "image_topic": ("/camera/image_raw", "camera image topic; with image_transport compressed, the node subscribes "
                    "to <image_topic>/compressed (the image_transport convention)", None),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, PNG or JPEG)",
                        ("raw", "compressed")),
    "camera_info_topic": ("", "sensor_msgs/CameraInfo topic for intrinsics (relative pose); empty: none", None),
    "depth_topic": ("", "depth image aligned to the colour image (sensor_msgs/Image 16UC1 millimetres or 32FC1 "
                    "metres): metric loop closures and vpr/pose; empty: none", None),
    "depth_camera_info_topic": ("", "the depth image's own CameraInfo, when its size differs from the colour image's "
                                "(empty: the depth image is the colour image's size and uses its intrinsics)", None),
    "depth_tolerance_s": (0.05, "a depth image is used with a colour frame only when their stamps differ by at "
                          "most this; otherwise the loop closure keeps a translation direction (counted, warned)",
                          (0.0, 10.0)),
    "depth_wait_s": (0.1, "a frame whose depth image has not arrived yet waits at most this long for it (colour and "
                     "depth travel on separate topics and may arrive in either order)", (0.0, 10.0)),
    "prior_topic": ("", "geometry_msgs/PoseWithCovarianceStamped topic of a position prior in the map's frame (an "
                    "EKF, the last fix): retrieval searches only map frames near it (prior_k_sigma, "
                    "prior_min_radius_m, prior_max_radius_m); empty: the whole map", None),
    "prior_gps_topic": ("", "sensor_msgs/NavSatFix topic of a position prior, for maps whose frames have GPS; empty: "
                        "none", None),
    "odom_topic": ("", "nav_msgs/Odometry topic: keyframe motion gate and slam keyframe poses; empty: none", None),
    "odom_timeout_s": (0.5, "odometry older than this when an image arrives is stale: the frame gets no pose "
                       "(counted, warned)", (0.001, 3600.0)),
    "qos_reliability": ("sensor_data", "image subscription QoS: sensor_data (best effort) or reliable",
                        ("sensor_data", "reliable")),
    "qos_depth": (5, "image subscription queue depth", (1, 100)),
    "queue_size": (1, "frames waiting for the processing loop. 1: the newest frame wins (bounded latency, older "
                   "frames are dropped and counted); more: frames are processed in arrival order and the oldest "
                   "is dropped only when the queue is full (slam keyframes in a burst)", (1, 1000)),
    "min_interval_s": (0.0, "process at most one frame per this many seconds", (0.0, 3600.0)),
    "min_distance_m": (0.0, "with odometry: process a frame after this much motion (0: off)", (0.0, 1000.0)),
    "min_rotation_deg": (0.0, "with odometry: ... or this much rotation (0: off)", (0.0, 180.0)),
    "bit_depth": (0, "mono16/16UC1 images: bits the sensor fills (10, 12, 16) to scale them to 8 bits; 0: scale "
                  "each frame by its own maximum", (0, 16)),
    "map_frame_id": ("", "frame of the map poses (empty: the map's own; slam: the odometry's frame)", None),
    "publish_pose": (True, "localize mode: publish vpr/pose for accepted hypotheses with a map pose", None),
    "publish_loop_array": (False, "publish vpr/loop_closure_detection (Float64MultiArray [t_query, t_match])",
                           None),
    "initialpose_topic": ("initialpose", "relocalization: where initial poses for the robot's 2-D localizer go "
                          "(Nav2's AMCL listens on initialpose; geometry_msgs/PoseWithCovarianceStamped, base_link on "
                          "the map plane); empty: no relocalization", None),
    "amcl_pose_topic": ("amcl_pose", "relocalization: the robot's own localization (Nav2's AMCL publishes "
                        "amcl_pose): a doubtful or disagreeing one triggers a relocalization; empty: only on request "
                        "(vpr/relocalize) and at start", None),
    "relocalize_on_start": (False, "relocalization: publish the first confident answer after activation", None),
    "relocalize_timeout_s": (10.0, "vpr/relocalize waits at most this long for a confident answer", (0.1, 3600.0)),
    "relocalize_min_probability": (0.9, "relocalization: calibrated probability an answer needs (a map without a "
                                   "calibrator never relocalizes)", (0.0, 1.0)),
    "relocalize_require_metric": (True, "relocalization: only metric poses (depth); false: matched map frames' "
                                  "poses too, with their position spread and an unknown heading", None),
    "relocalize_max_std_m": (1.0, "relocalization: the robot's localization is doubtful above this position "
                             "standard deviation", (0.0, 1000.0)),
    "relocalize_max_yaw_std_deg": (30.0, "... or above this heading standard deviation", (0.0, 360.0)),
    "relocalize_disagree_m": (2.0, "relocalization: a confident answer this far from the robot's localization "
                              "disagrees with it", (0.0, 1000.0)),
    "relocalize_disagree_deg": (45.0, "... or this far in heading (metric answers)", (0.0, 180.0)),
    "relocalize_disagree_frames": (3, "relocalization: disagreeing confident answers in a row that trigger one",
                                   (1, 1000)),
    "relocalize_cooldown_s": (10.0, "relocalization: after an automatic one, none other automatic for this long "
                              "(the localizer converges)", (0.0, 3600.0)),
    "camera_in_base": ("", "x y z qx qy qz qw of the camera's optical frame in base_link, for relocalization "
                       "(empty: the map's camera mounting, from the map bag's TF)", None),
    "save_map_path": ("", "default directory for vpr/save_map when the request has none", None),
    "diagnostics_period_s": (1.0, "period of /diagnostics", (0.1, 3600.0)),
    "diagnostics_window_s": (10.0, "/diagnostics: bad frames, errors and rates over this recent window", (1.0, 3600.0)),
    "image_timeout_s": (5.0, "/diagnostics: WARN when no image arrived for this long", (0.1, 3600.0)),
}
PARAMS_FILE_KEY = "/**/vpr_localizer"  # a plain "vpr_localizer" would not reach a namespaced node
_PIPELINE = settings()
# mode first, then the node's own, then the rest of the pipeline's (LocalizerConfig's fields, in order)
PARAMETERS = {"mode": _PIPELINE.pop("mode"), **NODE_PARAMETERS, **_PIPELINE}


def check_choice(name: str, value) -> None:
    """Raise ValueError unless `value` is one of the choices of string parameter `name` (if it has any)."""
    default, _, spec = PARAMETERS[name]
    if isinstance(default, str) and spec is not None and value not in spec:
        raise ValueError(f"parameter {name} must be one of {list(spec)}, got {value!r}")


def as_declared(name: str, value):
    """The value of string parameter `name` as the user wrote it. `-p` and params files are read as YAML, where a
    bare off, no or false is a boolean and 7 an integer: rerank false -> "off", robot_id 7 -> "7". Other
    parameters' values pass through (rclpy enforces their types). Raises ValueError for a boolean where a
    string parameter has no "off" choice, and for a list."""
    default, _, spec = PARAMETERS[name]
    if not isinstance(default, str) or isinstance(value, str):
        return value
    if isinstance(value, bool):
        if not value and spec is not None and "off" in spec:
            return "off"
        raise ValueError(f"parameter {name} is a string, got the YAML boolean {str(value).lower()}: quote it "
                         f"(-p \"{name}:'...'\", or {name}: \"...\" in a params file)")
    if isinstance(value, (int, float)):
        return str(value)
    raise ValueError(f"parameter {name} is a string, got {type(value).__name__} {value!r}")


def check_parameters(values: dict) -> None:
    """What rclpy's declarations cannot express (types and numeric ranges are enforced at declaration)."""
    for name, value in values.items():
        check_choice(name, value)
    if values["mode"] == "localize" and not values["map_path"]:
        raise ValueError("mode localize needs map_path (a map directory built with vpr_build_map)")
    if values["camera_in_base"].strip():
        camera_in_base(values["camera_in_base"])
    if values["bit_depth"] not in (0, *range(8, 17)):
        raise ValueError(f"parameter bit_depth must be 0 (each frame's maximum) or 8..16, got {values['bit_depth']}")


def camera_in_base(text: str):
    """Parameter camera_in_base ("x y z qx qy qz qw") as 7 floats with a unit quaternion; ValueError otherwise."""
    import numpy as np

    try:
        pose = np.array([float(v) for v in text.replace(",", " ").split()])
    except ValueError:
        pose = np.zeros(0)
    if pose.shape != (7,) or not np.isfinite(pose).all() or abs(np.linalg.norm(pose[3:]) - 1.0) > 1e-3:
        raise ValueError(f"parameter camera_in_base must be 'x y z qx qy qz qw' with a unit quaternion, got {text!r}")
    return pose


def params_file_text() -> str:
    """config/localize.yaml as generated from PARAMETERS (a test compares the shipped file with it)."""
    lines = ["# vpr_localizer parameters: every parameter the node declares, with its default.",
             "# Run: vpr_localizer --ros-args --params-file config/localize.yaml -p map_path:=maps/office",
             "# or:  ros2 launch vpr_ros localize.launch.py params_file:=config/localize.yaml map_path:=maps/office",
             "# The key matches a node named vpr_localizer in any namespace (several robots, one file).",
             f"{PARAMS_FILE_KEY}:", "  ros__parameters:"]
    for name, (default, description, spec) in PARAMETERS.items():
        if spec is None:
            note = ""
        elif isinstance(default, str):
            note = f" (one of {', '.join(repr(c) for c in spec)})"
        else:
            note = f" [{spec[0]}, {spec[1]}]"
        value = ('"' + default + '"' if isinstance(default, str) else
                 str(default).lower() if isinstance(default, bool) else repr(default))
        lines += [f"    # {description}{note}", f"    {name}: {value}"]
    return "\n".join(lines) + "\n"


def localizer_config(p: dict) -> LocalizerConfig:
    """The core's LocalizerConfig from the node's parameter values (what the node runs; benchmarks that
    run the same pipeline outside the node use it too)."""
    return LocalizerConfig(**{f.name: p[f.name] for f in dataclasses.fields(LocalizerConfig)})


def descriptor(name: str):
    """rcl_interfaces/ParameterDescriptor of parameter `name` (rcl_interfaces is imported here only)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    default, description, spec = PARAMETERS[name]
    # rclpy enforces the type of the default and a numeric range; choices of a string are checked by the node
    desc = ParameterDescriptor(name=name, description=description)
    # string parameters take YAML's booleans and numbers too; the node turns them back (as_declared)
    desc.dynamic_typing = isinstance(default, str)
    if spec is None:
        return desc
    if isinstance(default, str):
        desc.additional_constraints = f"one of {list(spec)}"
    elif isinstance(default, int):
        desc.integer_range = [IntegerRange(from_value=int(spec[0]), to_value=int(spec[1]), step=1)]
    else:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec[0]), to_value=float(spec[1]))]
    return desc


def wants_help(args: list[str] | None = None) -> bool:
    """Whether a console script was asked for help: -h or --help before any --ros-args (args None: sys.argv)."""
    argv = list(sys.argv[1:] if args is None else args)
    own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    return bool({"-h", "--help"} & set(own))


def help_text(doc: str, params_file: str, params_text: str) -> str:
    """A node's --help: its module docstring, then every parameter with its default and description, as the
    shipped params file (`params_file`, generated from the same table) lists them."""
    return (doc.strip() + "\n\nParameters (set with --ros-args -p name:=value or --params-file; " + params_file
            + " holds every one at its default):\n\n" + params_text)
