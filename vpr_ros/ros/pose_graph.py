"""`vpr_pose_graph`: the reference pose-graph back-end as a ROS 2 node, a thin shell around
core.posegraph.PoseGraph (GTSAM iSAM2).

    vpr_pose_graph --ros-args --params-file config/pose_graph.yaml

Inputs: odometry (nav_msgs/Odometry, `odom_topic`) as keyframes with its covariance; the localizer's
`vpr/loop_closure` (vpr_ros_interfaces/LoopClosure) as between factors, carried into the body frame with the
camera's mounting (`camera_in_body`, else the map's recorded mounting from `map_path`); in localize mode its
`vpr/pose` (geometry_msgs/PoseWithCovarianceStamped, the camera's metric pose in the map) as priors
(`fix_topic`). Outputs: the optimised keyframes as nav_msgs/Path (`path_topic`), the map -> odom correction
as geometry_msgs/TransformStamped (`correction_topic`) and on /tf when tf2_msgs is installed (every ROS 2
install has it; the PyPI wheels used in development do not), and /diagnostics with what was taken and
refused. Bad input (a closure whose stamps match no keyframe, a NaN covariance, a closure from the future,
odometry that jumps) is refused with a counter and a throttled log line, never a crash. Exit codes: 0 after
SIGINT/SIGTERM, 2 on a bad configuration.
"""

import dataclasses
import json
import threading
import time
from pathlib import Path as FilePath

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from vpr_ros.core.map.camera import MapCamera
from vpr_ros.core.matching.transforms import pose7
try:  # gtsam is the back-end's alone: without it the console script says so (main)
    from vpr_ros.core.posegraph.factors import pose_matrix
    from vpr_ros.core.posegraph.graph import GraphSettings, PoseGraph
    GTSAM_MISSING = None
except ImportError as exc:  # pragma: no cover - depends on the install
    GTSAM_MISSING = exc
from vpr_ros.ros import messages
from vpr_ros.ros.health import ERROR, OK, WARN
from vpr_ros.ros.convert import ns_to_stamp, stamp_to_ns
from vpr_ros.ros.interfaces import load_interfaces
from vpr_ros.ros.parameters import help_text, wants_help

# name -> (default, description); GraphSettings' fields are parameters of the same names as well
PARAMETERS = {
    "odom_topic": ("/odom", "nav_msgs/Odometry of the body: the graph's keyframes"),
    "robots": ("", "several robots in one graph: 'robot_id:odom_topic,robot_id:odom_topic' (each robot's keyframes "
                   "a chain; closures join them by the LoopClosure's robot_id and match_robot_id; the first robot "
                   "anchors the map frame); empty: one robot on odom_topic"),
    "loop_closure_topic": ("vpr/loop_closure", "vpr_ros_interfaces/LoopClosure from vpr_localizer; empty: none"),
    "fix_topic": ("", "geometry_msgs/PoseWithCovarianceStamped of the camera in the map (vpr_localizer's vpr/pose, "
                      "localize mode): priors on the keyframes; empty: none"),
    "camera_in_body": ([0.0] * 7, "x y z qx qy qz qw of the camera's optical frame in the body frame (the "
                                  "odometry's child frame); all zeros: the map's recorded mounting (map_path)"),
    "map_path": ("", "a vpr_ros map whose recorded camera mounting is used when camera_in_body is empty"),
    "map_frame_id": ("map", "frame of the optimised path and parent of the correction"),
    "robot_id": ("", "one robot: closures of another robot_id are refused (counted); empty: every closure"),
    "path_topic": ("vpr/optimized_path", "nav_msgs/Path of the optimised keyframes"),
    "correction_topic": ("vpr/map_to_odom", "geometry_msgs/TransformStamped map -> odom"),
    "publish_tf": (True, "also publish the correction on /tf (needs tf2_msgs)"),
    "publish_period_s": (1.0, "the path, the correction and /diagnostics are published this often"),
}
LOG_PERIOD_S = 5.0


