"""`vpr_localizer`: parameters, topics and services around a core Localizer (docs/node.md).

The image callback only gates and queues frames (core.inputs.gate); one processing loop converts and
processes them (ros.main runs it on the main thread, the callbacks on an executor thread). What the
inputs are worth (odometry freshness, position priors, depth pairing) is decided in core.inputs;
messages are built in ros.messages from the core's finished answer; the map services are
ros.map_services. A bad frame, camera info, odometry message or map is refused with a log line and a
counter; an exception in any callback is logged, counted and answered, never the end of the node.
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
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix
from std_msgs.msg import Float64MultiArray
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from visualization_msgs.msg import MarkerArray

from vpr_ros.core import LOGGER
from vpr_ros.core.inputs.gate import FrameGate, FrameQueue
from vpr_ros.core.inputs.sync import OdometryInput, PriorInput, Throttle
from vpr_ros.core.inputs.camera import CameraIntrinsics
from vpr_ros.core.inputs.depth_pairing import DepthStream
from vpr_ros.core.inputs.images import ImageError, rescale_bit_depth
from vpr_ros.core.map.store import MapDamaged, MapError
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.pipeline.results import FrameResult
from vpr_ros.ros import messages
from vpr_ros.ros.convert import stamp_to_ns
from vpr_ros.ros.health import ERROR, OK, Health
from vpr_ros.ros.image_msgs import compressed_to_array, depth_to_metres, image_qos, image_to_array
from vpr_ros.ros.interfaces import load_interfaces
from vpr_ros.ros.map_services import MapServices
from vpr_ros.ros.relocalize import RelocalizationIO
from vpr_ros.ros.parameters import PARAMETERS, as_declared, check_parameters, descriptor, localizer_config
from vpr_ros.ros.ros_logging import RosoutHandler, guarded


class LocalizerNode(LifecycleNode):
    """A managed node (the Nav2 convention): parameters, subscriptions, one processing loop and the
    publishers around a core Localizer.

    configure loads and verifies the map, builds the pipeline, warms it up and creates the publishers and
    services; a map that cannot be read fails the transition with the reason (logged and in /diagnostics),
    never the process. activate subscribes to the inputs; deactivate unsubscribes and stops processing,
    keeping the map; cleanup releases the map; shutdown (from any state) ends the process with exit code 0.
    With `autostart` (the default) the node configures and activates itself at start, as a plain node."""

    def __init__(self, start_worker: bool = True, **kwargs):
        """start_worker=True runs the processing loop on a thread of its own (in-process use);
        `main()` passes False and runs `run_worker` on the main thread. Either way there is one loop.
        With `autostart` the node is active when this returns; a failed configure raises its reason."""
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
        self.lifecycle_state, self.configure_error = "unconfigured", None  # the last failed configure's exception
        self.localizer, self.relocalization = None, None
        self._active = False
        self._inputs, self._entities = [], []  # subscriptions (activate), publishers and services (configure)
        self.image_topic = p["image_topic"]
        self.health = Health(p["diagnostics_window_s"], p["image_timeout_s"])
        self.msgs = load_interfaces(self.get_logger())
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)  # in every state
        self._queue = FrameQueue(p["queue_size"],
                                 on_drop=lambda item: self._depths.buffer.release(stamp_to_ns(item[0].header.stamp)))
        self._depths = DepthStream(p["depth_topic"], p["depth_tolerance_s"], p["depth_wait_s"], depth_to_metres, None)
        self._loop_lock = threading.Lock()  # held by the one processing loop
        self._serving = threading.Lock()  # held while a frame is processed; transitions wait for it
        self._worker = threading.Thread(target=self.run_worker, name="vpr_worker", daemon=True) if start_worker else None
        if self._worker is not None:
            self._worker.start()
        self._diag_timer = self.create_timer(p["diagnostics_period_s"], guarded(self, self.health, self._publish_diagnostics))
        if p["autostart"]:
            self.start()

    @property
    def active(self) -> bool:
        return self._active

    def start(self) -> None:
        """configure, then activate (autostart); raises the reason when configure fails."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise self.configure_error or RuntimeError("configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("activate failed; see the log")

    # ---- lifecycle transitions --------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and verify the map, build and warm up the pipeline, create publishers and services. A map or
        configuration that cannot serve fails the transition (unconfigured, the reason logged and kept for
        /diagnostics); the process lives on."""
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001: a failed transition, never a dead process
            self.configure_error = exc
            self._release()
            self.get_logger().error(f"configure failed: {_reason(exc)}")
            return TransitionCallbackReturn.FAILURE
        self.configure_error, self.lifecycle_state = None, "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the inputs and process frames."""
        self._subscribe(self.params)
        if self.relocalization is not None:
            self._inputs += self.relocalization.subscribe()
        self._active, self.lifecycle_state = True, "active"
        self.get_logger().info(f"active: processing images on {self.image_topic}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop processing; the map stays loaded (activate resumes at once)."""
        self._stop_inputs()
        self.lifecycle_state = "inactive"
        self.get_logger().info("inactive: frames are not processed; the map stays loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the map, the pipeline, the publishers and the services."""
        self._release()
        self.get_logger().info("unconfigured: the map is released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: release everything and end the processing loop (the process exits with 0)."""
        self._release()
        self.lifecycle_state = "finalized"
        self.get_logger().info("shut down (lifecycle)")
        self._queue.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release what was built and go back to unconfigured."""
        self._release()
        self.get_logger().error(f"lifecycle error in state {state.label}: released; configure again")
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        p = self.params
        # several robots share a map: a robot id names this one (by default its namespace)
        config = dataclasses.replace(localizer_config(p), robot_id=p["robot_id"]
                                     or self.get_namespace().strip("/").replace("/", "_"))
        self._priors, self._said, self._odometry = PriorInput(), Throttle(10.0), OdometryInput(p["odom_timeout_s"])
        map_path = str(Path(p["map_path"]).expanduser().absolute()) if p["map_path"] else ""
        checksums = {"before": True}.get(p["map_checksums"], p["map_checksums"])
        self.localizer = Localizer(config, map_path or None, {"verify_checksums": checksums,
                                                              "recheck_s": p["map_recheck_s"]})
        vpr_map = self.localizer.vpr_map
        self.config = self.localizer.config  # with device "auto" resolved
        warm_ms = self.localizer.warm_up()
        self.gate = FrameGate(p["min_interval_s"], p["min_distance_m"], p["min_rotation_deg"])
        self.map_services = MapServices(self.localizer, map_path, p["save_map_path"], self.health, self.get_logger())
        self._create_publishers_and_services(p)
        if p["initialpose_topic"] and p["mode"] == "localize":  # relocalization for the robot's 2-D localizer
            camera = vpr_map.camera if vpr_map is not None else None
            self.relocalization = RelocalizationIO(self, p, self._map_frame(vpr_map),
                                                   camera.camera_in_body if camera is not None else None, self.health)
            self._entities += self.relocalization.entities
        self.camera, self.depth_camera, self._once = CameraIntrinsics(), CameraIntrinsics(), Throttle(float("inf"))
        self._depths = DepthStream(p["depth_topic"], p["depth_tolerance_s"], p["depth_wait_s"], depth_to_metres,
                                   self.depth_camera.for_size if p["depth_camera_info_topic"] else None)
        topic = p["image_topic"].rstrip("/") + "/compressed" if p["image_transport"] == "compressed" else p["image_topic"]
        self.image_topic = self.resolve_topic_name(topic)  # as a namespace and remappings make it
        size = len(vpr_map) if vpr_map is not None else 0
        self.get_logger().info(f"vpr_localizer: mode {p['mode']}, map {self.localizer.map_name or '(none yet)'} "
                               f"({size} frames), rerank {self.config.rerank or 'off'}, images on {self.image_topic} "
                               f"({p['image_transport']}, {p['qos_reliability']} QoS), queue {p['queue_size']}, "
                               f"warmed up in {warm_ms:.0f} ms")
        if self.config.rerank is None and self.config.temporal_window == 0 and (
                vpr_map is None or vpr_map.uncertainty is None):
            self.get_logger().warning("loop closures rest on the global similarity alone (rerank off, no "
                                      "calibrated map, temporal_window 0): expect false ones; see docs/benchmarks.md")

    def _stop_inputs(self) -> None:
        """Unsubscribe, drop the frames waiting and wait for the one being processed."""
        self._active = False
        for entity in self._inputs:
            self.destroy_subscription(entity)
        self._inputs = []
        while (item := self._queue.get(timeout=0.0)) is not None:
            self._depths.buffer.release(stamp_to_ns(item[0].header.stamp))
        with self._serving:  # a frame in flight finishes (and publishes) before the transition completes
            pass

    def _release(self) -> None:
        """Back to unconfigured: inputs, publishers, services and the map go."""
        self._stop_inputs()
        for entity in self._entities:
            if hasattr(entity, "srv_type"):
                self.destroy_service(entity)
            else:
                self.destroy_publisher(entity)
        self._entities, self._outputs, self.relocalization = [], {}, None
        with self._serving:
            if self.localizer is not None:
                self.localizer.close()
            self.localizer = None
        self.lifecycle_state = "unconfigured"

    def _create_publishers_and_services(self, p: dict) -> None:
        self._outputs = {"pose": self.create_publisher(PoseWithCovarianceStamped, "vpr/pose", 10),
                         "markers": self.create_publisher(MarkerArray, "vpr/markers", 10)}
        services = []
        if self.msgs is not None:
            self._outputs["hypotheses"] = self.create_publisher(self.msgs.PlaceHypotheses, "vpr/hypotheses", 10)
            self._outputs["loop_closure"] = self.create_publisher(self.msgs.LoopClosure, "vpr/loop_closure", 10)
            services += [self.create_service(self.msgs.LoadMap, "vpr/load_map", self.map_services.load),
                         self.create_service(self.msgs.SaveMap, "vpr/save_map", self.map_services.save)]
        if p["publish_loop_array"]:
            self._outputs["loop_closure_detection"] = self.create_publisher(
                Float64MultiArray, "vpr/loop_closure_detection", 10)
        self._entities = list(self._outputs.values()) + services
        # what each frame publishes: vpr/pose only where it is a fix in the map (localize mode, publish_pose)
        self._frame_topics = set(self._outputs) - (set() if p["mode"] == "localize" and p["publish_pose"] else {"pose"})

    def _subscribe(self, p: dict) -> None:
        """Images (raw or compressed) with the configured QoS, and the optional camera info and odometry."""
        qos = image_qos(p["qos_reliability"], p["qos_depth"])
        kind = CompressedImage if p["image_transport"] == "compressed" else Image
        self._inputs = [self.create_subscription(kind, self.image_topic, self._on_image, qos)]
        for kind, name, callback, depth in ((CameraInfo, "camera_info_topic", self._on_camera_info, qos),
                                            (Image, "depth_topic", self._on_depth, qos),
                                            (CameraInfo, "depth_camera_info_topic", self._on_depth_camera_info, qos),
                                            (Odometry, "odom_topic", self._on_odom, 50),
                                            (PoseWithCovarianceStamped, "prior_topic", self._on_prior, 10),
                                            (NavSatFix, "prior_gps_topic", self._on_gps_prior, 10)):
            if p[name] and (name != "depth_camera_info_topic" or p["depth_topic"]):  # depth info only with depth
                self._inputs.append(self.create_subscription(kind, p[name], guarded(self, self.health, callback), depth))

    # ---- parameters -------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:  # read at start: refuse, never pretend
        names = [p.name for p in params if p.name in PARAMETERS]
        if names:
            return SetParametersResult(successful=False, reason=f"{names} are read at start-up; restart the node "
                                                                "(maps reload through vpr/load_map)")
        return SetParametersResult(successful=True)

    def recheck_map(self) -> None:
        """Verify the map's files read from disk against their checksums now (SIGUSR1); damage stops the node."""
        localizer = self.localizer
        checked = localizer is not None and localizer.recheck_map()
        name = localizer.map_name if localizer is not None else ""
        self.get_logger().info(f"map recheck asked: {'verifying the' if checked else 'the map has no'} files read "
                               f"from disk of {name or 'no map'}")

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
            if self._once.due(f"{topic}:{list(msg.k)}:{camera.calibration is not None}", 0.0):
                self.get_logger().warning(f"camera info on {self.params[topic]} ignored: {error}; "
                                          f"{camera.instead(consequence)}")

    def _on_depth(self, msg: Image) -> None:  # kept while a waiting frame may need it (core.inputs.depth_pairing)
        self._depths.buffer.add(stamp_to_ns(msg.header.stamp), msg)

    def _depth_for(self, stamp_ns: int, arrived: float) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """The core's DepthSource for the frame of `stamp_ns` (arrived at monotonic `arrived`): called when it
        first needs its depth, after retrieval and matching, so the depth stream has had that long to deliver.
        A depth image that cannot be used is counted and said (throttled), never raised."""
        if not self.params["depth_topic"]:
            return None, None, ""
        got = self._depths.for_frame(stamp_ns, arrived)
        if got.problem:  # one call site per throttle: rclpy refuses a site whose throttle changes
            self.health.count(got.problem)
            if got.problem == "stale_depth":
                self.get_logger().warning(got.log, throttle_duration_sec=10.0)
            else:
                self.get_logger().warning(got.log, throttle_duration_sec=5.0)
        return got.depth, got.depth_K, got.note

    def _intrinsics(self, image_size: tuple[int, int]) -> np.ndarray | None:
        """K for images of this size from the last camera info; None (warned once, counted) when it does not fit."""
        K = self.camera.for_size(image_size)
        if K is None and image_size in self.camera.rejected:
            self.health.count("bad_camera_info")
            size = f"{image_size[0]}x{image_size[1]}"
            if self._once.due(f"K:{self.camera.calibration[0].tobytes()}:{self.camera.calibration[1]}:{size}", 0.0):
                self.get_logger().warning(f"camera info on {self.params['camera_info_topic']} rejected for {size} frames: "
                                          f"{self.camera.rejected[image_size]}; frames are verified without a pose")
        return K

    def _on_odom(self, msg: Odometry) -> None:
        q, t = msg.pose.pose.orientation, msg.pose.pose.position
        why = self._odometry.update([t.x, t.y, t.z, q.x, q.y, q.z, q.w], msg.header.frame_id, time.monotonic())
        if why:
            self.health.count("bad_odometry")
            self.get_logger().warning(f"odometry on {self.params['odom_topic']} ignored: {why}",
                                      throttle_duration_sec=5.0)
        elif self.config.mode == "slam":
            self.localizer.pose_frame_id = self._odometry.frame_id

    def _on_prior(self, msg: PoseWithCovarianceStamped) -> None:
        p = msg.pose.pose.position
        self._prior_said(self._priors.from_pose((p.x, p.y, p.z), msg.pose.covariance, stamp_to_ns(msg.header.stamp),
                                                msg.header.frame_id, self._map_frame(self.localizer.vpr_map)), "pose")

    def _on_gps_prior(self, msg: NavSatFix) -> None:
        self._prior_said(self._priors.from_gps((msg.latitude, msg.longitude, msg.altitude), msg.position_covariance,
                                               msg.position_covariance_type, msg.status.status,
                                               stamp_to_ns(msg.header.stamp)), "gps")

    def _prior_said(self, why: str, kind: str) -> None:
        """Count a prior that cannot be used; say each reason at most every 10 s, naming its topic."""
        if not why:
            return
        self.health.count("bad_prior")
        if self._said.due(f"{kind}:{why}", time.monotonic()):
            topic = self.params["prior_gps_topic"] if kind == "gps" else self.params["prior_topic"]
            self.get_logger().warning(f"position prior on {topic} ignored: {why}; the whole map is searched "
                                      "when the last good prior is stale")

    def _fresh_odometry(self, now: float) -> np.ndarray | None:
        if not self.params["odom_topic"]:
            return None
        pose, why = self._odometry.fresh(now)
        if pose is None:
            self.health.count("stale_odometry")
            self.get_logger().warning(f"no fresh odometry on {self.params['odom_topic']} ({why}): frames get no "
                                      "pose and pass the motion gate on time alone", throttle_duration_sec=10.0)
        return pose

    def _on_image(self, msg) -> None:
        try:
            self._admit(msg)
        except Exception as exc:  # never let one message end the executor
            self.health.count("errors")
            self.get_logger().error(f"image callback failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _admit(self, msg) -> None:
        if not self._active:  # a frame delivered while the node deactivates
            return
        now = time.monotonic()
        self.health.count("received")
        pose = self._fresh_odometry(now)
        if not self.gate.admit(stamp_to_ns(msg.header.stamp), pose):
            self.health.count("gated")
            return
        self._depths.buffer.expect(stamp_to_ns(msg.header.stamp))  # its depth is kept until it is paired or dropped
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
                    with self._serving:
                        if self.localizer is not None:  # a map verified in the background stops the node once damaged
                            self.localizer.check_map()
                    continue
                try:
                    with self._serving:
                        if self._active and self.localizer is not None:
                            self._process(*item)
                        else:
                            self._depths.buffer.release(stamp_to_ns(item[0].header.stamp))
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
            image = rescale_bit_depth(compressed_to_array(msg) if isinstance(msg, CompressedImage)
                                      else image_to_array(msg), self.params["bit_depth"])
            camera_K = self._intrinsics((image.shape[1], image.shape[0]))
            depth = partial(self._depth_for, stamp_ns, arrived)  # paired when the frame first needs it
            with self.localizer.lock:  # the map the frame was answered from
                result = self.localizer.process(image, stamp_ns, pose, camera_K, depth, prior=self._priors.prior)
                vpr_map = self.localizer.vpr_map
        finally:
            self._depths.buffer.release(stamp_ns)
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
        frame = self._map_frame(vpr_map)
        out = messages.frame_messages(
            self.msgs, header, result, vpr_map, frame, self.localizer.backend_label, self.config.robot_id,
            self.localizer.session.id if self.config.mode == "slam" else "",
            self._frame_topics, query_pose if self._odometry.frame_id == frame else None)  # in the map frame only
        for topic, msg in out.items():
            self._outputs[topic].publish(msg)
        if self.relocalization is not None:
            self.relocalization.offer(header, result)
        if result.loop is not None:
            self.health.count("loop_closures")
            self.health.count("metric_loop_closures", int(result.metric is not None))

    def _publish_diagnostics(self) -> None:
        snap, localizer = self.health.snapshot(), self.localizer
        if localizer is None:  # unconfigured: nothing serves; say why when configure failed
            fields = {"mode": self.params["mode"], "map": "", "map_size": 0}
        else:
            vpr_map = localizer.vpr_map
            fields = {"mode": self.config.mode, "robot_id": self.config.robot_id, "map": localizer.map_name,
                      "map_size": len(vpr_map) if vpr_map is not None else 0, "backend": localizer.backend_label,
                      "device": self.config.device, "search": vpr_map.index.label if vpr_map is not None else "",
                      "rerank": self.config.rerank or "off"}
        values = self.health.values(snap, {**fields, "lifecycle_state": self.lifecycle_state,
                                           "image_topic": self.image_topic, "queued": len(self._queue)})
        if self.params["depth_topic"]:  # frames pair their depth only when a loop closure needs it: say the stream's state
            since = self._depths.buffer.since_last_s()
            values["seconds_since_last_depth"] = "never" if since is None else f"{since:.1f}"
        level, message = self.health.level(snap) if self._active else self._idle_status()
        # /diagnostics is shared by every robot's node: the status names this one (e.g. /robot1/vpr_localizer)
        name = self.get_fully_qualified_name()
        out = messages.diagnostics_msg(f"{name.lstrip('/')}: pipeline", name, level, message, values,
                                       self.get_clock().now().to_msg())
        if self.context.ok():
            self.diag_pub.publish(out)

    def _idle_status(self) -> tuple[int, str]:
        """The diagnostic level and message of a node that does not process frames (not active)."""
        if self.configure_error is not None:
            return ERROR, f"unconfigured: configure failed: {_reason(self.configure_error)}"
        if self.lifecycle_state == "inactive":
            return OK, "inactive (lifecycle): frames are not processed; the map stays loaded"
        return OK, f"{self.lifecycle_state} (lifecycle): no map loaded, frames are not processed"

    def stop_worker(self) -> None:
        if hasattr(self, "_queue"):  # construction may have failed before the queue existed
            self._queue.close()
        if hasattr(self, "_depths"):
            self._depths.buffer.close()
        if getattr(self, "_worker", None) is not None:
            self._worker.join(timeout=10.0)

    def destroy_node(self) -> None:
        self.stop_worker()
        if getattr(self, "localizer", None) is not None:
            self.localizer.close()
        if hasattr(self, "_log_handler"):
            LOGGER.removeHandler(self._log_handler)
            if not LOGGER.handlers:
                LOGGER.propagate = True
        super().destroy_node()


def _reason(exc: BaseException) -> str:
    """An exception as the reason of a failed transition: its message, with the type where it says more."""
    known = (ValueError, MapError, FileNotFoundError, ParameterException)
    return str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
