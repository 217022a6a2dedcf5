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
    try:
        reference, estimated = sync.associate_trajectories(poses_trajectory(*truth), poses_trajectory(*estimate),
                                                           max_diff=max_diff_s)
    except sync.SyncException as exc:
        raise ValueError(f"no pose of the estimate has a true pose within {max_diff_s} s: {exc}") from exc
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


def graph_from_records(odometry, records, mounting: np.ndarray | None, settings=None, closures: bool = True,
                       fixes: bool = False):
    """Run the pose-graph back-end (core.posegraph.PoseGraph) over a replay: every odometry message
    (build.bag_source.OdometryStream) in stamp order, each record's loop closure (closures: slam mode, the match
    in this run) and localised pose (fixes: localize mode, vpr/pose) once the odometry has reached its stamp.
    mounting: T_body_camera (4 x 4). Returns the graph."""
    from vpr_ros.core.posegraph.graph import PoseGraph

    graph = PoseGraph(settings)
    events = sorted((r.stamp_ns, i) for i, r in enumerate(records) if r.status == "processed"
                    and ((closures and r.loop_key >= 0 and r.loop_match_stamp_ns >= 0)
                         or (fixes and np.isfinite(r.localized_pose).all())))
    e = 0
    for k, stamp in enumerate(odometry.stamp_ns):
        graph.add_odometry(int(stamp), odometry.pose[k], odometry.covariance[k])
        while e < len(events) and events[e][0] <= stamp:
            r = records[events[e][1]]
            if closures and r.loop_key >= 0 and r.loop_match_stamp_ns >= 0:
                graph.add_loop(r.stamp_ns, r.loop_match_stamp_ns, r.loop_relative, r.loop_covariance, mounting,
                               r.loop_scale_known)
            if fixes and np.isfinite(r.localized_pose).all() and np.isfinite(r.localized_covariance).all():
                graph.add_fix(r.stamp_ns, r.localized_pose, r.localized_covariance, mounting)
            e += 1
    return graph


def trajectory_report(records, odometry, graph, align: str, out_dir: Path | None = None) -> dict:
    """ATE and RPE of the odometry alone and of the optimised keyframes against the records' true poses (evo),
    their ratio, what the graph took and refused; TUM files of truth, odometry and optimised into out_dir."""
    import dataclasses

    truth = [(r.stamp_ns, r.true_pose) for r in records if np.isfinite(r.true_pose).all()]
    if len(truth) < 3:
        raise ValueError("trajectory error needs the true poses of the replayed frames (--pose-topic)")
    truth_stamps, truth_poses = np.array([t[0] for t in truth]), np.array([t[1] for t in truth])
    optimised = (graph.stamps(), graph.trajectory())
    out = {"align": align,
           "odometry": trajectory_error((truth_stamps, truth_poses), (odometry.stamp_ns, odometry.pose), align),
           "optimised": trajectory_error((truth_stamps, truth_poses), optimised, align)}
    out["ate_ratio"] = out["odometry"]["ate_rmse_m"] / max(out["optimised"]["ate_rmse_m"], 1e-9)
    counts = dataclasses.asdict(graph.counts)
    counts.pop("reasons")
    out["graph"] = {**counts, "settings": dataclasses.asdict(graph.settings)}
    keyframes = dict(zip(optimised[0].tolist(), optimised[1][:, :2].round(3).tolist()))
    edges = graph.closure_edges_by_stamp()
    out["paths"] = {  # x, y for the report's plot (metres, map frame; not aligned)
        "truth": truth_poses[:, :2].round(3).tolist(), "odometry": odometry.pose[:, :2].round(3).tolist(),
        "optimised": optimised[1][:, :2].round(3).tolist(),
        "closures": [keyframes[q] + keyframes[m] + [round(error, 2)] for q, m, error in edges
                     if q in keyframes and m in keyframes]}
    out["graph"]["downweighted"] = graph.downweighted()
    if out_dir is not None:
        write_tum(Path(out_dir) / "truth.tum", truth_stamps, truth_poses)
        write_tum(Path(out_dir) / "odometry.tum", odometry.stamp_ns, odometry.pose)
        write_tum(Path(out_dir) / "optimised.tum", *optimised)
        out["tum"] = str(out_dir)
    return out


def closure_nees(records, truth_at, mounting: np.ndarray, distance_m: float) -> dict:
    """For every correct metric loop closure (true positions within distance_m) whose query and match have true
    poses (truth_at(stamp_ns) -> 7 or None): the body-frame relative pose the back-end builds
    (posegraph.factors.body_relative) against the truth, as NEES (6 when consistent) and the share inside the
    99 % chi-square bound."""
    import gtsam

    from vpr_ros.core.posegraph.factors import body_relative, pose_matrix

    values = []
    for r in records:
        if r.loop_key < 0 or not r.loop_scale_known or not np.isfinite(r.loop_relative).all():
            continue
        query, match = truth_at(r.stamp_ns), truth_at(r.loop_match_stamp_ns)
        if query is None or match is None:
            continue
        if np.linalg.norm(np.asarray(query[:3]) - np.asarray(match[:3])) > distance_m:
            continue
        true_body = np.linalg.inv(pose_matrix(query)) @ pose_matrix(match)
        body, covariance = body_relative(pose_matrix(r.loop_relative), r.loop_covariance, mounting)
        error = gtsam.Pose3.Logmap(gtsam.Pose3(body).inverse().compose(gtsam.Pose3(true_body)))
        values.append(float(error @ np.linalg.solve(covariance, error)))
    if not values:
        return {"closures": 0}
    values = np.array(values)
    return {"closures": int(len(values)), "nees_mean": float(values.mean()), "nees_median": float(np.median(values)),
            "inside_99_percent": float(np.mean(values <= 16.81))}


def inject_false_closures(records, share: float, rng: np.random.Generator, min_distance_m: float = 20.0) -> list:
    """The records plus `share` x (accepted closures) false ones, as a look-alike would give: a query frame
    paired with an earlier frame at least min_distance_m away by the truth, carrying the relative pose and
    covariance of a real metric closure (plausible, wrong). For robustness tables; the records are not changed."""
    import copy

    metric = [r for r in records if r.loop_key >= 0 and r.loop_scale_known]
    posed = [r for r in records if r.status == "processed" and np.isfinite(r.true_pose).all()]
    count = int(round(share * sum(r.loop_key >= 0 for r in records)))
    if not metric or len(posed) < 3 or count == 0:
        return list(records)
    out = list(records)
    for _ in range(100 * count):
        if len(out) - len(records) >= count:
            break
        query = posed[int(rng.integers(1, len(posed)))]
        earlier = [r for r in posed if r.stamp_ns < query.stamp_ns
                   and np.linalg.norm(r.true_pose[:3] - query.true_pose[:3]) >= min_distance_m]
        if not earlier:
            continue
        match, like = earlier[int(rng.integers(len(earlier)))], metric[int(rng.integers(len(metric)))]
        fake = copy.copy(query)
        fake.loop_key, fake.loop_match_stamp_ns, fake.loop_scale_known = 0, match.stamp_ns, True
        fake.loop_relative, fake.loop_covariance = like.loop_relative.copy(), like.loop_covariance.copy()
        fake.localized_pose = np.full(7, np.nan)
        fake.note = "injected false closure"
        out.append(fake)
    return out
