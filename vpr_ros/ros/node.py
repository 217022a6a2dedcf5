"""`vpr_localizer`: the ROS 2 node. Thin: parameters, topics and services around core.localizer.

Images arrive on `image_topic` (sensor_msgs/Image), or on `<image_topic>/compressed`
(CompressedImage) with image_transport "compressed", as image_transport's republishers name it.
The subscription callback only gates and queues frames; one processing loop converts and processes
them: `main()` runs it on the main thread and the ROS callbacks on an executor thread. With
`queue_size` 1 the newest frame wins (latency stays bounded when frames come faster than they are
processed; the others are dropped and counted); a larger queue keeps frames in arrival order.

Publishes (relative names, remappable): `vpr/hypotheses` (PlaceHypotheses, every processed frame),
`vpr/loop_closure` (LoopClosure, accepted hypotheses; its header names the query camera frame),
`vpr/loop_closure_detection` (Float64MultiArray [t_query, t_match] for LIO-SAM-style back-ends,
optional), `vpr/pose` (PoseWithCovarianceStamped of the accepted map pose, localize mode),
`vpr/markers` (MarkerArray for RViz) and `/diagnostics`. Services: `vpr/load_map`, `vpr/save_map`.
Without the vpr_ros_interfaces package the node runs and publishes the standard topics only.

Nothing a sender or a user provides stops the node: a bad frame, camera info, odometry message or
map is refused with a log line and a counter; an exception in any callback is logged, counted and
answered. `main()` exits 0 after a requested shutdown, 2 on a bad configuration, 1 on an internal
failure that stopped it.

    vpr_localizer --ros-args --params-file config/localize.yaml -p map_path:=maps/office
"""

import faulthandler
import logging
import math
import os
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

from vpr_ros.core import LOGGER
from vpr_ros.core.camera import IntrinsicsError, intrinsics_for
from vpr_ros.core.confidence import position_covariance
from vpr_ros.core.images import ImageError, rescale_bit_depth
from vpr_ros.core.gate import FrameGate, FrameQueue
from vpr_ros.core.localizer import FrameResult, Localizer
from vpr_ros.core.map_store import MapError, VPRMap
from vpr_ros.core.metrics import latency_summary
from vpr_ros.ros.convert import ns_to_stamp, stamp_to_ns
from vpr_ros.ros.health import ERROR, OK, WARN, Health
from vpr_ros.ros.image_msgs import compressed_to_array, image_to_array
from vpr_ros.ros.interfaces import load_interfaces
from vpr_ros.ros.parameters import PARAMETERS, check_parameters, localizer_config

NAN = float("nan")
UNKNOWN_VARIANCE = 1e6  # covariance entry for a degree of freedom the measurement does not constrain
LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


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