def _graph_settings(node: Node) -> GraphSettings:
    """GraphSettings from the parameters of the same names; with fixes (localize mode) the map frame is the
    map's, not where the odometry started: anchor free."""
    values = {}
    for f in dataclasses.fields(GraphSettings):
        default = f.default
        node.declare_parameter(f.name, default)
        values[f.name] = type(default)(node.get_parameter(f.name).value)
    if node.get_parameter("fix_topic").value and values["anchor"] == "first_pose":
        values["anchor"] = "free"
    return GraphSettings(**values)


def parse_robots(text: str) -> dict[str, str]:
    """'r1:/r1/odom,r2:/r2/odom' -> {"r1": "/r1/odom", "r2": "/r2/odom"}; raises ValueError naming a bad entry."""
    robots = {}
    for entry in (e.strip() for e in str(text).split(",") if e.strip()):
        robot, _, topic = entry.partition(":")
        if not robot.strip() or not topic.strip() or robot.strip() in robots:
            raise ValueError(f"robots: expected distinct 'robot_id:odom_topic' entries separated by ',', got {entry!r}")
        robots[robot.strip()] = topic.strip()
    return robots


def _mounting(camera_in_body, map_path: str) -> np.ndarray | None:
    """T_body_camera (4 x 4) from the parameter, else the map's recorded mounting, else None."""
    camera_in_body = [float(v) for v in camera_in_body]
    if any(camera_in_body):
        if len(camera_in_body) != 7:
            raise ValueError(f"camera_in_body must be x y z qx qy qz qw, got {list(camera_in_body)}")
        return pose_matrix(camera_in_body)
    if map_path:
        meta = json.loads((FilePath(map_path) / "map.json").read_text())
        camera = MapCamera.from_json(meta["camera"]) if meta.get("camera") else None
        if camera is not None and camera.camera_in_body is not None:
            return pose_matrix(camera.camera_in_body)
    return None


