"""How a LoopClosure becomes a factor: its camera-frame relative pose and covariance in the body frame of
the keyframes a pose graph holds, in GTSAM's conventions.

The LoopClosure message (and core/pipeline/results.LoopConstraint) gives T_query_match in the query camera's
optical frame (x_query = R x_match + t) with a 6 x 6 covariance over (x, y, z, rot_x, rot_y, rot_z) as in
geometry_msgs: the error of t, and the rotation error about the query camera's fixed axes,
R_true = exp([dtheta]x) R, t_true = t + dt. A pose graph of body keyframes X_i = T_world_body_i wants the
body-frame relative B = X_q^-1 X_m and a covariance in its own tangent space. With C = T_body_camera (the
camera's mounting):

    B = C T C^-1                                   (T_cq_cm = C^-1 X_q^-1 X_m C)

GTSAM perturbs poses on the right, T_true = T exp(xi), xi = (rotation, translation), both in T's own frame.
From the message's errors: the left-perturbation twist is (dtheta, dt + [t]x dtheta) (first order of
exp(xi_L) T = [exp(dtheta) R | exp(dtheta) t + rho]); the right one is Ad(T^-1) xi_L; the body frame's is
Ad(C) of that, because C T exp(xi) C^-1 = B exp(Ad(C) xi). Every map is linear, so the covariance goes
through the product of the three. Backend authors outside GTSAM: the same chain holds for any right-
perturbed SE(3) (Ceres' and g2o's usual Pose3 parameterisations need only the order of their tangent).
"""

import numpy as np

from vpr_ros.core.matching.transforms import pose_matrices, skew

ROS_TO_GTSAM = np.array([3, 4, 5, 0, 1, 2])  # (x y z rx ry rz) -> (rx ry rz x y z): gtsam's tangent order


def adjoint(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """6 x 6 adjoint of T = (R, t) on twists ordered (rotation, translation), as gtsam.Pose3.AdjointMap."""
    out = np.zeros((6, 6))
    out[:3, :3] = out[3:, 3:] = rotation
    out[3:, :3] = skew(translation) @ rotation
    return out


def matrix(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, translation
    return out


def body_relative(T_query_match: np.ndarray, covariance: np.ndarray, camera_in_body: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(4 x 4 B = X_query^-1 X_match between the body keyframes, its 6 x 6 covariance in gtsam's right-perturbed
    tangent, ordered (rotation, translation)) from a LoopClosure's relative pose (4 x 4, query camera frame)
    and covariance (6 x 6, geometry_msgs order and conventions, module docstring); camera_in_body: 4 x 4
    T_body_camera (identity when the body is the camera)."""
    T, C = np.asarray(T_query_match, np.float64), np.asarray(camera_in_body, np.float64)
    covariance = np.asarray(covariance, np.float64).reshape(6, 6)
    if not (np.isfinite(T).all() and np.isfinite(C).all() and np.isfinite(covariance).all()):
        raise ValueError("a loop closure's relative pose, covariance and the camera's mounting must be finite")
    R, t = T[:3, :3], T[:3, 3]
    to_left = np.zeros((6, 6))  # (dt, dtheta) -> (dtheta, dt + [t]x dtheta)
    to_left[:3, 3:] = np.eye(3)
    to_left[3:, :3] = np.eye(3)
    to_left[3:, 3:] = skew(t)
    R_inv, t_inv = R.T, -R.T @ t
    jacobian = adjoint(C[:3, :3], C[:3, 3]) @ adjoint(R_inv, t_inv) @ to_left
    body = C @ T @ np.linalg.inv(C)
    return body, jacobian @ covariance @ jacobian.T


def pose_matrix(pose7) -> np.ndarray:
    """(x y z qx qy qz qw) -> 4 x 4."""
    rotation, translation = pose_matrices(np.asarray(pose7, np.float64))
    return matrix(rotation, translation)


def world_covariance_to_right(pose: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """A pose's 6 x 6 covariance in geometry_msgs order over (position in the world, rotation about the world's
    axes) -> gtsam's right-perturbed tangent (rotation, translation in the pose's own frame)."""
    R = pose[:3, :3]
    covariance = np.asarray(covariance, np.float64).reshape(6, 6)[np.ix_(ROS_TO_GTSAM, ROS_TO_GTSAM)]
    jacobian = np.zeros((6, 6))  # world (dtheta_w, dp_w) -> right (R^T dtheta_w, R^T dp_w)
    jacobian[:3, :3] = jacobian[3:, 3:] = R.T
    return jacobian @ covariance @ jacobian.T


def body_fix(camera_pose7, covariance, camera_in_body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4 x 4 body pose in the map, its 6 x 6 covariance in geometry_msgs order and conventions) from a localised
    camera pose (vpr/pose: the query camera's optical frame in the map; covariance over the position in the map
    and the rotation about the map's axes) and the camera's mounting T_body_camera. B = P C^-1, so the rotation
    error carries over and the position error gains the lever arm: dp_B = dp_P + [R_B t_C]x dtheta."""
    P, C = pose_matrix(camera_pose7), np.asarray(camera_in_body, np.float64)
    covariance = np.asarray(covariance, np.float64).reshape(6, 6)
    if not (np.isfinite(P).all() and np.isfinite(C).all() and np.isfinite(covariance).all()):
        raise ValueError("a localised pose, its covariance and the camera's mounting must be finite")
    body = P @ np.linalg.inv(C)
    jacobian = np.eye(6)
    jacobian[:3, 3:] = skew(body[:3, :3] @ C[:3, 3])
    return body, jacobian @ covariance @ jacobian.T
