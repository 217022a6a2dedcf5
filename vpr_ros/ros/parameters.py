"""Every parameter of `vpr_localizer`: name, default, description and range or choices. One place:
the node declares them, config/localize.yaml lists them (a test keeps the two equal), the launch
file's overrides are checked against them. No rclpy import, so the launch logic can use it.

The defaults are the configuration a robot gets without tuning; they only publish loop closures a
pose-graph back-end can take: re-ranking with geometric verification (XFeat + mutual nearest
neighbours, the fastest matcher on a CPU), at least `accept_min_inliers` inliers, and agreement of
the previous frame (`temporal_window` 1). docs/benchmarks.md has their measured precision and recall.
"""

# The matcher names of core.matchers.MATCHERS (written out so that importing this module does not
# import torch; a test keeps them equal).
MATCHER_NAMES = ("xfeat-lighterglue", "aliked-lightglue", "disk-lightglue", "xfeat-mnn")
RERANK_OFF = ("off", "")

# name -> (default, description, range (lo, hi) or choices, or None)
PARAMETERS = {
    "mode": ("localize", "localize: against a prebuilt map; slam: online loop closure", ("localize", "slam")),
    "map_path": ("", "map directory (localize: required; slam: optional starting map)", None),
    "image_topic": ("/camera/image_raw", "camera image topic; with image_transport compressed, the node subscribes "
                    "to <image_topic>/compressed (the image_transport convention)", None),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, PNG or JPEG)",
                        ("raw", "compressed")),
    "camera_info_topic": ("", "sensor_msgs/CameraInfo topic for intrinsics (relative pose); empty: none", None),
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
    "top_k": (5, "hypotheses per frame (re-ranked ones when rerank is set)", (1, 100)),
    "rerank": ("xfeat-mnn", "matcher for re-ranking with geometric verification, or off (global retrieval only: "
               "loop closures then need a calibrated map or temporal agreement)", RERANK_OFF + MATCHER_NAMES),
    "rerank_top_k": (0, "re-rank only the first this-many of the top_k hypotheses, the rest follow in global "
                     "order (0: all)", (0, 100)),
    "skip_margin": (-1.0, "verify only the first candidate when it leads by this cosine margin (<0: off)",
                    (-1.0, 2.0)),
    "min_inliers": (15, "inliers a verified candidate needs", (4, 100000)),
    "min_inlier_ratio": (0.25, "share of matches that must be inliers", (0.0, 1.0)),
    "accept_min_inliers": (30, "loop closure: inliers of the best hypothesis (with re-ranking)", (0, 100000)),
    "accept_min_similarity": (0.5, "loop closure: global similarity of the best hypothesis", (-1.0, 1.0)),
    "accept_min_probability": (0.9, "loop closure, maps with a calibrator: probability of the best hypothesis "
                               "(replaces the similarity and inlier thresholds)", (0.0, 1.0)),
    "temporal_window": (1, "loop closure: previous frames whose best candidates must agree (0: off)", (0, 100)),
    "temporal_tolerance": (5, "... within this many map keys", (0, 100000)),
    "exclude_recent_s": (20.0, "slam: ignore map frames this recent", (0.0, 1e6)),
    "exclude_recent_frames": (10, "slam: ignore the newest this-many keyframes", (0, 100000)),
    "bootstrap_frames": (30, "slam without a map: keyframes collected to fit the vocabulary", (2, 100000)),
    "preset": ("default", "slam without a map: descriptor preset", None),
    "checkpoint": ("", "weights file of a published-model preset (cosplace-*, salad-*, ...): for slam without a "
                   "map, or for a map whose weights moved (empty: the path the map records)", None),
    "max_keypoints": (512, "slam without a map: local features per keyframe (with rerank)", (16, 8192)),
    "device": ("auto", "device of the descriptor, local features, matcher and search: auto (cuda when a GPU is "
               "visible, else cpu), cpu or cuda[:N]; cuda without a GPU is an error", None),
    "precision": ("auto", "torch on CUDA: fp16 (backbone and matcher under autocast) or fp32; auto is fp16 on "
                  "CUDA and fp32 on the CPU", ("auto", "fp16", "fp32")),
    "backend": ("torch", "descriptor backend: torch, onnxruntime, or tensorrt (with device cuda); the map's "
                "descriptor is exported (and the engine built) into the cache on first use",
                ("torch", "onnxruntime", "tensorrt")),
    "map_frame_id": ("", "frame of the map poses (empty: the map's own; slam: the odometry's frame)", None),
    "publish_pose": (True, "localize mode: publish vpr/pose for accepted hypotheses with a map pose", None),
    "pose_sigma_m": (2.0, "standard deviation (m) of vpr/pose's position; with probabilities, doubt among "
                     "the hypotheses' poses widens it", (0.0, 1e6)),
    "publish_loop_array": (False, "publish vpr/loop_closure_detection (Float64MultiArray [t_query, t_match])",
                           None),
    "save_map_path": ("", "default directory for vpr/save_map when the request has none", None),
    "diagnostics_period_s": (1.0, "period of /diagnostics", (0.1, 3600.0)),
    "diagnostics_window_s": (10.0, "/diagnostics: bad frames, errors and rates over this recent window", (1.0, 3600.0)),
    "image_timeout_s": (5.0, "/diagnostics: WARN when no image arrived for this long", (0.1, 3600.0)),
}