class PoseGraphNode(Node):
    def __init__(self, **kwargs):
        super().__init__("vpr_pose_graph", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.params = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.graph = PoseGraph(_graph_settings(self))
        self.lock = threading.Lock()  # the graph is touched by callbacks and the publish timer
        self.mounting = _mounting(self.params["camera_in_body"], self.params["map_path"])
        self.counts, self._logged, self._seen = {"errors": 0, "no_mounting": 0, "other_robot": 0}, {}, {}
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)  # a burst of odometry is kept
        self.robots = parse_robots(self.params["robots"]) or {"": self.params["odom_topic"]}
        self.odom_frames: dict[str, str] = {}
        for robot, topic in self.robots.items():
            self.create_subscription(Odometry, topic, self._guard(self._odometry_callback(robot)), reliable)
        self.interfaces = load_interfaces(self.get_logger())
        if self.params["loop_closure_topic"] and self.interfaces is not None:
            self.create_subscription(self.interfaces.LoopClosure, self.params["loop_closure_topic"],
                                     self._guard(self._on_loop), reliable)
        if self.params["fix_topic"]:
            self.create_subscription(PoseWithCovarianceStamped, self.params["fix_topic"], self._guard(self._on_fix),
                                     reliable)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._latched, self._per_robot = latched, {}
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf_pub, self.tf_type = None, None
        if self.params["publish_tf"]:
            try:
                from tf2_msgs.msg import TFMessage

                self.tf_type, self.tf_pub = TFMessage, self.create_publisher(TFMessage, "/tf", 100)
            except ImportError:
                self.get_logger().warning("tf2_msgs is not installed: the map -> odom correction goes only to "
                                          f"{self.params['correction_topic']}, not to /tf")
        if self.mounting is None:
            self.get_logger().warning("no camera mounting (camera_in_body, or a map_path recording one): loop closures "
                                      "and fixes are refused until one is set")
        self.create_timer(float(self.params["publish_period_s"]), self._guard(self.publish))
        self.get_logger().info(f"vpr_pose_graph: odometry {self.robots}, closures "
                               f"{self.params['loop_closure_topic'] or '-'}, fixes {self.params['fix_topic'] or '-'}; "
                               f"{self.graph.settings}")

    # ---- inputs -----------------------------------------------------------------------------
    def _guard(self, callback):
        def run(*args):
            try:
                callback(*args)
            except Exception as exc:  # one message must never stop the node
                self.counts["errors"] += 1
                self._log("error", f"{callback.__name__} failed: {type(exc).__name__}: {exc}")
        return run

    def _log(self, key: str, text: str, level: str = "warning") -> None:
        now = time.monotonic()
        if now - self._logged.get(key, -1e9) >= LOG_PERIOD_S:
            self._logged[key] = now
            getattr(self.get_logger(), "error" if key == "error" else level)(text)

    def _refused(self, what: str) -> None:
        """Log (throttled per kind) every refusal since the last call: the graph also refuses a closure or fix
        that waited for odometry while it takes odometry, so the counters say what happened, not the return."""
        counts = self.graph.counts
        for key, count in counts.refused.items():
            if count > self._seen.get(key, 0):
                self._seen[key] = count
                self._log(key, f"{'odometry' if 'odometry' in key else what} refused: {counts.reasons[key]}")

    def _odometry_callback(self, robot: str):
        def on_odometry(msg: Odometry) -> None:
            frame = self.odom_frames.setdefault(robot, msg.header.frame_id)
            if msg.header.frame_id != frame:
                with self.lock:
                    self.graph.counts.refuse(f"its frame {msg.header.frame_id!r} is not {frame!r}",
                                             "odometry in another frame")
                self._refused("odometry")
                return
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            with self.lock:
                self.graph.add_odometry(stamp_to_ns(msg.header.stamp), [p.x, p.y, p.z, q.x, q.y, q.z, q.w],
                                        np.asarray(msg.pose.covariance, np.float64), chain=robot)
            self._refused("odometry")
        on_odometry.__name__ = "on_odometry"
        return on_odometry

    def _chains_of(self, msg) -> tuple[str, str] | None:
        """(query chain, match chain) of a LoopClosure, or None when its robot is not in this graph."""
        if "" in self.robots:  # one robot
            if self.params["robot_id"] and msg.robot_id and msg.robot_id != self.params["robot_id"]:
                return None
            if msg.match_robot_id and msg.robot_id and msg.match_robot_id != msg.robot_id:
                return "", msg.match_robot_id  # another robot's frame: no chain of it here (refused, counted)
            return "", ""
        if msg.robot_id not in self.robots:
            return None
        return msg.robot_id, msg.match_robot_id or msg.robot_id

    def _on_loop(self, msg) -> None:
        chains = self._chains_of(msg)
        if chains is None:
            self.counts["other_robot"] += 1
            return
        if self.mounting is None:
            self.counts["no_mounting"] += 1
            self._log("no mounting", "loop closure refused: no camera mounting (set camera_in_body)")
            return
        p, q = msg.relative_pose.position, msg.relative_pose.orientation
        with self.lock:
            self.graph.add_loop(stamp_to_ns(msg.query_stamp), stamp_to_ns(msg.match_stamp),
                                [p.x, p.y, p.z, q.x, q.y, q.z, q.w], np.asarray(msg.covariance, np.float64),
                                self.mounting, bool(msg.translation_scale_known), *chains)
        self._refused("loop closure")

    def _on_fix(self, msg: PoseWithCovarianceStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.params["map_frame_id"]:
            with self.lock:
                self.graph.counts.refuse(f"its frame {msg.header.frame_id!r} is not map_frame_id "
                                         f"{self.params['map_frame_id']!r}", "fix in another frame")
            self._refused("fix")
            return
        if self.mounting is None:
            self.counts["no_mounting"] += 1
            return
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        with self.lock:
            self.graph.add_fix(stamp_to_ns(msg.header.stamp), [p.x, p.y, p.z, q.x, q.y, q.z, q.w],
                               np.asarray(msg.pose.covariance, np.float64), self.mounting)
        self._refused("fix")

    # ---- outputs ----------------------------------------------------------------------------
    def _outputs(self, robot: str):
        """(Path publisher, correction publisher) of a robot: path_topic and correction_topic, with /<robot_id>
        appended when the graph holds several robots."""
        if robot not in self._per_robot:
            suffix = f"/{robot}" if robot else ""
            self._per_robot[robot] = (
                self.create_publisher(Path, self.params["path_topic"] + suffix, self._latched),
                self.create_publisher(TransformStamped, self.params["correction_topic"] + suffix, self._latched))
        return self._per_robot[robot]

    def publish(self) -> None:
        """The optimised path and the map -> odom correction of each robot (and /tf), and /diagnostics."""
        with self.lock:
            if not len(self.graph):
                return
            chains = {robot: (self.graph.stamps(robot), self.graph.trajectory(robot), self.graph.correction(robot))
                      for robot in self.graph.chains()}
            counts = dataclasses.asdict(self.graph.counts)
            counts["downweighted"] = self.graph.downweighted()  # closures in the graph its kernel all but ignores
            counts.pop("reasons")
        frame, transforms = self.params["map_frame_id"], []
        for robot, (stamps, poses, correction) in chains.items():
            if not len(stamps):
                continue
            path = Path()
            path.header.frame_id, path.header.stamp = frame, ns_to_stamp(int(stamps[-1]))
            for stamp, pose in zip(stamps, poses):
                item = PoseStamped()
                item.header.frame_id, item.header.stamp = frame, ns_to_stamp(int(stamp))
                item.pose = messages.pose_msg(pose)
                path.poses.append(item)
            transform = TransformStamped()
            transform.header.frame_id, transform.header.stamp = frame, ns_to_stamp(int(stamps[-1]))
            transform.child_frame_id = self.odom_frames.get(robot) or "odom"
            t = pose7(correction[:3, :3], correction[:3, 3])
            transform.transform.translation.x, transform.transform.translation.y, transform.transform.translation.z = (
                float(v) for v in t[:3])
            r = transform.transform.rotation
            r.x, r.y, r.z, r.w = (float(v) for v in t[3:])
            self._outputs(robot)[0].publish(path)
            self._outputs(robot)[1].publish(transform)
            transforms.append(transform)
        if self.tf_pub is not None and transforms:
            self.tf_pub.publish(self.tf_type(transforms=transforms))
        refused = counts.pop("refused")
        values = {**{k: v for k, v in counts.items()}, **self.counts,
                  **{f"refused: {k}": v for k, v in sorted(refused.items())}}
        level = ERROR if self.counts["errors"] else WARN if refused or self.counts["no_mounting"] else OK
        message = ("callbacks failed" if level == ERROR else "inputs refused" if level == WARN else
                   f"{counts['keyframes']} keyframes, {counts['closures']} closures, {counts['fixes']} fixes")
        name = self.get_fully_qualified_name()
        self.diagnostics_pub.publish(messages.diagnostics_msg(f"{name.lstrip('/')}: pose graph", name, level,
                                                              message, values, self.get_clock().now().to_msg()))


def params_file_text() -> str:
    """config/pose_graph.yaml: every parameter at its default (a test keeps the shipped file equal)."""
    lines = ["# vpr_pose_graph's parameters at their defaults (generated from vpr_ros/ros/pose_graph.py PARAMETERS and",
             "# core/posegraph/graph.py GraphSettings; docs/posegraph.md says what each does).",
             "/**/vpr_pose_graph:", "  ros__parameters:"]
    for name, (default, description) in PARAMETERS.items():
        lines.append(f"    # {description}")
        lines.append(f"    {name}: {json.dumps(default)}")
    for f in dataclasses.fields(GraphSettings):
        lines.append(f"    {f.name}: {json.dumps(f.default)}")
    return "\n".join(lines) + "\n"


def main(args: list[str] | None = None) -> int:
    """The console script: 0 after SIGINT/SIGTERM, 2 on a bad configuration (or without gtsam)."""
    if wants_help(args):
        print(help_text(__doc__, "config/pose_graph.yaml", params_file_text()), flush=True)
        return 0
    if GTSAM_MISSING is not None:
        print(f"vpr_pose_graph: error: the pose-graph back-end needs gtsam (pip install gtsam==4.3.0): {GTSAM_MISSING}",
              flush=True)
        return 2
    try:
        rclpy.init(args=args)
    except Exception as exc:
        print(f"vpr_pose_graph: error: {exc}", flush=True)
        return 2
    node = None
    try:
        node = PoseGraphNode()
    except (ValueError, TypeError, OSError, KeyError, ParameterException) as exc:
        print(f"vpr_pose_graph: error: {exc}", flush=True)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
