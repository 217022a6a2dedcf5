"""`vpr_localizer`: parameters, topics and services around a core Localizer (docs/node.md).

The image callback only gates and queues frames (core.gate); one processing loop converts and
processes them (ros.main runs it on the main thread, the callbacks on an executor thread). Messages
are built in ros.messages, the map services are ros.map_services. A bad frame, camera info,
odometry message or map is refused with a log line and a counter; an exception in any callback is
logged, counted and answered, never the end of the node.
"""

import dataclasses
import logging
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix
from std_msgs.msg import Float64MultiArray
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from visualization_msgs.msg import MarkerArray

from vpr_ros.core import LOGGER
from vpr_ros.core.evaluation.metrics import latency_summary
from vpr_ros.core.gate import FrameGate, FrameQueue
from vpr_ros.core.inputs.camera import CameraIntrinsics
from vpr_ros.core.inputs.depth import DepthError
from vpr_ros.core.inputs.depth_pairing import DepthBuffer
from vpr_ros.core.inputs.images import ImageError, rescale_bit_depth
from vpr_ros.core.localizer import FrameResult, Localizer
from vpr_ros.core.maps.map_store import MapDamaged, VPRMap
from vpr_ros.core.maps.prior import PositionPrior
from vpr_ros.ros import map_services, messages
from vpr_ros.ros.convert import stamp_to_ns
from vpr_ros.ros.health import Health
from vpr_ros.ros.image_msgs import compressed_to_array, depth_to_metres, image_to_array
from vpr_ros.ros.interfaces import load_interfaces
from vpr_ros.ros.parameters import PARAMETERS, as_declared, check_parameters, descriptor, localizer_config
from vpr_ros.ros.ros_logging import RosoutHandler


