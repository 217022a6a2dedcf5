"""Read map frames from a rosbag2 (mcap or sqlite3) or rosbag1 with rosbags: images and their poses.

Images: a `sensor_msgs/Image` or `sensor_msgs/CompressedImage` topic. Pose source (optional), one of:
- a `geometry_msgs/PoseStamped`, `PoseWithCovarianceStamped` or `nav_msgs/Odometry` topic;
- TF: the transform `parent -> child` read from /tf (and /tf_static), direct edges only;
- a `sensor_msgs/NavSatFix` topic (GPS; fixes with status < 0 are ignored).
Each image gets the pose interpolated at its header stamp between the two nearest pose samples
(linear in position, normalised-linear in rotation); images farther than `max_pose_gap_s` from
any sample get no pose.

Depth (optional): an aligned depth topic (sensor_msgs/Image 16UC1 or 32FC1, inputs/depth.py); each image
gets the depth image whose stamp is nearest to its own, within `max_depth_gap_s`. The camera: its
CameraInfo (intrinsics, size, optical frame) and, from /tf_static, where the optical frame sits in the
pose source's child frame.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.image import ImageError as BagImageError, message_to_cvimage
from rosbags.typesys import Stores, get_typestore

from vpr_ros.core.inputs.depth import to_metres
from vpr_ros.core.inputs.images import IMAGE_SUFFIXES
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.matching.transforms import IDENTITY, compose, inverse

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry")
GPS_TYPE = "sensor_msgs/msg/NavSatFix"


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _cdr_header_stamp_ns(raw: bytes) -> int:
    """Stamp of a serialized ROS 2 message that starts with std_msgs/Header, without decoding the rest.

    CDR data: a 4-byte encapsulation header (byte 1 odd: little endian), then stamp.sec (int32) and
    stamp.nanosec (uint32).
    """
    if len(raw) < 12:
        raise ValueError(f"a {len(raw)}-byte message is too short to hold a header")
    sec, nanosec = struct.unpack("<iI" if raw[1] & 1 else ">iI", raw[4:12])
    return sec * 1_000_000_000 + nanosec


def _header_stamp_ns(reader: AnyReader, conn, raw: bytes) -> int:
    """Header stamp of a message that starts with std_msgs/Header, decoding no more than needed."""
    if reader.is2:
        return _cdr_header_stamp_ns(raw)
    return _stamp_ns(reader.deserialize(raw, conn.msgtype).header)  # rosbag1: no CDR


def _open(path: Path) -> AnyReader:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        images = sum(1 for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        what = f"a folder of {images} images" if images else "a folder without a rosbag2 metadata.yaml"
        raise ValueError(f"{path} is not a bag: it is {what}. An image folder is read with --images "
                         "(vpr_build_map) or as a dataset with --dataset (vpr_eval: query/, ref/, ground_truth.csv), "
                         "or made into a bag with vpr_folder_to_bag")
    return AnyReader([path], default_typestore=get_typestore(Stores.LATEST))


def _connections(reader: AnyReader, topic: str, types: tuple[str, ...]):
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        topics = sorted({c.topic for c in reader.connections})
        raise ValueError(f"topic {topic!r} is not in the bag; it has {topics}")
    bad = [c.msgtype for c in conns if c.msgtype not in types]
    if bad:
        raise ValueError(f"topic {topic!r} has type {bad[0]}; expected one of {list(types)}")
    return conns


def interpolate_poses(sample_ns: np.ndarray, samples: np.ndarray, query_ns: np.ndarray,
                      max_gap_ns: int) -> np.ndarray:
    """Poses (M x 7, sorted by time) at query stamps -> Q x 7, NaN rows where no sample is near."""
    out = np.full((len(query_ns), samples.shape[1] if samples.ndim == 2 else 7), np.nan)
    if len(sample_ns) == 0:
        return out
    right = np.searchsorted(sample_ns, query_ns).clip(1, len(sample_ns) - 1) if len(sample_ns) > 1 else None
    for i, t in enumerate(query_ns):
        if right is None:
            if abs(t - sample_ns[0]) <= max_gap_ns:
                out[i] = samples[0]
            continue
        j = right[i]
        t0, t1 = sample_ns[j - 1], sample_ns[j]
        if t < t0 - max_gap_ns or t > t1 + max_gap_ns:
            continue
        if t0 < t < t1 and t1 - t0 > 2 * max_gap_ns:  # a hole in the samples: nearest one, if near
            near = j - 1 if t - t0 <= t1 - t else j
            if abs(t - sample_ns[near]) <= max_gap_ns:
                out[i] = samples[near]
            continue
        w = float(np.clip((t - t0) / (t1 - t0), 0.0, 1.0)) if t1 > t0 else 0.0
        a, b = samples[j - 1], samples[j]
        row = (1 - w) * a + w * b
        if samples.shape[1] == 7:
            qb = b[3:] if np.dot(a[3:], b[3:]) >= 0 else -b[3:]
            q = (1 - w) * a[3:] + w * qb
            row[3:] = q / np.linalg.norm(q)
        out[i] = row
    return out


@dataclass
class BagFrames:
    """Image references of a bag (one per image message) and their metadata."""

    path: Path
    topic: str
    frames: FrameTable

    def loader(self):
        """A `load(source)` callable for describe_map that reads images in bag order, lazily."""
        return _SequentialImageLoader(self.path, self.topic)


class _SequentialImageLoader:
    """Decodes the image with a given log-time. It reads on through the bag for the next frames and reopens it
    at the asked time for an earlier one or one far ahead (a build worker's next shard): the bag's index (mcap
    chunks, sqlite3 rows) skips what lies before, so a worker does not read a long bag up to its shard."""

    types = IMAGE_TYPES
    REOPEN_AHEAD_NS = 2_000_000_000

    def __init__(self, path: Path, topic: str):
        self.path, self.topic = path, topic
        self._reader, self._messages = None, None

    def _restart(self, start_ns: int):
        if self._reader is not None:
            self._reader.close()
        self._reader = _open(self.path)
        self._reader.open()
        conns = _connections(self._reader, self.topic, self.types)
        self._messages = self._reader.messages(connections=conns, start=start_ns)
        self._last = start_ns - 1

    def __call__(self, source: str) -> np.ndarray:
        log_ns = int(source.rsplit("@", 1)[1])
        if self._messages is None or not self._last < log_ns <= self._last + self.REOPEN_AHEAD_NS:
            self._restart(log_ns)
        for conn, timestamp, raw in self._messages:
            self._last = timestamp
            if timestamp == log_ns:
                msg = self._reader.deserialize(raw, conn.msgtype)
                try:
                    return self.decode(msg)
                except (AssertionError, BagImageError, cv2.error, ValueError) as exc:  # rosbags asserts on bad data
                    raise ValueError(f"image {source} in {self.path} cannot be decoded "
                                     f"({type(exc).__name__}: {exc or 'no detail'})") from exc
        raise ValueError(f"image {source} not found in {self.path}")

    @staticmethod
    def decode(msg) -> np.ndarray:
        return message_to_cvimage(msg, "rgb8")


class _SequentialDepthLoader(_SequentialImageLoader):
    """Depth images by log-time, in metres (NaN: no reading)."""

    types = ("sensor_msgs/msg/Image",)

    @staticmethod
    def decode(msg) -> np.ndarray:
        return to_metres(message_to_cvimage(msg), msg.encoding)


class BagDepth:
    """The depth topic of a bag: which depth image goes with an image stamp, and its pixels in metres."""

    def __init__(self, path: Path, topic: str, max_gap_s: float = 0.05):
        self.path, self.topic, self.max_gap_ns = Path(path), topic, int(max_gap_s * 1e9)
        stamps, logs = [], []
        with _open(self.path) as reader:
            conns = _connections(reader, topic, _SequentialDepthLoader.types)
            for conn, timestamp, raw in reader.messages(connections=conns):
                stamps.append(_header_stamp_ns(reader, conn, raw))
                logs.append(timestamp)
        if not stamps:
            raise ValueError(f"the bag has no messages on depth topic {topic!r}")
        order = np.argsort(stamps, kind="stable")
        self.stamps, self.logs = np.asarray(stamps, np.int64)[order], np.asarray(logs, np.int64)[order]
        self._loader = _SequentialDepthLoader(self.path, topic)

    def __call__(self, stamp_ns: int) -> np.ndarray | None:
        """The depth image (metres) nearest in stamp to `stamp_ns`, None when none is within max_gap_s."""
        i = int(np.clip(np.searchsorted(self.stamps, stamp_ns), 1, len(self.stamps) - 1)) if len(self.stamps) > 1 else 0
        if i > 0 and abs(self.stamps[i - 1] - stamp_ns) <= abs(self.stamps[i] - stamp_ns):
            i -= 1
        if abs(int(self.stamps[i]) - int(stamp_ns)) > self.max_gap_ns:
            return None
        return self._loader(f"{self.path}:{self.topic}@{self.logs[i]}")


def read_bag_frames(path: str | Path, image_topic: str, pose_topic: str | None = None,
                    tf_frames: tuple[str, str] | None = None, gps_topic: str | None = None,
                    max_pose_gap_s: float = 0.5) -> BagFrames:
    """Index the bag's images and attach poses and GPS from the chosen sources."""
    path = Path(path)
    image_stamps, log_stamps = [], []
    pose_ns, poses, gps_ns, fixes = [], [], [], []
    with _open(path) as reader:
        image_conns = _connections(reader, image_topic, IMAGE_TYPES)
        wanted = list(image_conns)
        if pose_topic:
            wanted += _connections(reader, pose_topic, POSE_TYPES)
        if gps_topic:
            wanted += _connections(reader, gps_topic, (GPS_TYPE,))
        if tf_frames:
            tf_conns = [c for c in reader.connections if c.topic in ("/tf", "/tf_static")]
            if not tf_conns:
                raise ValueError("TF poses were asked for but the bag has no /tf or /tf_static topic")
            wanted += tf_conns
        image_ids = {id(c) for c in image_conns}
        for conn, timestamp, raw in reader.messages(connections=wanted):
            if id(conn) in image_ids:  # only the stamp now; pixels are decoded when the map needs them
                image_stamps.append(_header_stamp_ns(reader, conn, raw) or timestamp)
                log_stamps.append(timestamp)
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == pose_topic:
                pose = msg.pose.pose if conn.msgtype != POSE_TYPES[0] else msg.pose
                pose_ns.append(_stamp_ns(msg.header))
                poses.append([pose.position.x, pose.position.y, pose.position.z, pose.orientation.x,
                              pose.orientation.y, pose.orientation.z, pose.orientation.w])
            elif conn.topic == gps_topic:
                if msg.status.status >= 0:
                    gps_ns.append(_stamp_ns(msg.header))
                    fixes.append([msg.latitude, msg.longitude, msg.altitude])
            else:
                for tf in msg.transforms:
                    if (tf.header.frame_id.lstrip("/"), tf.child_frame_id.lstrip("/")) == tf_frames:
                        t, r = tf.transform.translation, tf.transform.rotation
                        pose_ns.append(_stamp_ns(tf.header))
                        poses.append([t.x, t.y, t.z, r.x, r.y, r.z, r.w])
    if not image_stamps:
        raise ValueError(f"the bag has no messages on {image_topic!r}")
    if (pose_topic or tf_frames) and not poses:
        raise ValueError(f"no poses found in the bag for {pose_topic or tf_frames}")
    query = np.asarray(image_stamps, np.int64)
    gap = int(max_pose_gap_s * 1e9)

    def series(stamps, values, width):
        if not values:
            return None
        order = np.argsort(stamps, kind="stable")
        return interpolate_poses(np.asarray(stamps, np.int64)[order], np.asarray(values, np.float64)[order],
                                 query, gap).reshape(len(query), width)

    frames = FrameTable.build(query, [f"{path}:{image_topic}@{t}" for t in log_stamps],
                              pose=series(pose_ns, poses, 7), gps=series(gps_ns, fixes, 3))
    return BagFrames(path, image_topic, frames)


def read_gps_priors(path: str | Path, topic: str) -> list[tuple[int, tuple[float, float, float], np.ndarray]]:
    """The NavSatFix messages on `topic` that can serve as position priors, in stamp order: (stamp_ns, (lat, lon,
    alt), 3 x 3 covariance in m^2). Fixes without a fix (status < 0) or with an unknown covariance (type 0) are
    left out."""
    fixes = []
    with _open(Path(path)) as reader:
        conns = _connections(reader, topic, (GPS_TYPE,))
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if msg.status.status < 0 or msg.position_covariance_type == 0:
                continue
            fixes.append((_stamp_ns(msg.header), (float(msg.latitude), float(msg.longitude), float(msg.altitude)),
                          np.asarray(msg.position_covariance, np.float64).reshape(3, 3)))
    return sorted(fixes, key=lambda fix: fix[0])


def read_camera_info(path: str | Path, topic: str) -> tuple[np.ndarray, tuple[int, int], str]:
    """K (3 x 3), image size (W, H) and optical frame of the first sensor_msgs/CameraInfo on `topic`."""
    with _open(Path(path)) as reader:
        conns = _connections(reader, topic, ("sensor_msgs/msg/CameraInfo",))
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            K = np.asarray(msg.k, np.float64).reshape(3, 3)
            if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise ValueError(f"the CameraInfo on {topic} has no usable intrinsics: K = {K.tolist()}")
            return K, (int(msg.width), int(msg.height)), msg.header.frame_id.lstrip("/")
    raise ValueError(f"the bag has no message on {topic!r}")


def read_static_transform(path: str | Path, parent: str, child: str) -> np.ndarray | None:
    """The pose (x y z qx qy qz qw) of `child` in `parent` from the bag's /tf_static, following a chain of
    static transforms in either direction; None when the bag has none that links them."""
    edges: dict[str, list[tuple[str, np.ndarray]]] = {}
    with _open(Path(path)) as reader:
        conns = [c for c in reader.connections if c.topic == "/tf_static"]
        for conn, _, raw in reader.messages(connections=conns):
            for tf in reader.deserialize(raw, conn.msgtype).transforms:
                t, r = tf.transform.translation, tf.transform.rotation
                pose = np.array([t.x, t.y, t.z, r.x, r.y, r.z, r.w])
                a, b = tf.header.frame_id.lstrip("/"), tf.child_frame_id.lstrip("/")
                edges.setdefault(a, []).append((b, pose))
                edges.setdefault(b, []).append((a, inverse(pose)))
    frontier, seen = [(parent.lstrip("/"), IDENTITY)], {parent.lstrip("/")}
    while frontier:
        frame, pose = frontier.pop()
        if frame == child.lstrip("/"):
            return pose
        for other, step in edges.get(frame, []):
            if other not in seen:
                seen.add(other)
                frontier.append((other, compose(pose, step)))
    return None


def read_pose_child_frame(path: str | Path, pose_topic: str) -> str | None:
    """The frame whose poses a pose topic carries: an Odometry's child_frame_id (None for other types)."""
    with _open(Path(path)) as reader:
        conns = _connections(reader, pose_topic, POSE_TYPES)
        for conn, _, raw in reader.messages(connections=conns):
            if conn.msgtype == "nav_msgs/msg/Odometry":
                return reader.deserialize(raw, conn.msgtype).child_frame_id.lstrip("/") or None
            return None
    return None


@dataclass
class OdometryStream:
    """Every message of an odometry topic, in stamp order."""

    stamp_ns: np.ndarray  # N
    pose: np.ndarray  # N x 7: x y z qx qy qz qw of the child frame in frame_id
    covariance: np.ndarray  # N x 6 x 6 pose covariance, geometry_msgs order (zeros: none given)
    frame_id: str
    child_frame_id: str

    def at(self, stamp_ns: int, tolerance_ns: int = 50_000_000) -> np.ndarray | None:
        """The pose with the stamp nearest stamp_ns within tolerance, else None."""
        i = int(np.searchsorted(self.stamp_ns, stamp_ns))
        near = [j for j in (i - 1, i) if 0 <= j < len(self.stamp_ns)]
        if not near:
            return None
        best = min(near, key=lambda j: abs(int(self.stamp_ns[j]) - stamp_ns))
        return self.pose[best] if abs(int(self.stamp_ns[best]) - stamp_ns) <= tolerance_ns else None

    @classmethod
    def concatenate(cls, parts: list["OdometryStream"]) -> "OdometryStream":
        order = np.argsort(np.concatenate([p.stamp_ns for p in parts]), kind="stable")
        return cls(np.concatenate([p.stamp_ns for p in parts])[order], np.concatenate([p.pose for p in parts])[order],
                   np.concatenate([p.covariance for p in parts])[order], parts[0].frame_id, parts[0].child_frame_id)


def read_odometry(path: str | Path, topic: str) -> OdometryStream:
    """A nav_msgs/Odometry topic whole (the pose-graph back-end's keyframes, trajectory error)."""
    stamps, poses, covariances, frames = [], [], [], ("", "")
    with _open(Path(path)) as reader:
        conns = _connections(reader, topic, ("nav_msgs/msg/Odometry",))
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            stamps.append(_stamp_ns(msg.header))
            poses.append([p.x, p.y, p.z, q.x, q.y, q.z, q.w])
            covariances.append(np.asarray(msg.pose.covariance, np.float64).reshape(6, 6))
            frames = (msg.header.frame_id.lstrip("/"), msg.child_frame_id.lstrip("/"))
    if not stamps:
        raise ValueError(f"{path}: no nav_msgs/Odometry messages on {topic}")
    order = np.argsort(stamps, kind="stable")
    return OdometryStream(np.asarray(stamps, np.int64)[order], np.asarray(poses, np.float64)[order],
                          np.asarray(covariances)[order], *frames)
