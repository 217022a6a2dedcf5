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

from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from visualization_msgs.msg import MarkerArray

from vpr_ros.core import LOGGER
from vpr_ros.core.inputs.gate import FrameGate, FrameQueue
from vpr_ros.core.inputs.images import ImageError, rescale_bit_depth
from vpr_ros.core.map.store import MapDamaged
from vpr_ros.core.pipeline.localizer import Localizer
from vpr_ros.core.pipeline.warm_up import warm_up
from vpr_ros.core.pipeline.results import FrameResult
from vpr_ros.ros import messages
from vpr_ros.ros.convert import stamp_to_ns
from vpr_ros.ros.health import Health
from vpr_ros.ros.image_msgs import compressed_to_array, image_qos, image_to_array
from vpr_ros.ros.interfaces import load_interfaces
from vpr_ros.ros.lifecycle import ManagedNode
from vpr_ros.ros.map_services import MapServices
from vpr_ros.ros.relocalize import RelocalizationIO
from vpr_ros.ros.side_inputs import SideInputs
from vpr_ros.ros.parameters import PARAMETERS, as_declared, check_parameters, descriptor, localizer_config
from vpr_ros.ros.ros_logging import RosoutHandler, guarded


class LocalizerNode(ManagedNode):
    """A managed node (ros.lifecycle, the Nav2 convention): parameters, subscriptions, one processing loop and
    the publishers around a core Localizer. configure loads and verifies the map, builds and warms up the
    pipeline and creates the publishers and services (a map that cannot be read fails the transition, never
    the process); activate subscribes; deactivate stops processing, keeping the map; cleanup releases it;
    shutdown ends the process with exit code 0. With `autostart` (the default) it starts as a plain node."""

    def __init__(self, start_worker: bool = True, **kwargs):
        """start_worker=True runs the processing loop on a thread of its own (in-process use);
        `main()` passes False and runs `run_worker` on the main thread. Either way there is one loop.
        With `autostart` the node is active when this returns; a failed configure raises its reason."""
        super().__init__("vpr_localizer", **kwargs)  # unconfigured (ros.lifecycle)
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
        self.localizer, self.relocalization = None, None
        self._inputs, self._entities = [], []  # subscriptions (activate), publishers and services (configure)
        self.image_topic = p["image_topic"]
        self.health = Health(p["diagnostics_window_s"], p["image_timeout_s"])
        self.msgs = load_interfaces(self.get_logger())
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)  # in every state
        self.inputs = SideInputs(self, p, self.health, lambda: "")  # configure makes them anew for its map
        self._queue = FrameQueue(p["queue_size"],
                                 on_drop=lambda item: self.inputs.depths.buffer.release(stamp_to_ns(item[0].header.stamp)))
        self._loop_lock = threading.Lock()  # held by the one processing loop
        self._serving = threading.Lock()  # held while a frame is processed; transitions wait for it
        self._worker = threading.Thread(target=self.run_worker, name="vpr_worker", daemon=True) if start_worker else None
        if self._worker is not None:
            self._worker.start()
        self._diag_timer = self.create_timer(p["diagnostics_period_s"], guarded(self, self.health, self._publish_diagnostics))
        if p["autostart"]:
            self.start()

    # ---- lifecycle (ros.lifecycle: what each transition does) --------------------------------
    def _configure(self) -> None:
        """Load and verify the map, build and warm up the pipeline, create publishers and services."""
        p = self.params
        # several robots share a map: a robot id names this one (by default its namespace)
        config = dataclasses.replace(localizer_config(p), robot_id=p["robot_id"]
                                     or self.get_namespace().strip("/").replace("/", "_"))
        map_path = str(Path(p["map_path"]).expanduser().absolute()) if p["map_path"] else ""
        checksums = {"before": True}.get(p["map_checksums"], p["map_checksums"])
        self.localizer = Localizer(config, map_path or None, {"verify_checksums": checksums,
                                                              "recheck_s": p["map_recheck_s"]})
        vpr_map = self.localizer.vpr_map
        self.config = self.localizer.config  # with device "auto" resolved
        warm_ms = warm_up(self.localizer)
        self.gate = FrameGate(p["min_interval_s"], p["min_distance_m"], p["min_rotation_deg"])
        self.map_services = MapServices(self.localizer, map_path, p["save_map_path"], self.health, self.get_logger())
        self._create_publishers_and_services(p)
        if p["initialpose_topic"] and p["mode"] == "localize":  # relocalization for the robot's 2-D localizer
            camera = vpr_map.camera if vpr_map is not None else None
            self.relocalization = RelocalizationIO(self, p, self._map_frame(vpr_map),
                                                   camera.camera_in_body if camera is not None else None, self.health)
            self._entities += self.relocalization.entities
        self.inputs = SideInputs(self, p, self.health, lambda: self._map_frame(self.localizer.vpr_map),
                                 self._odometry_frame)
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

    def _activate(self) -> None:
        self._subscribe(self.params)
        if self.relocalization is not None:
            self._inputs += self.relocalization.subscribe()
        self.get_logger().info(f"active: processing images on {self.image_topic}")

    def _finalize(self) -> None:
        self._queue.close()  # the processing loop ends, and with it the process (exit code 0)

    def _stop_inputs(self) -> None:
        """Unsubscribe, drop the frames waiting and wait for the one being processed."""
        self._active = False
        for entity in self._inputs:
            self.destroy_subscription(entity)
        self._inputs = []
        while (item := self._queue.get(timeout=0.0)) is not None:
            self.inputs.depths.buffer.release(stamp_to_ns(item[0].header.stamp))
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
        self._inputs = [self.create_subscription(kind, self.image_topic, self._on_image, qos),
                        *self.inputs.subscribe(qos)]

    def _odometry_frame(self, frame_id: str) -> None:
        if self.config.mode == "slam":  # the keyframe poses are in the odometry's frame
            self.localizer.pose_frame_id = frame_id

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
        pose = self.inputs.fresh_odometry(now)
        if not self.gate.admit(stamp_to_ns(msg.header.stamp), pose):
            self.health.count("gated")
            return
        self.inputs.depths.buffer.expect(stamp_to_ns(msg.header.stamp))  # its depth is kept until it is paired or dropped
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
                            self.inputs.depths.buffer.release(stamp_to_ns(item[0].header.stamp))
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
            camera_K = self.inputs.intrinsics((image.shape[1], image.shape[0]))
            depth = partial(self.inputs.depth_for, stamp_ns, arrived)  # paired when the frame first needs it
            with self.localizer.lock:  # the map the frame was answered from
                result = self.localizer.process(image, stamp_ns, pose, camera_K, depth, prior=self.inputs.priors.prior)
                vpr_map = self.localizer.vpr_map
        finally:
            self.inputs.depths.buffer.release(stamp_ns)
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
            self._frame_topics, query_pose if self.inputs.odometry.frame_id == frame else None)  # in the map frame only
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
            since = self.inputs.depths.buffer.since_last_s()
            values["seconds_since_last_depth"] = "never" if since is None else f"{since:.1f}"
        level, message = self.health.level(snap) if self._active else self.idle_status()
        # /diagnostics is shared by every robot's node: the status names this one (e.g. /robot1/vpr_localizer)
        name = self.get_fully_qualified_name()
        out = messages.diagnostics_msg(f"{name.lstrip('/')}: pipeline", name, level, message, values,
                                       self.get_clock().now().to_msg())
        if self.context.ok():
            self.diag_pub.publish(out)

    def stop_worker(self) -> None:
        if hasattr(self, "_queue"):  # construction may have failed before the queue existed
            self._queue.close()
        if hasattr(self, "inputs"):
            self.inputs.depths.buffer.close()
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

