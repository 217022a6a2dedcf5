"""The node's relocalization for Nav2 (core.pipeline.relocalization decides; this module speaks ROS):
initial poses on `initialpose_topic`, the robot's localization read from `amcl_pose_topic`, and the
`vpr/relocalize` service (std_srvs/Trigger), which waits up to `relocalize_timeout_s` for a confident
answer without holding up the executor (its callback is a coroutine, completed by a timer)."""

import math
import time

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future
from std_srvs.srv import Trigger

from vpr_ros.core.pipeline.relocalization import (Relocalization, RelocalizationSettings, Relocalizer,
                                                  RobotLocalization)
from vpr_ros.core.pipeline.results import FrameResult
from vpr_ros.ros.parameters import camera_in_base

WAIT_PERIOD_S = 0.05  # how often a waiting vpr/relocalize looks for its answer


def settings_from(p: dict) -> RelocalizationSettings:
    return RelocalizationSettings(
        min_probability=p["relocalize_min_probability"], require_metric=p["relocalize_require_metric"],
        max_std_m=p["relocalize_max_std_m"], max_yaw_std_deg=p["relocalize_max_yaw_std_deg"],
        disagree_m=p["relocalize_disagree_m"], disagree_deg=p["relocalize_disagree_deg"],
        disagree_frames=p["relocalize_disagree_frames"], cooldown_s=p["relocalize_cooldown_s"],
        on_start=p["relocalize_on_start"])


def yaw_of(q) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


class RelocalizationIO:
    """Publisher, subscription and service of the relocalization, for one configured node."""

    def __init__(self, node, params: dict, map_frame: str, map_camera_in_body, health):
        self.node, self.params, self.map_frame, self.health = node, params, map_frame, health
        mounting = camera_in_base(params["camera_in_base"]) if params["camera_in_base"].strip() else map_camera_in_body
        self.policy = Relocalizer(settings_from(params), None if mounting is None else np.asarray(mounting))
        self.publisher = node.create_publisher(PoseWithCovarianceStamped, params["initialpose_topic"], 10)
        # the waiting request and its timer in a group of their own: in the node's default (mutually exclusive)
        # group, a request waiting for its answer would hold up every other callback of the node
        self._group = ReentrantCallbackGroup()
        self.service = node.create_service(Trigger, "vpr/relocalize", self._on_request, callback_group=self._group)
        self._said: set[str] = set()
        if mounting is None:
            node.get_logger().info("relocalization: the camera's mounting on base_link is unknown (the map has no "
                                      "camera_in_body and camera_in_base is empty): metric answers cannot be "
                                      "projected to base_link, so none is published")

    @property
    def entities(self) -> list:
        return [self.publisher, self.service]

    def subscribe(self) -> list:
        """On activate: the robot's localization (when a topic is set)."""
        self.policy.activated()
        topic = self.params["amcl_pose_topic"]
        return [self.node.create_subscription(PoseWithCovarianceStamped, topic, self._on_robot_pose, 10)] if topic else []

    def _on_robot_pose(self, msg: PoseWithCovarianceStamped) -> None:
        if msg.header.frame_id.lstrip("/") != self.map_frame.lstrip("/"):
            self._say(f"frame:{msg.header.frame_id}", f"relocalization: {self.params['amcl_pose_topic']} is in frame "
                      f"{msg.header.frame_id!r}, the map in {self.map_frame!r}: ignored (build the map with poses in "
                      "the localizer's map frame)")
            return
        p, cov = msg.pose.pose.position, np.asarray(msg.pose.covariance, np.float64)
        if cov.shape != (36,) or not np.isfinite(cov).all() or not all(map(math.isfinite, (p.x, p.y))):
            self._say("bad", f"relocalization: a pose on {self.params['amcl_pose_topic']} with non-finite values "
                      "ignored")
            return
        self.policy.update_robot(RobotLocalization.from_covariance(p.x, p.y, yaw_of(msg.pose.pose.orientation), cov,
                                                                   time.monotonic()))

    def offer(self, header, result: FrameResult) -> Relocalization | None:
        """After a frame: publish its answer on initialpose when the policy says so."""
        out = self.policy.offer(result, time.monotonic())
        if out is None:
            return None
        pose = out.pose
        msg = PoseWithCovarianceStamped()
        msg.header.stamp, msg.header.frame_id = header.stamp, self.map_frame
        msg.pose.pose.position.x, msg.pose.pose.position.y = pose.x, pose.y
        q = msg.pose.pose.orientation
        q.x, q.y, q.z, q.w = pose.quaternion()
        msg.pose.covariance = [float(v) for v in pose.covariance.ravel()]
        self.publisher.publish(msg)
        self.health.count("relocalizations")
        self.node.get_logger().info(
            f"relocalization ({out.trigger}: {out.reason}): x {pose.x:.2f} y {pose.y:.2f} yaw "
            f"{math.degrees(pose.yaw):.1f} deg, position std {pose.std_m():.2f} m, from map frame {pose.map_key} "
            f"({'metric' if pose.metric else 'map frame pose'}) on {self.params['initialpose_topic']}")
        return out

    async def _on_request(self, request, response):
        """vpr/relocalize: publish the next confident answer; fail after relocalize_timeout_s without one."""
        if not self.node.active:
            response.success, response.message = False, f"the node is {self.node.lifecycle_state}, not active"
            return response
        timeout = self.params["relocalize_timeout_s"]
        before, start = self.policy.published, time.monotonic()
        self.policy.request(start, timeout)
        done = Future()

        def look() -> None:
            if self.policy.published > before or time.monotonic() - start > timeout:
                if not done.done():
                    done.set_result(True)
        timer = self.node.create_timer(WAIT_PERIOD_S, look, callback_group=self._group)
        try:
            await done
        finally:
            self.node.destroy_timer(timer)
        last = self.policy.last
        if self.policy.published > before and last is not None:
            p = last.pose
            response.success = True
            response.message = (f"published on {self.params['initialpose_topic']}: x {p.x:.2f} y {p.y:.2f} yaw "
                                f"{math.degrees(p.yaw):.1f} deg (position std {p.std_m():.2f} m, map frame {p.map_key})")
        else:
            response.success = False
            response.message = (f"no confident answer within {timeout:g} s (accepted, verified, probability >= "
                                f"{self.policy.settings.min_probability:g}"
                                f"{', metric' if self.policy.settings.require_metric else ''}); nothing published")
        return response

    def _say(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.node.get_logger().warning(text)