class LocalizerNode(Node):
    """Parameters, subscriptions, one processing loop and the publishers around a core Localizer."""

    def __init__(self, start_worker: bool = True, **kwargs):
        """start_worker=True runs the processing loop on a thread of its own (in-process use);
        `main()` passes False and runs `run_worker` on the main thread. Either way there is one loop."""
        super().__init__("vpr_localizer", **kwargs)
        for name, (default, _, _) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor(name))
        self.params = {name: as_declared(name, self.get_parameter(name).value) for name in PARAMETERS}
        check_parameters(self.params)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._log_handler = RosoutHandler(self.get_logger())
        LOGGER.addHandler(self._log_handler)
        LOGGER.setLevel(logging.INFO)
        LOGGER.propagate = False  # one copy of each line: through the node's logger (console and /rosout)
        p = self.params
        # several robots share a map: a robot id names this one (by default its namespace)
        self.config = dataclasses.replace(localizer_config(p), robot_id=p["robot_id"]
                                          or self.get_namespace().strip("/").replace("/", "_"))
        self._prior: PositionPrior | None = None
        self._prior_warned: dict[str, float] = {}  # reason -> when it was last said
        self.map_path = str(Path(p["map_path"]).expanduser().absolute()) if p["map_path"] else ""
        vpr_map = self.read_map(self.map_path) if self.map_path else None
        self.localizer = Localizer(self.config, vpr_map)
        self.config = self.localizer.config  # with device "auto" resolved
        self.gate = FrameGate(p["min_interval_s"], p["min_distance_m"], p["min_rotation_deg"])
        self.health = Health(p["diagnostics_window_s"], p["image_timeout_s"])
        self.msgs = load_interfaces(self.get_logger())

        self._create_publishers_and_services(p)
        self._subscribe(p)
        self.image_topic = self.resolve_topic_name(self.image_topic)  # as a namespace and remappings make it
        self._queue = FrameQueue(p["queue_size"],
                                 on_drop=lambda item: self._depths.release(stamp_to_ns(item[0].header.stamp)))
        self.map_lock = threading.Lock()
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

    def _create_publishers_and_services(self, p: dict) -> None:
        self.hypotheses_pub = self.loop_pub = None
        if self.msgs is not None:
            self.hypotheses_pub = self.create_publisher(self.msgs.PlaceHypotheses, "vpr/hypotheses", 10)
            self.loop_pub = self.create_publisher(self.msgs.LoopClosure, "vpr/loop_closure", 10)
            self.create_service(self.msgs.LoadMap, "vpr/load_map", partial(map_services.load_map, self))
            self.create_service(self.msgs.SaveMap, "vpr/save_map", partial(map_services.save_map, self))
        self.loop_array_pub = (self.create_publisher(Float64MultiArray, "vpr/loop_closure_detection", 10)
                               if p["publish_loop_array"] else None)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "vpr/pose", 10)
        self.marker_pub = self.create_publisher(MarkerArray, "vpr/markers", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _subscribe(self, p: dict) -> None:
        """Images (raw or compressed) with the configured QoS, and the optional camera info and odometry."""
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
        self.camera = CameraIntrinsics()
        self._warned: set[str] = set()
        if p["camera_info_topic"]:
            self.create_subscription(CameraInfo, p["camera_info_topic"], self._guarded(self._on_camera_info), qos)
        self._depths = DepthBuffer(int(p["depth_tolerance_s"] * 1e9))  # what the waiting frames may need
        self.depth_camera = CameraIntrinsics()
        if p["depth_topic"]:
            self.create_subscription(Image, p["depth_topic"], self._guarded(self._on_depth), qos)
            if p["depth_camera_info_topic"]:
                self.create_subscription(CameraInfo, p["depth_camera_info_topic"],
                                         self._guarded(self._on_depth_camera_info), qos)
        self._odom = None  # (pose 7, monotonic arrival, frame id) of the last valid odometry
        if p["odom_topic"]:
            self.create_subscription(Odometry, p["odom_topic"], self._guarded(self._on_odom), 50)
        if p["prior_topic"]:
            self.create_subscription(PoseWithCovarianceStamped, p["prior_topic"], self._guarded(self._on_prior), 10)
        if p["prior_gps_topic"]:
            self.create_subscription(NavSatFix, p["prior_gps_topic"], self._guarded(self._on_gps_prior), 10)

    # ---- parameters -------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        # Parameters are read at start; refuse changes rather than pretend they took effect.
        names = [p.name for p in params if p.name in PARAMETERS]
        if names:
            return SetParametersResult(successful=False, reason=f"{names} are read at start-up; restart the node "
                                                                "(maps reload through vpr/load_map)")
        return SetParametersResult(successful=True)

    def read_map(self, path: str) -> VPRMap:
        checksums = {"before": True}.get(self.params["map_checksums"], self.params["map_checksums"])
        return VPRMap.load(Path(path).expanduser(), checkpoint=self.config.checkpoint or None,
                           verify_checksums=checksums, recheck_s=self.params["map_recheck_s"])

    def recheck_map(self) -> None:
        """Verify the map files read from disk against their checksums now (SIGUSR1); a damaged one stops the
        node as at start."""
        checksums = self.localizer.vpr_map.checksums if self.localizer.vpr_map is not None else None
        if checksums is None:
            self.get_logger().info("map recheck asked: the map has no files read from disk while it serves")
            return
        self.get_logger().info(f"map recheck asked: verifying {self.localizer.map_name}'s files read from disk")
        checksums.recheck_now()

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
        self._update_intrinsics(self.camera, msg, "camera_info_topic", "frames are verified without a pose")

    def _on_depth_camera_info(self, msg: CameraInfo) -> None:
        self._update_intrinsics(self.depth_camera, msg, "depth_camera_info_topic", "depth images are not used")

    def _update_intrinsics(self, camera: CameraIntrinsics, msg: CameraInfo, topic: str, consequence: str) -> None:
        """A CameraInfo into `camera`; one that cannot be used is counted and warned once, saying what is used
        instead: the previous good calibration when there is one, else nothing (`consequence`)."""
        roi = msg.roi
        error = camera.update(msg.k, (int(msg.width), int(msg.height)), (roi.x_offset, roi.y_offset, roi.width, roi.height))
        if error is not None:
            self.health.count("bad_camera_info")
            if camera.calibration is not None:
                (k, (width, height)) = camera.calibration
                instead = (f"the last good calibration stays in use (fx {k[0, 0]:g}, fy {k[1, 1]:g}, cx {k[0, 2]:g}, "
                           f"cy {k[1, 2]:g} at {width}x{height}); fix the camera driver's CameraInfo")
            else:
                instead = f"{consequence} until a usable CameraInfo arrives; fix the camera driver's CameraInfo"
            self._warn_once(f"{topic}:{list(msg.k)}:{camera.calibration is not None}",
                            f"camera info on {self.params[topic]} ignored: {error}; {instead}")

    def _on_depth(self, msg: Image) -> None:
        """Keep the depth images the waiting frames may need; each frame is paired with the nearest in stamp."""
        self._depths.add(stamp_to_ns(msg.header.stamp), msg)

    def _depth_for(self, stamp_ns: int, arrived: float) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """(depth in metres, its own K or None, why none) for the colour frame of `stamp_ns` that arrived at
        `arrived` (monotonic): the depth image nearest in stamp once one is within depth_tolerance_s, waiting
        until depth_wait_s after the frame's arrival at most. Called when the frame first needs its depth (the
        core's DepthSource), after retrieval and matching, so the depth stream has had that long to deliver.
        A depth image that cannot be used is counted and said (throttled), never raised."""
        if not self.params["depth_topic"]:
            return None, None, ""
        tolerance = self.params["depth_tolerance_s"]
        pairing = self._depths.pair(stamp_ns, arrived + self.params["depth_wait_s"])
        msg = pairing.payload
        if msg is None:
            note = (f"no depth image received on {self.params['depth_topic']}" if pairing.offset_s is None else
                    f"the nearest depth image is {abs(pairing.offset_s):.3f} s "
                    f"{'older' if pairing.offset_s < 0 else 'newer'} than the frame (depth_tolerance_s {tolerance:g})")
            self.health.count("stale_depth")
            self.get_logger().warning(f"{note}: loop closures keep a translation direction ({pairing.describe()})",
                                      throttle_duration_sec=10.0)
            return None, None, note
        try:
            depth = depth_to_metres(msg)
        except DepthError as exc:
            self.health.count("bad_depth")
            self.get_logger().warning(f"depth image rejected ({exc.reason}): {exc}", throttle_duration_sec=5.0)
            return None, None, f"depth image rejected: {exc}"
        depth_K = None
        if self.params["depth_camera_info_topic"]:
            depth_K = self.depth_camera.for_size((depth.shape[1], depth.shape[0]))
            if depth_K is None:
                self.health.count("bad_depth")
                note = "no usable CameraInfo for the depth image yet"
                self.get_logger().warning(note, throttle_duration_sec=10.0)
                return None, None, note
        return depth, depth_K, ""

    def _intrinsics(self, image_size: tuple[int, int]) -> np.ndarray | None:
        """K for images of this size from the last camera info; None (warned once, counted) when it does not fit."""
        K = self.camera.for_size(image_size)
        if K is None and image_size in self.camera.rejected:
            self.health.count("bad_camera_info")
            self._warn_once(f"K:{self.camera.calibration[0].tobytes()}:{self.camera.calibration[1]}:{image_size}",
                            f"camera info on {self.params['camera_info_topic']} rejected for {image_size[0]}x"
                            f"{image_size[1]} frames: {self.camera.rejected[image_size]}; frames are verified "
                            "without a pose")
        return K

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

    def _on_prior(self, msg: PoseWithCovarianceStamped) -> None:
        frame = self._map_frame(self.localizer.vpr_map)
        if msg.header.frame_id and msg.header.frame_id != frame:
            self._reject_prior(f"it is in frame {msg.header.frame_id!r}, the map's poses in {frame!r}")
            return
        p = msg.pose.pose.position
        covariance = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)[:3, :3]
        self._set_prior((p.x, p.y, p.z), covariance, msg.header.stamp, "pose")

    def _on_gps_prior(self, msg: NavSatFix) -> None:
        if msg.status.status < 0:  # STATUS_NO_FIX (-1), or STATUS_UNKNOWN (-2: the default of newer sensor_msgs)
            self._reject_prior("the receiver has no fix" if msg.status.status == -1 else
                               f"its fix status is {msg.status.status} (unknown: the driver does not fill status)",
                               "gps")
            return
        covariance = np.asarray(msg.position_covariance, np.float64).reshape(3, 3)
        if msg.position_covariance_type == 0:  # COVARIANCE_TYPE_UNKNOWN: no region can be drawn
            self._reject_prior("its covariance is unknown (position_covariance_type 0)", "gps")
            return
        self._set_prior((msg.latitude, msg.longitude, msg.altitude), covariance, msg.header.stamp, "gps")

    def _set_prior(self, position, covariance, stamp, kind: str) -> None:
        try:
            self._prior = PositionPrior(tuple(float(v) for v in position), covariance, stamp_to_ns(stamp), kind)
        except ValueError as exc:
            self._reject_prior(str(exc), kind)

    def _reject_prior(self, why: str, kind: str = "pose") -> None:
        """Count a prior that cannot be used; say each reason at most every 10 s (a receiver without a fix
        sends one every cycle, and a second reason must not hide behind the first), naming the topic it came on."""
        self.health.count("bad_prior")
        now = time.monotonic()
        if now - self._prior_warned.get(f"{kind}:{why}", -1e9) >= 10.0:
            self._prior_warned[f"{kind}:{why}"] = now
            topic = self.params["prior_gps_topic"] if kind == "gps" else self.params["prior_topic"]
            self.get_logger().warning(f"position prior on {topic} ignored: {why}; the whole map is searched "
                                      "when the last good prior is stale")

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
        self._depths.expect(stamp_to_ns(msg.header.stamp))  # its depth is kept until it is paired or dropped
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
                    checksums = self.localizer.vpr_map.checksums if self.localizer.vpr_map is not None else None
                    if checksums is not None:  # a map verified in the background stops the node once found damaged
                        checksums.raise_if_damaged()
                    continue
                try:
                    self._process(*item)
                except ImageError as exc:
                    self.health.count("bad_frames")
                    self.get_logger().warning(f"skipping a bad frame: {exc}", throttle_duration_sec=5.0)
                except MapDamaged:  # the map failed its background checksum: stop rather than answer from it
                    raise
                except Exception as exc:  # keep serving: one frame must never stop the node
                    self.health.count("errors")
                    self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
        finally:
            self._loop_lock.release()

    def _process(self, msg, arrived: float, pose) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            image = compressed_to_array(msg) if isinstance(msg, CompressedImage) else image_to_array(msg)
            image = rescale_bit_depth(image, self.params["bit_depth"])
            camera_K = self._intrinsics((image.shape[1], image.shape[0]))
            depth = partial(self._depth_for, stamp_ns, arrived)  # paired when the frame first needs it
            with self.map_lock:
                result = self.localizer.process(image, stamp_ns, pose, camera_K, depth, prior=self._prior)
                vpr_map = self.localizer.vpr_map
        finally:
            self._depths.release(stamp_ns)
        self.health.count("processed")
        self.health.count("prior_searches", int(result.search_frames is not None))
        if result.depth_rejected:
            self.health.count("bad_depth")
            self.get_logger().warning(f"{result.scale_note} ({result.depth_rejected})", throttle_duration_sec=5.0)
        result.timings_ms["queue_and_convert"] = ((time.monotonic() - arrived) * 1e3
                                                  - result.timings_ms.get("pipeline", 0.0))
        self.health.record_stages(result.timings_ms)
        self._publish(msg.header, result, vpr_map, pose)

    # ---- outputs ----------------------------------------------------------------------------
    def _map_frame(self, vpr_map) -> str:
        return self.params["map_frame_id"] or (vpr_map.frame_id if vpr_map is not None else "map")

    def _publish(self, header, result: FrameResult, vpr_map, query_pose) -> None:
        """Build every message of the frame first, then publish them: a failure cannot leave half."""
        frame, out = self._map_frame(vpr_map), []
        if self.hypotheses_pub is not None:
            out.append((self.hypotheses_pub, messages.hypotheses_msg(self.msgs, header, result, vpr_map, frame,
                                                                     self.localizer.backend_label, self.config.robot_id)))
        if result.loop is not None:
            if self.loop_pub is not None:
                session = self.localizer.session.id if self.config.mode == "slam" else ""
                out.append((self.loop_pub, messages.loop_msg(self.msgs, header, result, vpr_map, self.config.rerank,
                                                             self.config.robot_id, session)))
            if self.loop_array_pub is not None:
                out.append((self.loop_array_pub, Float64MultiArray(
                    data=[result.stamp_ns * 1e-9, result.loop.hypothesis.stamp_ns * 1e-9])))
            if (self.config.mode == "localize" and self.params["publish_pose"]
                    and result.loop.hypothesis.pose is not None):
                out.append((self.pose_pub, messages.localized_pose_msg(header, result, frame,
                                                                       self.params["pose_sigma_m"], vpr_map)))
        if result.places:
            odom = self._odom  # the query's marker only where its pose shares the map frame
            shown = query_pose if odom is not None and odom[2] == frame else None
            out.append((self.marker_pub, messages.markers_msg(header, result, frame, shown)))
        for publisher, msg in out:
            publisher.publish(msg)
        if result.loop is not None:
            self.health.count("loop_closures")
            self.health.count("metric_loop_closures", int(result.metric is not None))

    def _publish_diagnostics(self) -> None:
        snap = self.health.snapshot()
        vpr_map = self.localizer.vpr_map
        values = {"mode": self.config.mode, "robot_id": self.config.robot_id, "map": self.localizer.map_name,
                  "map_size": len(vpr_map) if vpr_map is not None else 0,
                  "backend": self.localizer.backend_label, "device": self.config.device,
                  "search": vpr_map.index.label if vpr_map is not None else "",
                  "rerank": self.config.rerank or "off", "image_topic": self.image_topic,
                  "input_rate_hz": f"{snap['input_rate_hz']:.2f}", "processed_rate_hz": f"{snap['processed_rate_hz']:.2f}",
                  "seconds_since_last_image": f"{snap['since_last_image_s']:.1f}", "queued": len(self._queue),
                  **snap["totals"], **{f"recent_{k}": v for k, v in snap["recent"].items()}}
        if self.params["depth_topic"]:  # frames pair their depth only when a loop closure needs it: say the stream's state
            since = self._depths.since_last_s()
            values["seconds_since_last_depth"] = "never" if since is None else f"{since:.1f}"
        for stage, samples in snap["stages"].items():
            summary = latency_summary(samples)
            values[f"{stage}_ms_p50"], values[f"{stage}_ms_p95"] = f"{summary['p50']:.1f}", f"{summary['p95']:.1f}"
        level, message = self.health.level(snap)
        # /diagnostics is shared by every robot's node: the status names this one (e.g. /robot1/vpr_localizer)
        out = messages.diagnostics_msg(f"{self.get_fully_qualified_name().lstrip('/')}: pipeline",
                                       self.get_fully_qualified_name(), level, message, values,
                                       self.get_clock().now().to_msg())
        if self.context.ok():
            self.diag_pub.publish(out)

    def stop_worker(self) -> None:
        if hasattr(self, "_queue"):  # construction may have failed before the queue existed
            self._queue.close()
        if hasattr(self, "_depths"):
            self._depths.close()
        if getattr(self, "_worker", None) is not None:
            self._worker.join(timeout=10.0)

    def destroy_node(self) -> None:
        self.stop_worker()
        vpr_map = self.localizer.vpr_map if hasattr(self, "localizer") else None
        if vpr_map is not None and vpr_map.checksums is not None:
            vpr_map.checksums.stop()
        if hasattr(self, "_log_handler"):
            LOGGER.removeHandler(self._log_handler)
            if not LOGGER.handlers:
                LOGGER.propagate = True
        super().destroy_node()