class _RosoutHandler(logging.Handler):
    """Forwards the core's `logging` records (logger "vpr_ros") to the node's logger, hence /rosout."""

    def __init__(self, ros_logger):
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # a log line must never break the caller (e.g. after the context is gone)
            pass


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
    """Parameters, subscriptions, one processing loop and the publishers around a core Localizer."""

    def __init__(self, start_worker: bool = True, **kwargs):
        """start_worker=True runs the processing loop on a thread of its own (in-process use);
        `main()` passes False and runs `run_worker` on the main thread. Either way there is one loop."""
        super().__init__("vpr_localizer", **kwargs)
        for name, (default, description, spec) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(name, default, description, spec))
        self.params = {name: self.get_parameter(name).value for name in PARAMETERS}
        check_parameters(self.params)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._log_handler = _RosoutHandler(self.get_logger())
        LOGGER.addHandler(self._log_handler)
        LOGGER.setLevel(logging.INFO)
        LOGGER.propagate = False  # one copy of each line: through the node's logger (console and /rosout)
        p = self.params
        self.config = localizer_config(p)
        self.map_path = str(Path(p["map_path"]).expanduser().absolute()) if p["map_path"] else ""
        vpr_map = self._load_map(self.map_path) if self.map_path else None
        self.localizer = Localizer(self.config, vpr_map)
        self.config = self.localizer.config  # with device "auto" resolved
        self.gate = FrameGate(p["min_interval_s"], p["min_distance_m"], p["min_rotation_deg"])
        self.health = Health(p["diagnostics_window_s"], p["image_timeout_s"])
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
            qos = QoSProfile(depth=p["qos_depth"], reliability=qos_profile_sensor_data.reliability,
                             history=qos_profile_sensor_data.history, durability=qos_profile_sensor_data.durability)
        else:
            qos = QoSProfile(depth=p["qos_depth"], reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
        if p["image_transport"] == "compressed":
            self.image_topic = p["image_topic"].rstrip("/") + "/compressed"
            self.create_subscription(CompressedImage, self.image_topic, self._on_image, qos)
        else:
            self.image_topic = p["image_topic"]
            self.create_subscription(Image, self.image_topic, self._on_image, qos)
        self._camera_info = None  # (row-major K, (width, height)) of the last valid CameraInfo
        self._camera_K: dict[tuple, np.ndarray | None] = {}  # image size -> K for it (None: rejected)
        self._warned: set[str] = set()
        if p["camera_info_topic"]:
            self.create_subscription(CameraInfo, p["camera_info_topic"], self._guarded(self._on_camera_info), qos)
        self._odom = None  # (pose 7, monotonic arrival, frame id) of the last valid odometry
        if p["odom_topic"]:
            self.create_subscription(Odometry, p["odom_topic"], self._guarded(self._on_odom), 50)

        self._queue = FrameQueue(p["queue_size"])
        self._map_lock = threading.Lock()
        self._loop_lock = threading.Lock()  # held by the one processing loop
        self._worker = None
        if start_worker:
            self._worker = threading.Thread(target=self.run_worker, name="vpr_worker", daemon=True)
            self._worker.start()
        self._diag_timer = self.create_timer(p["diagnostics_period_s"], self._guarded(self._publish_diagnostics))
        size = len(self.localizer.vpr_map) if self.localizer.vpr_map is not None else 0
        self.get_logger().info(f"vpr_localizer: mode {p['mode']}, map {self.localizer.map_name or '(none yet)'} "
                               f"({size} frames), rerank {self.config.rerank or 'off'}, images on {self.image_topic} "
                               f"({p['image_transport']}, {p['qos_reliability']} QoS), queue {p['queue_size']}")
        if self.config.rerank is None and self.config.temporal_window == 0 and (
                vpr_map is None or vpr_map.uncertainty is None):
            self.get_logger().warning("loop closures rest on the global similarity alone (rerank off, no "
                                      "calibrated map, temporal_window 0): expect false ones; see docs/benchmarks.md")

    # ---- parameters -------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        # Parameters are read at start; refuse changes rather than pretend they took effect.
        names = [p.name for p in params if p.name in PARAMETERS]
        if names:
            return SetParametersResult(successful=False, reason=f"{names} are read at start-up; restart the node "
                                                                "(maps reload through vpr/load_map)")
        return SetParametersResult(successful=True)

    def _load_map(self, path: str) -> VPRMap:
        return VPRMap.load(Path(path).expanduser(), checkpoint=self.config.checkpoint or None)

    def _guarded(self, callback):
        """`callback` that logs and counts an exception instead of letting it end the executor; quiet
        once the context is shutting down (a timer may fire after it)."""
        def run(*args):
            try:
                return callback(*args)
            except Exception as exc:
                if not self.context.ok():
                    return None
                self.health.count("errors")
                self.get_logger().error(f"{callback.__name__} failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=5.0)
                return None
        run.__name__ = callback.__name__
        return run

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    # ---- inputs -----------------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        k = np.asarray(msg.k, np.float64)
        size = (int(msg.width), int(msg.height))
        roi = msg.roi
        if roi.width and roi.height and (roi.width, roi.height) != size:  # a region of the calibrated sensor
            k = k.reshape(3, 3).copy()
            k[0, 2] -= roi.x_offset
            k[1, 2] -= roi.y_offset
            size = (int(roi.width), int(roi.height))
        key = (k.tobytes(), size)
        if self._camera_info is not None and (self._camera_info[0].tobytes(), self._camera_info[1]) == key:
            return
        if not np.isfinite(k).all() or k.size != 9:
            self.health.count("bad_camera_info")
            self._warn_once(f"info:{k.tobytes()}", f"camera info on {self.params['camera_info_topic']} ignored: K "
                                                   "has NaN or infinite entries; frames are verified without a pose")
            return
        self._camera_info = (k.reshape(3, 3), size)
        self._camera_K = {}

    def _intrinsics(self, image_size: tuple[int, int]) -> np.ndarray | None:
        """K for images of this size from the last camera info; None (warned once, counted) when it does not fit."""
        info = self._camera_info
        if info is None:
            return None
        if image_size not in self._camera_K:
            try:
                self._camera_K[image_size] = intrinsics_for(info[0], info[1], image_size)
            except IntrinsicsError as exc:
                self._camera_K[image_size] = None
                self._warn_once(f"K:{info[0].tobytes()}:{info[1]}:{image_size}",
                                f"camera info on {self.params['camera_info_topic']} rejected for "
                                f"{image_size[0]}x{image_size[1]} frames: {exc}; frames are verified without a pose")
        if self._camera_K[image_size] is None:
            self.health.count("bad_camera_info")
        return self._camera_K[image_size]

    def _on_odom(self, msg: Odometry) -> None:
        q, t = msg.pose.pose.orientation, msg.pose.pose.position
        pose = np.array([t.x, t.y, t.z, q.x, q.y, q.z, q.w])
        norm = float(np.linalg.norm(pose[3:]))
        if not np.isfinite(pose).all() or abs(norm - 1.0) > 1e-3:
            self.health.count("bad_odometry")
            self.get_logger().warning(f"odometry on {self.params['odom_topic']} ignored: "
                                      + ("NaN or infinite pose" if not np.isfinite(pose).all()
                                         else f"quaternion of norm {norm:.4f}"), throttle_duration_sec=5.0)
            return
        frame = msg.header.frame_id or "odom"
        self._odom = (pose, time.monotonic(), frame)
        if self.config.mode == "slam":
            self.localizer.pose_frame_id = frame

    def _fresh_odometry(self, now: float) -> np.ndarray | None:
        if not self.params["odom_topic"]:
            return None
        odom = self._odom
        if odom is None or now - odom[1] > self.params["odom_timeout_s"]:
            self.health.count("stale_odometry")
            age = "none received" if odom is None else f"the last is {now - odom[1]:.1f} s old"
            self.get_logger().warning(f"no fresh odometry on {self.params['odom_topic']} ({age}): frames get no "
                                      "pose and pass the motion gate on time alone", throttle_duration_sec=10.0)
            return None
        return odom[0].copy()

    def _on_image(self, msg) -> None:
        try:
            self._admit(msg)
        except Exception as exc:  # never let one message end the executor
            self.health.count("errors")
            self.get_logger().error(f"image callback failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _admit(self, msg) -> None:
        now = time.monotonic()
        self.health.count("received")
        pose = self._fresh_odometry(now)
        if not self.gate.admit(stamp_to_ns(msg.header.stamp), pose):
            self.health.count("gated")
            return
        self.health.count("dropped", self._queue.put((msg, now, pose)))

    # ---- the processing loop ----------------------------------------------------------------
    def run_worker(self) -> None:
        """Process queued frames until stop_worker() (or destroy_node). One loop per node: a second
        concurrent call raises RuntimeError."""
        if not self._loop_lock.acquire(blocking=False):
            raise RuntimeError("the processing loop is already running; a node has exactly one")
        try:
            while not self._queue.closed:
                item = self._queue.get(timeout=0.5)
                if item is None:
                    continue
                try:
                    self._process(*item)
                except ImageError as exc:
                    self.health.count("bad_frames")
                    self.get_logger().warning(f"skipping a bad frame: {exc}", throttle_duration_sec=5.0)
                except Exception as exc:  # keep serving: one frame must never stop the node
                    self.health.count("errors")
                    self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
        finally:
            self._loop_lock.release()

    def _process(self, msg, arrived: float, pose) -> None:
        image = compressed_to_array(msg) if isinstance(msg, CompressedImage) else image_to_array(msg)
        image = rescale_bit_depth(image, self.params["bit_depth"])
        stamp_ns = stamp_to_ns(msg.header.stamp)
        camera_K = self._intrinsics((image.shape[1], image.shape[0]))
        with self._map_lock:
            result = self.localizer.process(image, stamp_ns, pose, camera_K)
            vpr_map = self.localizer.vpr_map
        self.health.count("processed")
        result.timings_ms["queue_and_convert"] = ((time.monotonic() - arrived) * 1e3
                                                  - result.timings_ms.get("pipeline", 0.0))
        self.health.record_stages(result.timings_ms)
        self._publish(msg.header, result, vpr_map, pose)

    # ---- outputs ----------------------------------------------------------------------------
    def _map_frame(self, vpr_map) -> str:
        return self.params["map_frame_id"] or (vpr_map.frame_id if vpr_map is not None else "map")

    def _publish(self, header, result: FrameResult, vpr_map, query_pose) -> None:
        """Build every message of the frame first, then publish them: a failure cannot leave half."""
        out = []
        if self.hypotheses_pub is not None:
            out.append((self.hypotheses_pub, self._hypotheses_msg(header, result, vpr_map)))
        if result.loop is not None:
            if self.loop_pub is not None:
                out.append((self.loop_pub, self._loop_msg(header, result, vpr_map)))
            if self.loop_array_pub is not None:
                out.append((self.loop_array_pub, Float64MultiArray(
                    data=[result.stamp_ns * 1e-9, result.loop.hypothesis.stamp_ns * 1e-9])))
            best = result.loop.hypothesis
            if self.config.mode == "localize" and self.params["publish_pose"] and best.pose is not None:
                pose = PoseWithCovarianceStamped()
                pose.header.stamp, pose.header.frame_id = header.stamp, self._map_frame(vpr_map)
                pose.pose.pose = _pose_msg(best.pose)
                cov = np.diag([UNKNOWN_VARIANCE] * 6)  # the map frame's orientation is not the query's
                cov[:3, :3] = _position_covariance(result.places, self.params["pose_sigma_m"])
                pose.pose.covariance = cov.ravel().tolist()
                out.append((self.pose_pub, pose))
        if result.places:
            out.append((self.marker_pub, self._markers(header, result, vpr_map, query_pose)))
        for publisher, msg in out:
            publisher.publish(msg)
        if result.loop is not None:
            self.health.count("loop_closures")

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
            item.map_key, item.map_stamp = h.key, ns_to_stamp(h.stamp_ns)
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
        # relative_pose is T_query_match in the query camera's optical frame: the image's frame names it
        out.header = Header(stamp=header.stamp, frame_id=header.frame_id)
        out.query_key = result.map_key if result.map_key is not None else result.frame_id
        out.query_stamp = header.stamp
        out.match_key, out.match_stamp = place.hypothesis.key, ns_to_stamp(place.hypothesis.stamp_ns)
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
        odom = self._odom
        if query_pose is not None and odom is not None and odom[2] == frame:  # the query's pose, where it shares the frame
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
        snap = self.health.snapshot()
        status = DiagnosticStatus(name="vpr_localizer: pipeline", hardware_id=self.get_name())
        vpr_map = self.localizer.vpr_map
        values = {"mode": self.config.mode, "map": self.localizer.map_name,
                  "map_size": len(vpr_map) if vpr_map is not None else 0,
                  "backend": self.localizer.backend_label, "device": self.config.device,
                  "search": vpr_map.index.label if vpr_map is not None else "",
                  "rerank": self.config.rerank or "off", "image_topic": self.image_topic,
                  "input_rate_hz": f"{snap['input_rate_hz']:.2f}", "processed_rate_hz": f"{snap['processed_rate_hz']:.2f}",
                  "seconds_since_last_image": f"{snap['since_last_image_s']:.1f}", "queued": len(self._queue),
                  **snap["totals"], **{f"recent_{k}": v for k, v in snap["recent"].items()}}
        for stage, samples in snap["stages"].items():
            summary = latency_summary(samples)
            values[f"{stage}_ms_p50"] = f"{summary['p50']:.1f}"
            values[f"{stage}_ms_p95"] = f"{summary['p95']:.1f}"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        level, status.message = self.health.level(snap)
        status.level = LEVELS[level]
        out = DiagnosticArray(status=[status])
        out.header.stamp = self.get_clock().now().to_msg()
        if self.context.ok():
            self.diag_pub.publish(out)

    # ---- services ---------------------------------------------------------------------------
    def _load_map_service(self, request, response):
        """Load request.map_path (empty: reload the configured map); the current map stays on any failure."""
        path = request.map_path.strip() or self.map_path
        if not path:
            response.success, response.message = False, ("no map_path in the request and no map configured to "
                                                         "reload (map_path parameter is empty)")
            return response
        path = os.path.normpath(Path(path).expanduser().absolute())
        try:
            vpr_map = self._load_map(path)
            with self._map_lock:
                self.localizer.set_map(vpr_map)
        except Exception as exc:  # noqa: BLE001: whatever a map file does, the caller gets an answer
            if not isinstance(exc, (MapError, ValueError, OSError)):
                self.health.count("errors")
            response.success = False
            response.message = f"map not loaded, the current map stays: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"vpr/load_map {path}: {response.message}")
            return response
        self.map_path = path
        response.success, response.message = True, f"loaded {vpr_map.name}"
        response.map_name, response.map_size = vpr_map.name, len(vpr_map)
        self.get_logger().info(f"loaded map {vpr_map.name} ({len(vpr_map)} frames) from {path}")
        return response

    def _save_map_service(self, request, response):
        """Save the current map atomically; only an existing vpr_ros map is ever replaced."""
        path = request.map_path.strip() or self.params["save_map_path"]
        if not path:
            response.success, response.message = False, "no map_path in the request and no save_map_path parameter"
            return response
        try:
            with self._map_lock:
                if self.localizer.vpr_map is None:
                    raise ValueError("no map yet (slam is still collecting its bootstrap frames)")
                saved = self.localizer.vpr_map.save(path, overwrite=request.overwrite)
                size = len(self.localizer.vpr_map)
        except Exception as exc:  # noqa: BLE001: the caller gets the true outcome, the node keeps running
            if not isinstance(exc, (FileExistsError, ValueError, OSError)):
                self.health.count("errors")
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"vpr/save_map {path}: {response.message}")
            return response
        response.success, response.message, response.map_path, response.map_size = True, "saved", str(saved), size
        self.get_logger().info(f"saved map ({size} frames) to {saved}")
        return response

    def stop_worker(self) -> None:
        if hasattr(self, "_queue"):  # construction may have failed before the queue existed
            self._queue.close()
        if getattr(self, "_worker", None) is not None:
            self._worker.join(timeout=10.0)

    def destroy_node(self) -> None:
        self.stop_worker()
        if hasattr(self, "_log_handler"):
            LOGGER.removeHandler(self._log_handler)
            if not LOGGER.handlers:
                LOGGER.propagate = True
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """The console script: 0 after a requested shutdown (SIGINT, SIGTERM), 2 on a bad configuration,
    1 when an internal failure stopped the node."""
    faulthandler.enable()  # a crash in a native library prints every thread's Python stack to stderr
    try:
        rclpy.init(args=args)
    except Exception as exc:  # e.g. a malformed --ros-args rule; rcl says which
        print(f"vpr_localizer: error: {exc}", flush=True)
        return 2
    node = None
    try:
        node = LocalizerNode(start_worker=False)
    except (ValueError, MapError, FileNotFoundError, ParameterException) as exc:
        print(f"vpr_localizer: error: {exc}", flush=True)
        _cleanup(node)
        return 2
    except Exception as exc:
        print(f"vpr_localizer: error: failed to start: {type(exc).__name__}: {exc}", flush=True)
        _cleanup(node)
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    failure: list[BaseException] = []

    def spin() -> None:
        try:
            executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception as exc:  # the executor itself failed: nothing can be received any more
            failure.append(exc)
            node.get_logger().fatal(f"the executor stopped: {type(exc).__name__}: {exc}")
        finally:
            node.stop_worker()  # shutdown (SIGINT/SIGTERM through rclpy's handler) ends the processing loop

    # the ROS callbacks on a background thread, the one processing loop on the main thread
    spinner = threading.Thread(target=spin, name="vpr_executor", daemon=True)
    spinner.start()
    try:
        node.run_worker()
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        failure.append(exc)
        node.get_logger().fatal(f"the processing loop stopped: {type(exc).__name__}: {exc}")
    finally:
        # the executor thread first: nothing of the node may be destroyed while it can still run a callback
        executor.shutdown(timeout_sec=10.0)
        spinner.join(timeout=30.0)
        if spinner.is_alive():
            failure.append(RuntimeError("executor thread did not stop"))
            node.get_logger().fatal("the executor thread did not stop within 30 s; exiting without destroying the node")
            rclpy.try_shutdown()
        else:
            _cleanup(node)
    return 1 if failure else 0


def _cleanup(node) -> None:
    if node is not None:
        try:
            node.destroy_node()
        except Exception:  # noqa: BLE001: shutting down anyway
            pass
    rclpy.try_shutdown()


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
