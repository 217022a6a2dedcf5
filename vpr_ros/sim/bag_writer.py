"""Write robot-like rosbag2 (mcap) files with rosbags: camera images and intrinsics, odometry and TF.

Topics (defaults): `/camera/image_raw` (sensor_msgs/Image, rgb8; or `/camera/image_raw/compressed`,
sensor_msgs/CompressedImage, with `image_format` "jpeg" or "png"), `/camera/camera_info`
(sensor_msgs/CameraInfo, plumb_bob with zero distortion), the body's pose, `/tf_static` (`base_link` ->
`camera_optical`) and, when
frames come with depth, `/camera/depth/image_raw` (sensor_msgs/Image 16UC1 in millimetres, 0 = no
reading, aligned to the colour image: same size, intrinsics, frame and stamp). Each message is logged at
its header stamp.

The body's pose, two ways:
- given only the true pose (`write_frame(..., pose7)`): `/odom` (nav_msgs/Odometry, `map` -> `base_link`)
  and `/tf` (the same transform): the odometry is the truth, as bags written before the drifting odometry;
- given the odometry as well (`odometry=(pose7, covariance)`): `/odom` is the odometry (`odom` ->
  `base_link`, its pose covariance filled) with `/tf` `odom` -> `base_link`, as a robot's odometry driver
  publishes it, and the truth goes on `/ground_truth` (nav_msgs/Odometry, `map` -> `base_link`) with
  `/tf` `map` -> `base_link_truth` (its own frame, so that TF stays a tree).
"""

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

STORE = get_typestore(Stores.LATEST)
T = STORE.types
IMAGE_FORMATS = ("raw", "jpeg", "png")
# optical (x right, y down, z forward) in the body frame (x forward, y left, z up): a fixed rotation
OPTICAL_IN_BODY_QUATERNION = (-0.5, 0.5, -0.5, 0.5)


