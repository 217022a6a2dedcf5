"""Rigid transforms as the map and the messages carry them: poses (x y z qx qy qz qw), rotation matrices and
unit quaternions (x, y, z, w). A pose T_a_b is b's frame expressed in a: x_a = R x_b + t."""

import math

import numpy as np

IDENTITY = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


def quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """3 x 3 rotation matrix -> unit quaternion (x, y, z, w)."""
    m = np.asarray(rotation, np.float64)
    w = math.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    q = np.array([x, y, z, w])
    return q / np.linalg.norm(q)


def quaternion_matrix(q) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised here -> 3 x 3 rotation matrix."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def pose_matrices(pose7) -> tuple[np.ndarray, np.ndarray]:
    """(x y z qx qy qz qw) -> (R, t)."""
    pose7 = np.asarray(pose7, np.float64)
    return quaternion_matrix(pose7[3:]), pose7[:3].copy()


def pose7(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(R, t) -> (x y z qx qy qz qw)."""
    return np.concatenate([np.asarray(translation, np.float64).reshape(3), quaternion_xyzw(rotation)])


def compose(a, b) -> np.ndarray:
    """Poses a, b (7 each) -> a b: b expressed through a."""
    ra, ta = pose_matrices(a)
    rb, tb = pose_matrices(b)
    return pose7(ra @ rb, ra @ tb + ta)


def inverse(a) -> np.ndarray:
    r, t = pose_matrices(a)
    return pose7(r.T, -r.T @ t)
