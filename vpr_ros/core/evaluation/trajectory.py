"""Trajectory error, computed with evo (PyPI) as a library: ATE (RMSE, median, max) and RPE per 10 m of an
estimate against the truth, and TUM-format files.

Conventions (docs/posegraph.md): stamps are associated within `max_diff_s`; ATE is the translation part of the
absolute pose error. `align="se3"` first aligns the estimate to the truth (Umeyama, no scale), as SLAM
evaluations do: it measures the shape of the path, not where its frame sits; `align="none"` scores it in the
truth's frame as it stands (localize mode, where the map frame is the truth's). RPE: the translation error of
the relative pose over every 10 m of travel (evo's delta in metres), as a drift measure that needs no alignment.

evo requires Python 3.11 or newer; on a robot with 3.10 (ROS 2 Humble) the node runs without it and only
these figures are unavailable (a clear ImportError).
"""

from pathlib import Path

import numpy as np

RPE_DELTA_M = 10.0


def _evo():
    try:
        from evo.core import metrics, sync, trajectory
        from evo.tools import file_interface
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("trajectory error needs evo (pip install evo==1.38.1, Python >= 3.11)") from exc
    return metrics, sync, trajectory, file_interface


def poses_trajectory(stamps_ns, poses7, name: str = ""):
    """An evo PoseTrajectory3D from stamps (ns) and N x 7 poses (x y z qx qy qz qw)."""
    _, _, trajectory, _ = _evo()
    poses7 = np.asarray(poses7, np.float64).reshape(-1, 7)
    return trajectory.PoseTrajectory3D(positions_xyz=poses7[:, :3], orientations_quat_wxyz=poses7[:, [6, 3, 4, 5]],
                                       timestamps=np.asarray(stamps_ns, np.float64) * 1e-9, meta={"name": name})


def trajectory_error(truth: tuple, estimate: tuple, align: str = "se3", max_diff_s: float = 0.05) -> dict:
    """{"ate_rmse_m", "ate_median_m", "ate_max_m", "rpe_10m_rmse_m", "poses", "align"} of an estimate
    (stamps ns, N x 7) against the truth (stamps ns, M x 7)."""
    if align not in ("se3", "none"):
        raise ValueError(f"align must be se3 or none, got {align!r}")
    metrics, sync, _, _ = _evo()
    reference, estimated = sync.associate_trajectories(poses_trajectory(*truth), poses_trajectory(*estimate),
                                                       max_diff=max_diff_s)
    if reference.num_poses < 3:
        raise ValueError(f"only {reference.num_poses} poses of the estimate have a true pose within {max_diff_s} s")
    if align == "se3":
        estimated.align(reference, correct_scale=False)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((reference, estimated))
    out = {"ate_rmse_m": float(ape.get_statistic(metrics.StatisticsType.rmse)),
           "ate_median_m": float(ape.get_statistic(metrics.StatisticsType.median)),
           "ate_max_m": float(ape.get_statistic(metrics.StatisticsType.max)),
           "poses": int(reference.num_poses), "align": align}
    rpe = metrics.RPE(metrics.PoseRelation.translation_part, delta=RPE_DELTA_M, delta_unit=metrics.Unit.meters,
                      all_pairs=False)
    try:
        rpe.process_data((reference, estimated))
        out["rpe_10m_rmse_m"] = float(rpe.get_statistic(metrics.StatisticsType.rmse))
    except Exception:  # evo raises when the path is shorter than one delta
        out["rpe_10m_rmse_m"] = float("nan")
    return out


def write_tum(path: str | Path, stamps_ns, poses7) -> None:
    """A TUM-format trajectory file (timestamp x y z qx qy qz qw per line)."""
    _, _, _, file_interface = _evo()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    file_interface.write_tum_trajectory_file(str(path), poses_trajectory(stamps_ns, poses7))
