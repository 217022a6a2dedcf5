"""Write small real rosbag2 (mcap) files with rosbags for the tests: images, odometry, TF, GPS."""

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

STORE = get_typestore(Stores.LATEST)
T = STORE.types


def _time(ns: int):
    return T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns: int, frame: str):
    return T["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame)


def _pose(x: float):
    return T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=x, y=0.0, z=0.0),
                                       orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))


def write_run(path: Path, images: list[Path], x_of_frame, compressed: bool = False,
              start_ns: int = 1_000_000_000_000, period_ns: int = 500_000_000) -> None:
    """One image per period on /camera/image_raw (or /camera/image/compressed); odometry on /odom
    and TF map->base_link at twice that rate, offset by a quarter period (x = x_of_frame(t / period)); a GPS fix per image on /fix."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        image_topic = "/camera/image/compressed" if compressed else "/camera/image_raw"
        conns = {
            "image": writer.add_connection(image_topic, image_type, typestore=STORE),
            "odom": writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=STORE),
            "tf": writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=STORE),
            "fix": writer.add_connection("/fix", "sensor_msgs/msg/NavSatFix", typestore=STORE),
        }

        def write(name, ns, msg):
            writer.write(conns[name], ns, STORE.serialize_cdr(msg, conns[name].msgtype))

        for i in range(2 * len(images) + 1):
            ns = start_ns + i * period_ns // 2 - period_ns // 4
            x = float(x_of_frame((ns - start_ns) / period_ns))
            cov = np.zeros(36)
            odom = T["nav_msgs/msg/Odometry"](
                header=_header(ns, "map"), child_frame_id="base_link",
                pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=_pose(x), covariance=cov),
                twist=T["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T["geometry_msgs/msg/Twist"](linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                                       angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                    covariance=cov))
            write("odom", ns, odom)
            tf = T["geometry_msgs/msg/TransformStamped"](
                header=_header(ns, "map"), child_frame_id="base_link",
                transform=T["geometry_msgs/msg/Transform"](
                    translation=T["geometry_msgs/msg/Vector3"](x=x, y=0.0, z=0.0),
                    rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
            write("tf", ns, T["tf2_msgs/msg/TFMessage"](transforms=[tf]))
        for i, image_path in enumerate(images):
            ns = start_ns + i * period_ns
            bgr = cv2.imread(str(image_path))
            if compressed:
                data = np.frombuffer(cv2.imencode(".jpg", bgr)[1].tobytes(), np.uint8)
                msg = T["sensor_msgs/msg/CompressedImage"](header=_header(ns, "camera"), format="jpeg", data=data)
            else:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                msg = T["sensor_msgs/msg/Image"](header=_header(ns, "camera"), height=rgb.shape[0],
                                                 width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                                                 step=rgb.shape[1] * 3, data=rgb.reshape(-1))
            write("image", ns + 1000, msg)  # logged slightly after the capture stamp
            fix = T["sensor_msgs/msg/NavSatFix"](
                header=_header(ns, "gps"), status=T["sensor_msgs/msg/NavSatStatus"](status=0, service=1),
                latitude=48.0, longitude=11.0 + i * 1e-5, altitude=500.0,
                position_covariance=np.diag([4.0, 4.0, 9.0]).ravel(), position_covariance_type=2)
            write("fix", ns, fix)
