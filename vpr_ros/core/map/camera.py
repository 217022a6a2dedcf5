"""The camera a map was recorded with: intrinsics, image size, optical frame, and where it sits on the
robot whose poses the map stores. map.json's `camera` holds it as plain JSON.

The map's poses are those of its pose source (odometry's child frame, a TF child, a CSV): the robot body,
usually, not the camera. `camera_in_body` (x y z qx qy qz qw of the optical frame in that body frame, from
the bag's static TF or given by hand) turns a map frame's pose into its camera's pose; without it, a
metric relative pose can still be published as a loop-closure edge between the two cameras, but not as
a camera pose in the map.
"""

from dataclasses import dataclass

import numpy as np

from vpr_ros.core.inputs.camera import IntrinsicsError, intrinsics_for


@dataclass
class MapCamera:
    """Intrinsics (3 x 3 K of `size` images), the optical frame's name and, when known, its pose on the body."""

    K: np.ndarray
    size: tuple[int, int]  # (W, H) the K describes
    frame_id: str = ""
    camera_in_body: np.ndarray | None = None  # 7: x y z qx qy qz qw

    def __post_init__(self):
        self.K = intrinsics_for(self.K, self.size, self.size)  # raises IntrinsicsError on an implausible K
        if self.camera_in_body is not None:
            pose = np.asarray(self.camera_in_body, np.float64).reshape(-1)
            if pose.shape != (7,) or not np.isfinite(pose).all() or abs(np.linalg.norm(pose[3:]) - 1.0) > 1e-3:
                raise ValueError(f"camera_in_body must be x y z qx qy qz qw with a unit quaternion, got {pose.tolist()}")
            self.camera_in_body = pose

    def K_for(self, image_size: tuple[int, int]) -> np.ndarray:
        """K for map images of `image_size` (a resize of the recorded size); raises IntrinsicsError otherwise."""
        return intrinsics_for(self.K, self.size, image_size)

    def to_json(self) -> dict:
        return {"K": self.K.reshape(-1).tolist(), "width": int(self.size[0]), "height": int(self.size[1]),
                "frame_id": self.frame_id,
                "camera_in_body": None if self.camera_in_body is None else self.camera_in_body.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "MapCamera":
        """map.json's `camera`; raises ValueError naming the problem."""
        if not isinstance(data, dict):
            raise ValueError(f"camera must be an object, got {type(data).__name__}")
        try:
            K = np.asarray(data["K"], np.float64)
            size = (int(data["width"]), int(data["height"]))
            extrinsic = data.get("camera_in_body")
            return cls(K, size, str(data.get("frame_id", "")),
                       None if extrinsic is None else np.asarray(extrinsic, np.float64))
        except (KeyError, TypeError, IntrinsicsError) as exc:
            raise ValueError(f"camera {data}: {exc}") from exc
