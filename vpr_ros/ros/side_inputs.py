"""What arrives beside the images, for vpr_localizer: camera info (the colour and the depth camera's), depth
images, odometry and position priors. Each message is checked by core.inputs; one that cannot be used is
counted in /diagnostics and said (once, or throttled), naming its topic and what is used instead.
"""

import time

import numpy as np
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image, NavSatFix
from geometry_msgs.msg import PoseWithCovarianceStamped

from vpr_ros.core.inputs.camera import CameraIntrinsics
from vpr_ros.core.inputs.depth_pairing import DepthStream
from vpr_ros.core.inputs.sync import OdometryInput, PriorInput, Throttle
from vpr_ros.ros.convert import stamp_to_ns
from vpr_ros.ros.image_msgs import depth_to_metres
from vpr_ros.ros.ros_logging import guarded


class SideInputs:
    """The node's camera info, depth, odometry and prior inputs: their state and their callbacks."""

    def __init__(self, node, params: dict, health, map_frame, on_odometry_frame=lambda frame_id: None):
        """map_frame(): the served map's frame (priors must be in it); on_odometry_frame(frame_id): told the
        frame of each good odometry message (slam: the keyframe poses' frame)."""
        self.node, self.params, self.health, self.logger = node, params, health, node.get_logger()
        self.map_frame, self.on_odometry_frame = map_frame, on_odometry_frame
        self.camera, self.depth_camera, self._once = CameraIntrinsics(), CameraIntrinsics(), Throttle(float("inf"))
        self.priors, self._said, self.odometry = PriorInput(), Throttle(10.0), OdometryInput(params["odom_timeout_s"])
        self.depths = DepthStream(params["depth_topic"], params["depth_tolerance_s"], params["depth_wait_s"],
                                  depth_to_metres, self.depth_camera.for_size if params["depth_camera_info_topic"] else None)

    def subscribe(self, qos) -> list:
        """The subscriptions of the topics configured (camera info and depth with the images' QoS)."""
        p, node = self.params, self.node
        subscriptions = []
        for kind, name, callback, depth in ((CameraInfo, "camera_info_topic", self.on_camera_info, qos),
                                            (Image, "depth_topic", self.on_depth, qos),
                                            (CameraInfo, "depth_camera_info_topic", self.on_depth_camera_info, qos),
                                            (Odometry, "odom_topic", self.on_odom, 50),
                                            (PoseWithCovarianceStamped, "prior_topic", self.on_prior, 10),
                                            (NavSatFix, "prior_gps_topic", self.on_gps_prior, 10)):
            if p[name] and (name != "depth_camera_info_topic" or p["depth_topic"]):  # depth info only with depth
                subscriptions.append(node.create_subscription(kind, p[name], guarded(node, self.health, callback),
                                                              depth))
        return subscriptions

    def on_camera_info(self, msg: CameraInfo) -> None:
        self._updateintrinsics(self.camera, msg, "camera_info_topic", "frames are verified without a pose")

    def on_depth_camera_info(self, msg: CameraInfo) -> None:
        self._updateintrinsics(self.depth_camera, msg, "depth_camera_info_topic", "depth images are not used")

    def _updateintrinsics(self, camera: CameraIntrinsics, msg: CameraInfo, topic: str, consequence: str) -> None:
        """A CameraInfo into `camera`; one that cannot be used is counted and warned once, saying what is used
        instead: the previous good calibration when there is one, else nothing (`consequence`)."""
        roi = msg.roi
        error = camera.update(msg.k, (int(msg.width), int(msg.height)), (roi.x_offset, roi.y_offset, roi.width, roi.height))
        if error is not None:
            self.health.count("bad_camera_info")
            if self._once.due(f"{topic}:{list(msg.k)}:{camera.calibration is not None}", 0.0):
                self.logger.warning(f"camera info on {self.params[topic]} ignored: {error}; "
                                          f"{camera.instead(consequence)}")

    def on_depth(self, msg: Image) -> None:  # kept while a waiting frame may need it (core.inputs.depth_pairing)
        self.depths.buffer.add(stamp_to_ns(msg.header.stamp), msg)

    def depth_for(self, stamp_ns: int, arrived: float) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """The core's DepthSource for the frame of `stamp_ns` (arrived at monotonic `arrived`): called when it
        first needs its depth, after retrieval and matching, so the depth stream has had that long to deliver.
        A depth image that cannot be used is counted and said (throttled), never raised."""
        if not self.params["depth_topic"]:
            return None, None, ""
        got = self.depths.for_frame(stamp_ns, arrived)
        if got.problem:  # one call site per throttle: rclpy refuses a site whose throttle changes
            self.health.count(got.problem)
            if got.problem == "stale_depth":
                self.logger.warning(got.log, throttle_duration_sec=10.0)
            else:
                self.logger.warning(got.log, throttle_duration_sec=5.0)
        return got.depth, got.depth_K, got.note

    def intrinsics(self, image_size: tuple[int, int]) -> np.ndarray | None:
        """K for images of this size from the last camera info; None (warned once, counted) when it does not fit."""
        K = self.camera.for_size(image_size)
        if K is None and image_size in self.camera.rejected:
            self.health.count("bad_camera_info")
            size = f"{image_size[0]}x{image_size[1]}"
            if self._once.due(f"K:{self.camera.calibration[0].tobytes()}:{self.camera.calibration[1]}:{size}", 0.0):
                self.logger.warning(f"camera info on {self.params['camera_info_topic']} rejected for {size} frames: "
                                          f"{self.camera.rejected[image_size]}; frames are verified without a pose")
        return K

    def on_odom(self, msg: Odometry) -> None:
        q, t = msg.pose.pose.orientation, msg.pose.pose.position
        why = self.odometry.update([t.x, t.y, t.z, q.x, q.y, q.z, q.w], msg.header.frame_id, time.monotonic())
        if why:
            self.health.count("bad_odometry")
            self.logger.warning(f"odometry on {self.params['odom_topic']} ignored: {why}",
                                      throttle_duration_sec=5.0)
        else:
            self.on_odometry_frame(self.odometry.frame_id)

    def on_prior(self, msg: PoseWithCovarianceStamped) -> None:
        p = msg.pose.pose.position
        self._prior_said(self.priors.from_pose((p.x, p.y, p.z), msg.pose.covariance, stamp_to_ns(msg.header.stamp),
                                                msg.header.frame_id, self.map_frame()), "pose")

    def on_gps_prior(self, msg: NavSatFix) -> None:
        self._prior_said(self.priors.from_gps((msg.latitude, msg.longitude, msg.altitude), msg.position_covariance,
                                               msg.position_covariance_type, msg.status.status,
                                               stamp_to_ns(msg.header.stamp)), "gps")

    def _prior_said(self, why: str, kind: str) -> None:
        """Count a prior that cannot be used; say each reason at most every 10 s, naming its topic."""
        if not why:
            return
        self.health.count("bad_prior")
        if self._said.due(f"{kind}:{why}", time.monotonic()):
            topic = self.params["prior_gps_topic"] if kind == "gps" else self.params["prior_topic"]
            self.logger.warning(f"position prior on {topic} ignored: {why}; the whole map is searched "
                                      "when the last good prior is stale")

    def fresh_odometry(self, now: float) -> np.ndarray | None:
        if not self.params["odom_topic"]:
            return None
        pose, why = self.odometry.fresh(now)
        if pose is None:
            self.health.count("stale_odometry")
            self.logger.warning(f"no fresh odometry on {self.params['odom_topic']} ({why}): frames get no "
                                      "pose and pass the motion gate on time alone", throttle_duration_sec=10.0)
        return pose