def check_choice(name: str, value) -> None:
    """Raise ValueError unless `value` is one of the choices of string parameter `name` (if it has any)."""
    default, _, spec = PARAMETERS[name]
    if isinstance(default, str) and spec is not None and value not in spec:
        raise ValueError(f"parameter {name} must be one of {list(spec)}, got {value!r}")


def check_parameters(values: dict) -> None:
    """What rclpy's declarations cannot express (types and numeric ranges are enforced at declaration)."""
    for name, value in values.items():
        check_choice(name, value)
    if values["mode"] == "localize" and not values["map_path"]:
        raise ValueError("mode localize needs map_path (a map directory built with vpr_build_map)")
    if values["bit_depth"] not in (0, *range(8, 17)):
        raise ValueError(f"parameter bit_depth must be 0 (each frame's maximum) or 8..16, got {values['bit_depth']}")


def params_file_text() -> str:
    """config/localize.yaml as generated from PARAMETERS (a test compares the shipped file with it)."""
    lines = ["# vpr_localizer parameters: every parameter the node declares, with its default.",
             "# Run: vpr_localizer --ros-args --params-file config/localize.yaml -p map_path:=maps/office",
             "# or:  ros2 launch vpr_ros localize.launch.py params_file:=config/localize.yaml map_path:=maps/office",
             "vpr_localizer:", "  ros__parameters:"]
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


def localizer_config(p: dict):
    """The core's LocalizerConfig from the node's parameter values (what the node runs; benchmarks that
    run the same pipeline outside the node use it too)."""
    from vpr_ros.core.localizer import LocalizerConfig  # here: importing this module must not import torch

    return LocalizerConfig(
        mode=p["mode"], top_k=p["top_k"], rerank_top_k=p["rerank_top_k"],
        rerank=p["rerank"] if p["rerank"] not in RERANK_OFF else None,
        skip_margin=p["skip_margin"] if p["skip_margin"] >= 0 else None, min_inliers=p["min_inliers"],
        min_inlier_ratio=p["min_inlier_ratio"], accept_min_inliers=p["accept_min_inliers"],
        accept_min_similarity=p["accept_min_similarity"],
        accept_min_probability=p["accept_min_probability"], temporal_window=p["temporal_window"],
        temporal_tolerance=p["temporal_tolerance"], exclude_recent_s=p["exclude_recent_s"],
        exclude_recent_frames=p["exclude_recent_frames"], bootstrap_frames=p["bootstrap_frames"],
        preset=p["preset"], checkpoint=p["checkpoint"], max_keypoints=p["max_keypoints"], device=p["device"],
        precision=p["precision"], backend=p["backend"])
