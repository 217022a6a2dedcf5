"""`vpr_localizer`: the ROS 2 node. Thin: parameters, topics and services around core.localizer.

Images arrive on `image_topic` (sensor_msgs/Image, or CompressedImage with image_transport
"compressed"). The callback only gates and queues them; a worker thread converts and processes the
newest queued frame (the queue holds `queue_size` frames, older ones are dropped and counted), so
latency stays bounded when frames come faster than they can be processed.

Publishes (relative names, remappable): `vpr/hypotheses` (PlaceHypotheses, every processed frame),
`vpr/loop_closure` (LoopClosure, accepted hypotheses), `vpr/loop_closure_detection`
(Float64MultiArray [t_query, t_match] for LIO-SAM-style back-ends, optional), `vpr/pose`
(PoseWithCovarianceStamped of the best verified map pose, localize mode), `vpr/markers`
(MarkerArray for RViz) and `/diagnostics`. Services: `vpr/load_map`, `vpr/save_map`. Without the
vpr_ros_interfaces package the node runs and publishes the standard topics only.

    vpr_localizer --ros-args --params-file config/localize.yaml -p map_path:=maps/office
"""

import collections
import copy
import math
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseWithCovarianceStamped, Quaternion
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import ColorRGBA, Float64MultiArray, Header
from visualization_msgs.msg import Marker, MarkerArray

from vpr_ros.core.images import ImageError
from vpr_ros.core.confidence import position_covariance
from vpr_ros.core.localizer import FrameGate, FrameResult, Localizer, LocalizerConfig
from vpr_ros.core.map_store import MapError, VPRMap
from vpr_ros.core.matchers import MATCHERS
from vpr_ros.core.metrics import latency_summary
from vpr_ros.ros.convert import ns_to_stamp, stamp_to_ns
from vpr_ros.ros.image_msgs import compressed_to_array, image_to_array
from vpr_ros.ros.interfaces import load_interfaces

NAN = float("nan")
UNKNOWN_VARIANCE = 1e6  # covariance entry for a degree of freedom the measurement does not constrain

# name -> (default, description, range (lo, hi) or choices, or None)
PARAMETERS = {
    "mode": ("localize", "localize: against a prebuilt map; slam: online loop closure", ("localize", "slam")),
    "map_path": ("", "map directory (localize: required; slam: optional starting map)", None),
    "image_topic": ("/camera/image_raw", "camera image topic", None),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)",
                        ("raw", "compressed")),
    "camera_info_topic": ("", "sensor_msgs/CameraInfo topic for intrinsics (relative pose); empty: none", None),
    "odom_topic": ("", "nav_msgs/Odometry topic: keyframe motion gate and slam keyframe poses; empty: none", None),
    "qos_reliability": ("sensor_data", "image subscription QoS: sensor_data (best effort) or reliable",
                        ("sensor_data", "reliable")),
    "qos_depth": (5, "image subscription queue depth", (1, 100)),
    "queue_size": (1, "frames waiting for the worker; the newest wins, older ones are dropped", (1, 100)),
    "min_interval_s": (0.0, "process at most one frame per this many seconds", (0.0, 3600.0)),
    "min_distance_m": (0.0, "with odometry: process a frame after this much motion (0: off)", (0.0, 1000.0)),
    "min_rotation_deg": (0.0, "with odometry: ... or this much rotation (0: off)", (0.0, 180.0)),
    "top_k": (5, "hypotheses per frame (re-ranked ones when rerank is set)", (1, 100)),
    "rerank": ("", "matcher for re-ranking (empty or off: global retrieval only)", ("", "off") + tuple(MATCHERS)),
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
    "temporal_window": (0, "loop closure: previous frames whose best candidates must agree (0: off)", (0, 100)),
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
    "map_frame_id": ("", "frame of the map poses (empty: the map's own)", None),
    "publish_pose": (True, "localize mode: publish vpr/pose for accepted hypotheses with a map pose", None),
    "pose_sigma_m": (2.0, "standard deviation (m) of vpr/pose's position; with probabilities, doubt among "
                     "the hypotheses' poses widens it", (0.0, 1e6)),
    "publish_loop_array": (False, "publish vpr/loop_closure_detection (Float64MultiArray [t_query, t_match])",
                           None),
    "save_map_path": ("", "default directory for vpr/save_map when the request has none", None),
    "diagnostics_period_s": (1.0, "period of /diagnostics", (0.1, 3600.0)),
}