def _time(ns: int):
    return T["builtin_interfaces/msg/Time"](sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _header(ns: int, frame: str):
    return T["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame)


def _vector(x, y, z):
    return T["geometry_msgs/msg/Vector3"](x=float(x), y=float(y), z=float(z))


def _quaternion(q):
    return T["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def _transform(ns: int, parent: str, child: str, pose7):
    return T["geometry_msgs/msg/TransformStamped"](
        header=_header(ns, parent), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](translation=_vector(*pose7[:3]), rotation=_quaternion(pose7[3:])))


class BagWriter:
    """A context manager around rosbags' Writer with the topics of a camera run."""

    def __init__(self, path: str | Path, image_format: str = "raw", image_topic: str = "/camera/image_raw",
                 info_topic: str = "/camera/camera_info", odom_topic: str = "/odom",
                 map_frame: str = "map", body_frame: str = "base_link", camera_frame: str = "camera_optical",
                 jpeg_quality: int = 95, depth_topic: str = "/camera/depth/image_raw",
                 truth_topic: str = "/ground_truth", odom_frame: str = "odom"):
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; rosbag2 writes a new directory")
        self.image_format, self.jpeg_quality = image_format, jpeg_quality
        self.image_topic = image_topic if image_format == "raw" else image_topic.rstrip("/") + "/compressed"
        self.info_topic, self.odom_topic, self.depth_topic = info_topic, odom_topic, depth_topic
        self.frames = (map_frame, body_frame, camera_frame)
        self.truth_topic, self.odom_frame = truth_topic, odom_frame
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._conns: dict[str, object] = {}
        self._static_written = False
        self.count = 0

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        image_type = "sensor_msgs/msg/Image" if self.image_format == "raw" else "sensor_msgs/msg/CompressedImage"
        for name, topic, msgtype in (("image", self.image_topic, image_type),
                                     ("info", self.info_topic, "sensor_msgs/msg/CameraInfo"),
                                     ("odom", self.odom_topic, "nav_msgs/msg/Odometry"),
                                     ("tf", "/tf", "tf2_msgs/msg/TFMessage"),
                                     ("tf_static", "/tf_static", "tf2_msgs/msg/TFMessage")):
            self._conns[name] = self._writer.add_connection(topic, msgtype, typestore=STORE)
        return self

    def _connection(self, name: str, topic: str, msgtype: str):
        if name not in self._conns:
            self._conns[name] = self._writer.add_connection(topic, msgtype, typestore=STORE)
        return self._conns[name]

    def _depth_connection(self):
        if "depth" not in self._conns:
            self._conns["depth"] = self._writer.add_connection(self.depth_topic, "sensor_msgs/msg/Image",
                                                               typestore=STORE)
        return self._conns["depth"]

    def write_depth(self, ns: int, depth_mm: np.ndarray) -> None:
        """A 16UC1 depth image (millimetres, 0 = no reading) aligned to the colour frame of stamp `ns`."""
        depth_mm = np.ascontiguousarray(depth_mm, np.uint16)
        msg = T["sensor_msgs/msg/Image"](header=_header(ns, self.frames[2]), height=depth_mm.shape[0],
                                         width=depth_mm.shape[1], encoding="16UC1", is_bigendian=0,
                                         step=depth_mm.shape[1] * 2, data=depth_mm.view(np.uint8).reshape(-1))
        conn = self._depth_connection()
        self._writer.write(conn, int(ns), STORE.serialize_cdr(msg, conn.msgtype))

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def _write(self, name: str, ns: int, msg) -> None:
        conn = self._conns[name]
        self._writer.write(conn, int(ns), STORE.serialize_cdr(msg, conn.msgtype))

    def image_message(self, ns: int, rgb: np.ndarray | None = None, encoded: tuple[str, bytes] | None = None):
        """An Image (rgb8/mono8) or CompressedImage message; `encoded` = (format, bytes) passes a file through."""
        header = _header(ns, self.frames[2])
        if self.image_format == "raw":
            if rgb.ndim == 2:
                return T["sensor_msgs/msg/Image"](header=header, height=rgb.shape[0], width=rgb.shape[1],
                                                  encoding="mono8", is_bigendian=0, step=rgb.shape[1],
                                                  data=np.ascontiguousarray(rgb, np.uint8).reshape(-1))
            return T["sensor_msgs/msg/Image"](header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                                              is_bigendian=0, step=rgb.shape[1] * 3,
                                              data=np.ascontiguousarray(rgb, np.uint8).reshape(-1))
        if encoded is None:
            bgr = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]) if self.image_format == "jpeg" else (".png", [])
            encoded = (self.image_format, cv2.imencode(ext, bgr, params)[1].tobytes())
        return T["sensor_msgs/msg/CompressedImage"](header=header, format=encoded[0],
                                                    data=np.frombuffer(encoded[1], np.uint8))

    def write_frame(self, ns: int, rgb: np.ndarray | None = None, K: np.ndarray | None = None,
                    pose7: np.ndarray | None = None, encoded: tuple[str, bytes] | None = None,
                    size: tuple[int, int] | None = None, odometry: tuple | None = None) -> None:
        """One camera frame at stamp `ns`: the image, its CameraInfo when K is given (size = (W, H)
        when no pixels are given), and the body's pose and TF when pose7 (x y z qx qy qz qw: the truth) is
        given; odometry: (pose7, 6 x 6 covariance) of a drifting odometry (module docstring)."""
        self._write("image", ns, self.image_message(ns, rgb, encoded))
        if K is not None:
            width, height = size if size is not None else (rgb.shape[1], rgb.shape[0])
            self._write("info", ns, camera_info(ns, self.frames[2], K, width, height))
        if pose7 is not None:
            self.write_pose(ns, pose7, odometry)
        self.count += 1

    def write_pose(self, ns: int, pose7, odometry: tuple | None = None) -> None:
        """The body's true pose (and a drifting odometry's, with its covariance): see the module docstring."""
        map_frame, body, camera = self.frames
        if odometry is None:
            self._write("odom", ns, odometry_message(ns, map_frame, body, pose7))
            self._write("tf", ns, T["tf2_msgs/msg/TFMessage"](transforms=[_transform(ns, map_frame, body, pose7)]))
        else:
            odometry_pose, covariance = odometry
            self._write("odom", ns, odometry_message(ns, self.odom_frame, body, odometry_pose, covariance))
            truth = self._connection("truth", self.truth_topic, "nav_msgs/msg/Odometry")
            self._writer.write(truth, int(ns), STORE.serialize_cdr(odometry_message(ns, map_frame, body, pose7),
                                                                   truth.msgtype))
            self._write("tf", ns, T["tf2_msgs/msg/TFMessage"](transforms=[
                _transform(ns, self.odom_frame, body, odometry_pose),
                _transform(ns, map_frame, body + "_truth", pose7)]))
        if not self._static_written:
            static = _transform(ns, body, camera, (0, 0, 0) + OPTICAL_IN_BODY_QUATERNION)
            self._write("tf_static", ns, T["tf2_msgs/msg/TFMessage"](transforms=[static]))
            self._static_written = True


def odometry_message(ns: int, parent: str, child: str, pose7, covariance=None):
    """A nav_msgs/Odometry of `child` in `parent` (covariance: 6 x 6 of the pose, or zeros); no twist."""
    cov = np.zeros(36) if covariance is None else np.asarray(covariance, np.float64).reshape(36)
    twist = T["geometry_msgs/msg/TwistWithCovariance"](
        twist=T["geometry_msgs/msg/Twist"](linear=_vector(0, 0, 0), angular=_vector(0, 0, 0)), covariance=np.zeros(36))
    pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=float(pose7[0]), y=float(pose7[1]),
                                                                               z=float(pose7[2])),
                                       orientation=_quaternion(pose7[3:]))
    return T["nav_msgs/msg/Odometry"](header=_header(ns, parent), child_frame_id=child,
                                      pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=cov),
                                      twist=twist)


def camera_info(ns: int, frame: str, K: np.ndarray, width: int, height: int):
    """A sensor_msgs/CameraInfo of a pinhole camera without distortion."""
    K = np.asarray(K, np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return T["sensor_msgs/msg/CameraInfo"](
        header=_header(ns, frame), height=int(height), width=int(width), distortion_model="plumb_bob",
        d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
