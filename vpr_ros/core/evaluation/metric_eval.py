"""How right the published metric poses are: each accepted loop closure's relative pose against the one the
true poses give, the consistency of its covariance, and the localised camera position.

The truth of a loop closure is T_query_match = (T_world_querybody T_body_camera)^-1 T_world_mapbody
T_body_camera, from the replayed bag's true pose and the map frame's pose, each with its camera's mounting
(the query bag's static TF, the map's camera). Errors follow core/matching/metric.py: the translation
error |t_true - t| (m), the rotation error the angle of R_true R^T; NEES = e^T P^-1 e of the 6-vector e
under the published covariance P, whose mean is 6 when P is right (between 3 and 12 is neither
overconfident nor useless, the project's check).
"""

from collections import Counter

import numpy as np

from vpr_ros.core.pipeline.constraints import depth_used
from vpr_ros.core.evaluation.metrics import latency_summary  # p50 / p95 / max / mean / count of any samples
from vpr_ros.core.evaluation.replay import PROCESSED, QueryRecord
from vpr_ros.core.matching.metric import pose_error
from vpr_ros.core.matching.transforms import compose, inverse, pose_matrices


def metric_report(records: list[QueryRecord], vpr_map, query_camera_in_body: np.ndarray | None,
                  positives: list[set[int]] | None = None) -> dict | None:
    """Errors of the metric loop closures and localised poses of a replay; None without loop closures. With
    `positives` (per record, the map keys of its place) the errors are those of the correct loop closures; a
    false one (another place) is counted apart, its error is the place recognition's, not the pose's."""
    accepted = [(r, positives[i] if positives is not None else None)
                for i, r in enumerate(records) if r.status == PROCESSED and r.loop_key >= 0]
    if not accepted:
        return None
    false = [r for r, p in accepted if p is not None and r.loop_key not in p]
    accepted = [r for r, p in accepted if p is None or r.loop_key in p]
    metric = [r for r in accepted if r.loop_scale_known]
    report = {"loop_closures": len(accepted), "metric": len(metric),
              "depth_used": dict(Counter(depth_used(r.loop_detail) for r in metric)),
              "false_loop_closures": len(false), "false_metric": sum(r.loop_scale_known for r in false),
              "direction_only": dict(Counter(r.loop_scale_note or "(no reason given)"
                                             for r in accepted if not r.loop_scale_known))}
    camera = vpr_map.camera
    if camera is None or camera.camera_in_body is None or query_camera_in_body is None:
        report["note"] = "errors need both cameras' mountings (the map's camera and the query bag's static TF)"
        return report
    t_err, r_err, nees, located = [], [], [], []
    for r in metric:
        if not (np.isfinite(r.true_pose).all() and vpr_map.frames.has_pose[r.loop_key]):
            continue
        world_query = compose(r.true_pose, query_camera_in_body)
        truth = compose(inverse(world_query), compose(vpr_map.frames.pose[r.loop_key], camera.camera_in_body))
        rotation, translation = pose_matrices(r.loop_relative)
        true_rotation, true_translation = pose_matrices(truth)
        e = pose_error(rotation, translation, true_rotation, true_translation)
        t_err.append(float(np.linalg.norm(e[:3])))
        r_err.append(float(np.degrees(np.linalg.norm(e[3:]))))
        nees.append(float(e @ np.linalg.solve(r.loop_covariance, e)))
        if r.localized_metric:
            located.append(float(np.linalg.norm(r.localized_pose[:3] - world_query[:3])))
    # what vpr/pose was before metric poses (and still is without one): the map frame's own position
    map_frame = [float(np.linalg.norm(vpr_map.frames.pose[r.loop_key][:3] - compose(r.true_pose, query_camera_in_body)[:3]))
                 for r in accepted if vpr_map.frames.has_pose[r.loop_key] and np.isfinite(r.true_pose).all()]
    report.update({"translation_error_m": latency_summary(t_err), "rotation_error_deg": latency_summary(r_err),
                   "nees": latency_summary(nees), "camera_position_error_m": latency_summary(located),
                   "map_frame_position_error_m": latency_summary(map_frame)})
    return report