def _descriptor(name: str, default, description: str, spec) -> ParameterDescriptor:
    """rclpy enforces the type of `default` and a numeric range; choices of a string are checked by the node."""
    desc = ParameterDescriptor(name=name, description=description)
    if spec is None:
        return desc
    if isinstance(default, str):
        desc.additional_constraints = f"one of {list(spec)}"
    elif isinstance(default, int):
        desc.integer_range = [IntegerRange(from_value=int(spec[0]), to_value=int(spec[1]), step=1)]
    else:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec[0]), to_value=float(spec[1]))]
    return desc


def _quaternion(rotation: np.ndarray) -> Quaternion:
    """3x3 rotation -> geometry_msgs/Quaternion."""
    m = rotation
    w = math.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    n = math.sqrt(w * w + x * x + y * y + z * z)
    return Quaternion(x=x / n, y=y / n, z=z / n, w=w / n)


def _pose_msg(pose7) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in pose7[:3])
    p.orientation = Quaternion(x=float(pose7[3]), y=float(pose7[4]), z=float(pose7[5]), w=float(pose7[6]))
    return p


class LocalizerNode(Node):
    """Parameters, subscriptions, the worker thread and the publishers around a core Localizer."""

    def __init__(self, start_worker: bool = True, **kwargs):
        """start_worker=False leaves the processing loop to the caller (`run_worker`, on the main
        thread: torch runs about 1.5x slower on a secondary thread here, measured on LighterGlue)."""
        super().__init__("vpr_localizer", **kwargs)
        for name, (default, description, spec) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(name, default, description, spec))
        self.params = {name: self.get_parameter(name).value for name in PARAMETERS}
        self._check_parameters(self.params)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        p = self.params
        self.config = LocalizerConfig(
            mode=p["mode"], top_k=p["top_k"], rerank_top_k=p["rerank_top_k"],
            rerank=p["rerank"] if p["rerank"] not in ("", "off") else None,
            skip_margin=p["skip_margin"] if p["skip_margin"] >= 0 else None, min_inliers=p["min_inliers"],
            min_inlier_ratio=p["min_inlier_ratio"], accept_min_inliers=p["accept_min_inliers"],
            accept_min_similarity=p["accept_min_similarity"],
            accept_min_probability=p["accept_min_probability"], temporal_window=p["temporal_window"],
            temporal_tolerance=p["temporal_tolerance"], exclude_recent_s=p["exclude_recent_s"],
            exclude_recent_frames=p["exclude_recent_frames"], bootstrap_frames=p["bootstrap_frames"],
            preset=p["preset"], checkpoint=p["checkpoint"], max_keypoints=p["max_keypoints"], device=p["device"],
            precision=p["precision"], backend=p["backend"])
        vpr_map = self._load_map(p["map_path"]) if p["map_path"] else None
        self.localizer = Localizer(self.config, vpr_map)
        self.config = self.localizer.config  # with device "auto" resolved
        self.gate = FrameGate(p["min_interval_s"], p["min_distance_m"], p["min_rotation_deg"])
        self.msgs = load_interfaces(self.get_logger())

        self.hypotheses_pub = self.loop_pub = None
        if self.msgs is not None:
            self.hypotheses_pub = self.create_publisher(self.msgs.PlaceHypotheses, "vpr/hypotheses", 10)
            self.loop_pub = self.create_publisher(self.msgs.LoopClosure, "vpr/loop_closure", 10)
            self.create_service(self.msgs.LoadMap, "vpr/load_map", self._load_map_service)
            self.create_service(self.msgs.SaveMap, "vpr/save_map", self._save_map_service)
        self.loop_array_pub = (self.create_publisher(Float64MultiArray, "vpr/loop_closure_detection", 10)
                               if p["publish_loop_array"] else None)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "vpr/pose", 10)
        self.marker_pub = self.create_publisher(MarkerArray, "vpr/markers", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        if p["qos_reliability"] == "sensor_data":
            qos = copy.copy(qos_profile_sensor_data)
            qos.depth = p["qos_depth"]
        else:
            qos = QoSProfile(depth=p["qos_depth"], reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
        msg_type = CompressedImage if p["image_transport"] == "compressed" else Image
        self.create_subscription(msg_type, p["image_topic"], self._on_image, qos)
        self.camera_K = None
        if p["camera_info_topic"]:
            self.create_subscription(CameraInfo, p["camera_info_topic"], self._on_camera_info, qos)
        self.odom_pose = None
        if p["odom_topic"]:
            self.create_subscription(Odometry, p["odom_topic"], self._on_odom, 50)

        self.counts = collections.Counter()
        self.stage_ms: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=200))
        self._arrivals = collections.deque(maxlen=200)
        self._processed_at = collections.deque(maxlen=200)
        self._queue: collections.deque = collections.deque(maxlen=p["queue_size"])
        self._cv = threading.Condition()
        self._map_lock = threading.Lock()
        self._running = True
        self._worker = None
        if start_worker:
            self._worker = threading.Thread(target=self.run_worker, name="vpr_worker", daemon=True)
            self._worker.start()
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        size = len(self.localizer.vpr_map) if self.localizer.vpr_map is not None else 0
        self.get_logger().info(f"vpr_localizer: mode {p['mode']}, map {self.localizer.map_name or '(none yet)'} "
                               f"({size} frames), rerank {self.config.rerank or 'off'}, images on {p['image_topic']} "
                               f"({p['image_transport']}, {p['qos_reliability']} QoS)")

    # ---- parameters -------------------------------------------------------------------------
    @staticmethod
    def _check_parameters(values: dict) -> None:
        """What the declarations cannot express (types and ranges are enforced by rclpy at declaration)."""
        for name, value in values.items():
            default, _, spec = PARAMETERS[name]
            if isinstance(default, str) and spec is not None and value not in spec:
                raise ValueError(f"parameter {name} must be one of {list(spec)}, got {value!r}")
        if values["mode"] == "localize" and not values["map_path"]:
            raise ValueError("mode localize needs map_path (a map directory built with vpr_build_map)")

    def _on_set_parameters(self, params) -> SetParametersResult:
        # Parameters are read at start; refuse changes rather than pretend they took effect.
        names = [p.name for p in params if p.name in PARAMETERS]
        if names:
            return SetParametersResult(successful=False, reason=f"{names} are read at start-up; restart the node "
                                                                "(maps reload through vpr/load_map)")
        return SetParametersResult(successful=True)

    def _load_map(self, path: str) -> VPRMap:
        return VPRMap.load(Path(path).expanduser(), checkpoint=self.config.checkpoint or None)

    # ---- inputs -----------------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        k = np.asarray(msg.k, np.float64).reshape(3, 3)
        self.camera_K = k if k[0, 0] > 0 and k[1, 1] > 0 else None

    def _on_odom(self, msg: Odometry) -> None:
        q, t = msg.pose.pose.orientation, msg.pose.pose.position
        self.odom_pose = np.array([t.x, t.y, t.z, q.x, q.y, q.z, q.w])

    def _on_image(self, msg) -> None:
        now = time.monotonic()
        self.counts["received"] += 1
        self._arrivals.append(now)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if not self.gate.admit(stamp_ns, self.odom_pose):
            self.counts["gated"] += 1
            return
        with self._cv:
            if len(self._queue) == self._queue.maxlen:
                self.counts["dropped"] += 1
            self._queue.append((msg, now, None if self.odom_pose is None else self.odom_pose.copy()))
            self._cv.notify()

    # ---- worker -----------------------------------------------------------------------------
    def run_worker(self) -> None:
        """Process queued frames until stop_worker() (or destroy_node)."""
        while self._running:
            with self._cv:
                while self._running and not self._queue:
                    self._cv.wait(timeout=0.5)
                if not self._running:
                    return
                msg, arrived, pose = self._queue.pop()  # newest
                self.counts["dropped"] += len(self._queue)
                self._queue.clear()
            try:
                self._process(msg, arrived, pose)
            except ImageError as exc:
                self.counts["bad_frames"] += 1
                self.get_logger().warning(f"skipping a bad frame: {exc}", throttle_duration_sec=5.0)
            except Exception as exc:  # keep serving: one frame must never stop the node
                self.counts["errors"] += 1
                self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _process(self, msg, arrived: float, pose) -> None:
        image = compressed_to_array(msg) if isinstance(msg, CompressedImage) else image_to_array(msg)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        with self._map_lock:
            result = self.localizer.process(image, stamp_ns, pose, self.camera_K)
            vpr_map = self.localizer.vpr_map
        self.counts["processed"] += 1
        self._processed_at.append(time.monotonic())
        result.timings_ms["queue_and_convert"] = ((time.monotonic() - arrived) * 1e3
                                                  - result.timings_ms.get("pipeline", 0.0))
        for stage, ms in result.timings_ms.items():
            self.stage_ms[stage].append(ms)
        self._publish(msg.header, result, vpr_map, pose)

    # ---- outputs ----------------------------------------------------------------------------
    def _map_frame(self, vpr_map) -> str:
        return self.params["map_frame_id"] or (vpr_map.frame_id if vpr_map is not None else "map")

    def _publish(self, header, result: FrameResult, vpr_map, query_pose) -> None:
        if self.hypotheses_pub is not None:
            self.hypotheses_pub.publish(self._hypotheses_msg(header, result, vpr_map))
        if result.loop is not None:
            self.counts["loop_closures"] += 1
            if self.loop_pub is not None:
                self.loop_pub.publish(self._loop_msg(header, result, vpr_map))
            if self.loop_array_pub is not None:
                self.loop_array_pub.publish(Float64MultiArray(
                    data=[result.stamp_ns * 1e-9, result.loop.hypothesis.stamp_ns * 1e-9]))
            best = result.loop.hypothesis
            if self.config.mode == "localize" and self.params["publish_pose"] and best.pose is not None:
                out = PoseWithCovarianceStamped()
                out.header.stamp, out.header.frame_id = header.stamp, self._map_frame(vpr_map)
                out.pose.pose = _pose_msg(best.pose)
                cov = np.diag([UNKNOWN_VARIANCE] * 6)  # the map frame's orientation is not the query's
                cov[:3, :3] = _position_covariance(result.places, self.params["pose_sigma_m"])
                out.pose.covariance = cov.ravel().tolist()
                self.pose_pub.publish(out)
        if result.places:
            self.marker_pub.publish(self._markers(header, result, vpr_map, query_pose))

    def _hypotheses_msg(self, header, result: FrameResult, vpr_map):
        m = self.msgs
        out = m.PlaceHypotheses()
        out.header = header
        out.query_id = result.frame_id
        if vpr_map is not None:
            out.map_name, out.map_size = vpr_map.name, len(vpr_map)
            out.descriptor = vpr_map.descriptor.preset
        out.map_frame_id = self._map_frame(vpr_map)
        out.backend = self.localizer.backend_label
        out.query_uncertainty = result.query_uncertainty
        for place in result.places:
            h, v = place.hypothesis, place.verification
            item = m.PlaceHypothesis()
            item.map_key, item.map_stamp = h.key, ns_to_stamp(max(h.stamp_ns, 0))
            item.has_pose = h.pose is not None
            if h.pose is not None:
                item.map_pose = _pose_msg(h.pose)
            item.has_gps = h.gps is not None
            item.latitude, item.longitude, item.altitude = h.gps if h.gps is not None else (NAN, NAN, NAN)
            item.rank, item.global_rank, item.global_similarity = place.rank, h.rank, h.similarity
            item.rerank_score = place.rerank_score
            item.verified = place.verified
            item.match_count = place.match_count
            item.inlier_count = v.inlier_count if v is not None else 0
            item.inlier_ratio = v.inlier_ratio if v is not None else NAN
            item.verification_note = "" if place.verified else place.note
            item.query_uncertainty = result.query_uncertainty
            item.map_uncertainty, item.probability = place.map_uncertainty, place.probability
            out.hypotheses.append(item)
        out.timing = [m.StageTiming(stage=stage, ms=float(ms)) for stage, ms in result.timings_ms.items()]
        return out

    def _loop_msg(self, header, result: FrameResult, vpr_map):
        m = self.msgs
        place = result.loop
        v = place.verification
        out = m.LoopClosure()
        out.header = Header(stamp=header.stamp, frame_id=self._map_frame(vpr_map))
        out.query_key = result.map_key if result.map_key is not None else result.frame_id
        out.query_stamp = ns_to_stamp(result.stamp_ns)
        out.match_key, out.match_stamp = place.hypothesis.key, ns_to_stamp(max(place.hypothesis.stamp_ns, 0))
        out.map_name = vpr_map.name if vpr_map is not None else ""
        out.probability, out.global_similarity = place.probability, place.hypothesis.similarity
        out.inlier_count = v.inlier_count if v is not None else 0
        cov = np.diag([UNKNOWN_VARIANCE] * 6)
        out.relative_pose.orientation.w = 1.0
        out.translation_scale_known = False
        if v is None or not v.verified:
            out.method, out.method_detail = m.LoopClosure.METHOD_GLOBAL_DESCRIPTOR, "global descriptor only"
        else:
            out.method = {"fundamental": m.LoopClosure.METHOD_FUNDAMENTAL, "homography": m.LoopClosure.METHOD_HOMOGRAPHY,
                          "essential": m.LoopClosure.METHOD_ESSENTIAL}.get(v.model, m.LoopClosure.METHOD_GLOBAL_DESCRIPTOR)
            out.method_detail = f"{self.config.rerank}, {v.model}, {v.inlier_count} inliers" + (
                f"; {v.note}" if v.note else "")
            if v.rotation is not None:
                out.relative_pose.orientation = _quaternion(v.rotation)
                # about 1 degree at 100 inliers, growing as 1/sqrt(inliers)
                rot_var = math.radians(1.0) ** 2 * 100.0 / max(v.inlier_count, 1)
                cov[3:, 3:] = np.eye(3) * rot_var
            if v.translation is not None:  # a unit direction: the scale stays unconstrained
                out.relative_pose.position = Point(x=float(v.translation[0]), y=float(v.translation[1]),
                                                   z=float(v.translation[2]))
        out.covariance = cov.ravel().tolist()
        return out

    def _markers(self, header, result: FrameResult, vpr_map, query_pose) -> MarkerArray:
        frame = self._map_frame(vpr_map)
        markers = MarkerArray()
        best = result.places[0]
        if best.hypothesis.pose is None:
            return markers
        match = Marker(ns="vpr_match", id=0, type=Marker.SPHERE, action=Marker.ADD)
        match.header.stamp, match.header.frame_id = header.stamp, frame
        match.pose = _pose_msg(best.hypothesis.pose)
        match.scale.x = match.scale.y = match.scale.z = 0.5
        accepted = result.loop is not None
        match.color = ColorRGBA(r=0.1 if accepted else 1.0, g=0.9, b=0.1, a=0.9)
        markers.markers.append(match)
        if query_pose is not None:  # the query's odometry pose, and a line to its match (one frame assumed)
            query = Marker(ns="vpr_query", id=2, type=Marker.SPHERE, action=Marker.ADD)
            query.header = match.header
            query.pose = _pose_msg(query_pose)
            query.scale.x = query.scale.y = query.scale.z = 0.5
            query.color = ColorRGBA(r=0.2, g=0.4, b=1.0, a=0.9)
            markers.markers.append(query)
            link = Marker(ns="vpr_link", id=1, type=Marker.LINE_LIST, action=Marker.ADD)
            link.header = match.header
            link.pose.orientation.w = 1.0
            link.scale.x = 0.05
            link.color = match.color
            link.points = [Point(x=float(query_pose[0]), y=float(query_pose[1]), z=float(query_pose[2])),
                           match.pose.position]
            markers.markers.append(link)
        return markers

    def _publish_diagnostics(self) -> None:
        def rate(stamps) -> float:
            now = time.monotonic()
            recent = [t for t in stamps if now - t <= 5.0]
            return len(recent) / 5.0

        status = DiagnosticStatus(name="vpr_localizer: pipeline", hardware_id=self.get_name())
        vpr_map = self.localizer.vpr_map
        values = {"mode": self.config.mode, "map": self.localizer.map_name,
                  "map_size": len(vpr_map) if vpr_map is not None else 0,
                  "backend": self.localizer.backend_label, "device": self.config.device,
                  "search": vpr_map.index.label if vpr_map is not None else "",
                  "rerank": self.config.rerank or "off",
                  "input_rate_hz": f"{rate(self._arrivals):.2f}", "processed_rate_hz": f"{rate(self._processed_at):.2f}",
                  **{k: self.counts[k] for k in ("received", "processed", "gated", "dropped", "bad_frames", "errors",
                                                 "loop_closures")}}
        for stage, samples in list(self.stage_ms.items()):
            summary = latency_summary(list(samples))
            values[f"{stage}_ms_p50"] = f"{summary['p50']:.1f}"
            values[f"{stage}_ms_p95"] = f"{summary['p95']:.1f}"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        if self.counts["errors"]:
            status.level, status.message = DiagnosticStatus.ERROR, f"{self.counts['errors']} frames failed"
        elif self.counts["bad_frames"]:
            status.level, status.message = DiagnosticStatus.WARN, f"{self.counts['bad_frames']} bad frames skipped"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        out = DiagnosticArray(status=[status])
        out.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(out)

    # ---- services ---------------------------------------------------------------------------
    def _load_map_service(self, request, response):
        try:
            vpr_map = self._load_map(request.map_path)
            with self._map_lock:
                self.localizer.set_map(vpr_map)
        except (MapError, ValueError, OSError) as exc:
            response.success, response.message = False, f"map not loaded, the current map stays: {exc}"
            return response
        response.success, response.message = True, f"loaded {vpr_map.name}"
        response.map_name, response.map_size = vpr_map.name, len(vpr_map)
        self.get_logger().info(f"loaded map {vpr_map.name} ({len(vpr_map)} frames) from {request.map_path}")
        return response

    def _save_map_service(self, request, response):
        path = request.map_path or self.params["save_map_path"]
        if not path:
            response.success, response.message = False, "no map_path in the request and no save_map_path parameter"
            return response
        try:
            with self._map_lock:
                if self.localizer.vpr_map is None:
                    raise ValueError("no map yet (slam is still collecting its bootstrap frames)")
                saved = self.localizer.vpr_map.save(Path(path).expanduser(), overwrite=request.overwrite)
                size = len(self.localizer.vpr_map)
        except (FileExistsError, ValueError, OSError) as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success, response.message, response.map_path, response.map_size = True, "saved", str(saved), size
        return response

    def stop_worker(self) -> None:
        if hasattr(self, "_cv"):  # construction may have failed before the queue existed
            self._running = False
            with self._cv:
                self._cv.notify_all()
        if getattr(self, "_worker", None) is not None:
            self._worker.join(timeout=5.0)

    def destroy_node(self) -> None:
        self.stop_worker()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    try:
        rclpy.init(args=args)
    except Exception as exc:  # e.g. a malformed --ros-args rule; rcl says which
        print(f"vpr_localizer: error: {exc}")
        return 2
    try:
        node = LocalizerNode()
    except (ValueError, MapError, FileNotFoundError, ParameterException) as exc:
        print(f"vpr_localizer: error: {exc}")
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass
        finally:
            node.stop_worker()  # shutdown (e.g. SIGINT through rclpy's handler) ends the processing loop

    # ROS callbacks on a background thread, the models on the main thread (faster, see __init__)
    spinner = threading.Thread(target=spin, name="vpr_executor", daemon=True)
    spinner.start()
    try:
        node.run_worker()
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0



def _position_covariance(places, sigma_m: float) -> np.ndarray:
    """3 x 3 position covariance about the best hypothesis: sigma_m² I, widened by the calibrated doubt
    among the posed hypotheses (confidence.position_covariance) when probabilities exist."""
    posed = [p for p in places if p.hypothesis.pose is not None]
    if not posed or posed[0] is not places[0] or not np.isfinite(places[0].probability):
        return sigma_m ** 2 * np.eye(3)
    return position_covariance(np.array([p.hypothesis.pose[:3] for p in posed]),
                               np.array([p.probability for p in posed]), sigma_m)


if __name__ == "__main__":
    raise SystemExit(main())
