"""`vpr_eval`: Recall@N, loop-closure precision/recall, confidence and per-stage latency of the pipeline.

Two sources of queries, one pipeline: every query goes through core.pipeline.localizer.Localizer.process,
configured by the LocalizerConfig flags (the node's defaults unless told otherwise).
- `--dataset DIR` (the ../shared/data/corridor format: `query/`, `ref/`, `ground_truth.csv`): the
  references become the map (vocabulary and PCA fitted on them, as a robot's map would be); each
  query is answered alone. Recall@N of the global order and, with re-ranking, of the re-ranked one.
- `--map DIR --bag BAG`: the bag's images replayed against a map, by the core or through a running
  vpr_localizer (`--through-node`), scored against the bag's poses or a ground-truth table. With
  `--depth-topic` (and `--camera-info-topic`) the frames come with their depth images and the metric loop
  closures and localised poses are scored too (core/evaluation/metric_eval.py).
"""

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.descriptors.presets import PRESETS
from vpr_ros.core.evaluation.dataset_eval import evaluate_dataset, machine_info
from vpr_ros.core.evaluation.scoring import RECALL_NS
from vpr_ros.core.map.frames import FrameTable
from vpr_ros.core.map.store import VPRMap
from vpr_ros.core.posegraph.factors import pose_matrix
from vpr_ros.core.posegraph.graph import GraphSettings
from vpr_ros.tools import add_bag_topic_arguments
from vpr_ros.tools.config_args import add_config_arguments, config_from_args
from vpr_ros.tools.plots import confidence_plots

# the pipeline settings vpr_eval takes as flags (both sources; the loop-closure ones matter only with --map)
CONFIG_FLAGS = ("prior_k_sigma", "prior_min_radius_m", "prior_max_radius_m", "top_k", "rerank", "rerank_top_k", "skip_margin", "skip_min_probability", "min_inliers",
                "min_inlier_ratio", "min_keypoint_share", "accept_min_inliers", "accept_min_similarity", "accept_min_probability",
                "accept_max_false_rate",
                "temporal_window", "temporal_tolerance", "max_keypoints", "matcher_layers", "device", "precision",
                "backend", "cpu_threads", "verifier", "device_query", "sequence_length", "sequence_max_step",
                "sequence_similarity", "accept_min_sequence_score")


def replay_inputs(bag: Path, image_topic: str, pose_topic: str | None, tf_frames: tuple[str, str] | None):
    """The bag's images as (stamp_ns, true pose or None, loader) in bag order, and their frame table."""
    from vpr_ros.core.build.bag_source import read_bag_frames

    queries = read_bag_frames(bag, image_topic, pose_topic, tf_frames)
    frames, load = queries.frames, queries.loader()
    items = [(int(frames.stamp_ns[i]), frames.pose[i] if frames.has_pose[i] else None,
              (lambda source=frames.sources[i]: load(source))) for i in range(len(frames))]
    return items, frames


def query_images(bag: Path, image_topic: str):
    """query_image(record) for the report's gallery: the replayed frame, read again from the bag."""
    from vpr_ros.core.build.bag_source import read_bag_frames
    from vpr_ros.core.build.sources import SourceLoader

    sources, load = read_bag_frames(bag, image_topic).frames.sources, SourceLoader()
    return lambda record: load(sources[record.index])


def ground_truth(vpr_map: VPRMap, queries: FrameTable, distance_m: float, frame_tolerance: int | None,
                 table_path: Path | None) -> tuple[list[set[int]], dict]:
    """Per query the map keys of its place, and a description of the criterion."""
    from vpr_ros.core.evaluation import scoring as evaluation

    if table_path is not None:
        table = json.loads(Path(table_path).read_text())
        pairs = {int(q): [int(s) for s in refs] for q, refs in zip(table["query_stamps_ns"], table["matching_stamps_ns"])}
        return evaluation.by_stamps(vpr_map.frames, queries.stamp_ns, pairs), {"ground_truth": str(table_path)}
    if not queries.has_pose.any():
        raise ValueError("the query bag yields no poses; pass --pose-topic or --tf-frames, or --ground-truth")
    if frame_tolerance is not None:
        return (evaluation.by_frames(vpr_map.frames, queries.pose, frame_tolerance, distance_m),
                {"frame_tolerance": frame_tolerance, "distance_m": distance_m})
    return evaluation.by_distance(vpr_map.frames, queries.pose, distance_m), {"distance_m": distance_m}


def evaluate_map_bag(map_dir: Path, bag: Path, image_topic: str, pose_topic: str | None,
                     tf_frames: tuple[str, str] | None, distance_m: float, config: LocalizerConfig,
                     frame_tolerance: int | None = None, ground_truth_path: Path | None = None,
                     camera_info_topic: str | None = None, through_node: dict | None = None,
                     progress: bool = True, depth_topic: str | None = None,
                     prior_sigma_m: float | None = None, prior_seed: int = 0,
                     prior_gps_topic: str | None = None, odom_topic: str | None = None,
                     graph_settings=None, trajectories: Path | None = None) -> tuple[dict, list, VPRMap]:
    """Replay a bag's images against a map through the core pipeline, or with `through_node` (options of
    ros.replay.replay_through_node) through a running vpr_localizer; returns (report, records, map).
    prior_sigma_m: give each frame a position prior of that accuracy around its true position (core replay);
    prior_gps_topic: or the bag's NavSatFix nearest each frame (for maps with GPS). odom_topic: the robot's
    odometry: the pose-graph back-end runs over it with the localised poses as fixes (localize mode), and the
    report gains the trajectory error of the odometry alone and of the optimised path (unaligned: the map frame
    is the truth's), TUM files in `trajectories`."""
    from vpr_ros.core.evaluation.metric_eval import metric_report
    from vpr_ros.core.evaluation.replay import PROCESSED, recorded_prior, replay_core, simulated_prior
    from vpr_ros.core.evaluation.scoring import evaluate_replay
    from vpr_ros.core.build.bag_source import BagDepth, read_camera_info, read_gps_priors

    vpr_map = VPRMap.load(map_dir, checkpoint=config.checkpoint or None)
    items, queries = replay_inputs(bag, image_topic, pose_topic, tf_frames)
    positives, criterion = ground_truth(vpr_map, queries, distance_m, frame_tolerance, ground_truth_path)
    K, camera_frame = None, ""
    if camera_info_topic:
        K, _, camera_frame = read_camera_info(bag, camera_info_topic)
    depth = BagDepth(bag, depth_topic) if depth_topic else None
    if through_node is None:
        prior = (simulated_prior(prior_sigma_m, prior_seed) if prior_sigma_m else
                 recorded_prior(read_gps_priors(bag, prior_gps_topic)) if prior_gps_topic else None)
        records = replay_core(vpr_map, items, config, K, progress, depth, prior)
        how = "core"
    else:
        from vpr_ros.ros.replay import replay_through_node

        prior = simulated_prior(prior_sigma_m, prior_seed) if prior_sigma_m else None
        graph_node = {}
        if odom_topic:  # the back-end as its own node beside vpr_localizer, vpr/pose as its fixes
            from vpr_ros.core.build.bag_source import read_odometry

            odometry = read_odometry(bag, odom_topic)
            mounting = _query_mounting(bag, odom_topic, None, camera_frame)
            graph_node = {"odometry": odometry, "outputs": {}, "pose_graph": _pose_graph_arguments(
                mounting, dataclasses.replace(graph_settings or GraphSettings(), anchor="free"), loop_closure_topic="",
                fix_topic="/vpr/pose")}
        records = replay_through_node(map_dir, items, config, K, progress=progress, depth=depth, prior=prior,
                                      **graph_node, **through_node)
        how = "node"
        if config.sequence_length:  # the single-image answers, through the node too, for the side-by-side recall
            single = replay_through_node(map_dir, items, dataclasses.replace(config, sequence_length=0), K,
                                         progress=progress, depth=depth, **through_node)
            for record, alone in zip(records, single):
                record.single_keys = alone.global_order if alone.status == PROCESSED else None
    report = {
        "map": str(map_dir), "bag": str(bag), "replay": how, "preset": vpr_map.descriptor.preset,
        "descriptor_dim": vpr_map.descriptor.dim, "fingerprint": vpr_map.descriptor.fingerprint(),
        "map_size": len(vpr_map), "num_queries": len(records), **criterion,
        "config": dict(vars(config)),
        "calibrated": vpr_map.uncertainty is not None,
        **evaluate_replay(records, positives, vpr_map),
        "machine": machine_info(),
    }
    if through_node is not None:
        report["node"] = dict(through_node)
    if prior_sigma_m or prior_gps_topic:
        searched = [r.search_frames for r in records if r.status == PROCESSED]
        report["prior"] = {"sigma_m": prior_sigma_m, "seed": prior_seed, "gps_topic": prior_gps_topic, "k_sigma": config.prior_k_sigma,
                           "min_radius_m": config.prior_min_radius_m, "max_radius_m": config.prior_max_radius_m,
                           "frames_with_prior": sum(s >= 0 for s in searched),
                           "mean_searched_frames": float(np.mean([s if s >= 0 else len(vpr_map) for s in searched]))
                           if searched else None}
    if len(vpr_map.frames.sessions) > 1:
        report["sessions"] = _session_counts(records, vpr_map)
    with_depth = bool(depth_topic) or (vpr_map.local is not None and vpr_map.local.depth is not None)
    if with_depth:  # without depth on either side no loop closure can be metric: nothing to report about it
        metric = metric_report(records, vpr_map, _query_mounting(bag, pose_topic, tf_frames, camera_frame), positives)
        if metric is not None:
            report["metric"] = metric
    if odom_topic:
        from vpr_ros.core.build.bag_source import read_odometry
        from vpr_ros.core.evaluation.trajectory import graph_from_records, trajectory_report

        odometry = read_odometry(bag, odom_topic)
        mounting = _query_mounting(bag, odom_topic, None, camera_frame)
        settings = dataclasses.replace(graph_settings or GraphSettings(), anchor="free")  # the map frame is the map's
        graph = graph_from_records(odometry, records, None if mounting is None else pose_matrix(mounting),
                                   settings, closures=False, fixes=True)
        report["trajectory"] = {"odom_topic": odom_topic, "mode": "localize (vpr/pose as fixes)",
                                **trajectory_report(records, odometry, graph, "none", trajectories)}
        if through_node is not None:
            report["trajectory"]["pose_graph_node"] = _node_path_error(records, graph_node["outputs"],
                                                                       report["trajectory"], "none")
    return report, records, vpr_map


def evaluate_slam_bags(bags: list[Path], image_topic: str, pose_topic: str, odom_topic: str, distance_m: float,
                       config: LocalizerConfig, camera_info_topic: str | None = None, depth_topic: str | None = None,
                       progress: bool = True, graph_settings=None, trajectories: Path | None = None,
                       through_node: dict | None = None, inject_false: tuple[float, ...] = (),
                       inject_seed: int = 0) -> tuple[dict, list]:
    """A robot's run (its bags in order) through the pipeline in slam mode, each frame with its odometry
    pose, the loop closures into the pose-graph back-end (core.posegraph) with the odometry: the closures
    (correct when query and match lie within distance_m of each other by the truth), ATE/RPE of the odometry
    and of the optimised path (SE(3)-aligned), and each correct metric closure's body-frame NEES. inject_false:
    shares of false closures added to the accepted ones (core.evaluation.trajectory.inject_false_closures) for a
    robustness table: the back-end as configured and without kernel or support, on the same replay."""
    from vpr_ros.core.build.bag_source import BagDepth, OdometryStream, read_camera_info, read_odometry
    from vpr_ros.core.evaluation.replay import PROCESSED, replay_core
    from vpr_ros.core.evaluation.trajectory import closure_nees, graph_from_records, trajectory_report

    config = dataclasses.replace(config, mode="slam")
    items = []
    for bag in bags:
        items += replay_inputs(bag, image_topic, pose_topic, None)[0]
    if any(b[0] <= a[0] for a, b in zip(items, items[1:])):
        raise ValueError("the bags' frames must follow one another in time (give the bags in the order recorded)")
    odometry = OdometryStream.concatenate([read_odometry(bag, odom_topic) for bag in bags])
    K, camera_frame = (None, "")
    if camera_info_topic:
        K, _, camera_frame = read_camera_info(bags[0], camera_info_topic)
    depths = [BagDepth(bag, depth_topic) for bag in bags] if depth_topic else None
    depth = (lambda stamp: next((d for d in (f(stamp) for f in depths) if d is not None), None)) if depths else None
    mounting = _query_mounting(bags[0], odom_topic, None, camera_frame)
    if through_node is None:
        records = replay_core(None, items, config, K, progress, depth, odometry=odometry.at)
    else:
        from vpr_ros.ros.replay import replay_through_node

        node_outputs: dict = {}
        records = replay_through_node(None, items, config, K, progress=progress, depth=depth, odometry=odometry,
                                      pose_graph=_pose_graph_arguments(mounting, graph_settings),
                                      outputs=node_outputs, **through_node)
    truth = {r.stamp_ns: r.true_pose for r in records if np.isfinite(r.true_pose).all()}
    loops = [r for r in records if r.status == PROCESSED and r.loop_key >= 0]
    correct = [r for r in loops if r.loop_match_stamp_ns in truth and r.stamp_ns in truth
               and np.linalg.norm(truth[r.stamp_ns][:3] - truth[r.loop_match_stamp_ns][:3]) <= distance_m]
    body_camera = None if mounting is None else pose_matrix(mounting)
    graph = graph_from_records(odometry, records, body_camera, graph_settings, closures=True)
    report = {"bags": [str(b) for b in bags], "replay": "core" if through_node is None else "node", "mode": "slam",
              "num_queries": len(records), "distance_m": distance_m, "config": dict(vars(config)),
              "frames": {"processed": sum(r.status == PROCESSED for r in records), "total": len(records)},
              "loop_closures": {"accepted": len(loops), "correct": len(correct),
                                "metric": sum(r.loop_scale_known for r in loops),
                                "precision": len(correct) / len(loops) if loops else None},
              "trajectory": {"odom_topic": odom_topic, "mode": "slam (loop closures)",
                             **trajectory_report(records, odometry, graph, "se3", trajectories)},
              "machine": machine_info()}
    if inject_false:
        from vpr_ros.core.evaluation.trajectory import inject_false_closures
        from vpr_ros.core.posegraph.graph import GraphSettings

        table = []
        for share in inject_false:
            polluted = inject_false_closures(records, share, np.random.default_rng([inject_seed, int(share * 1000)]))
            row = {"share": share, "injected": len(polluted) - len(records)}
            for name, settings in (("configured", graph_settings or GraphSettings()),
                                   ("no kernel, no support", GraphSettings(kernel="none", support=0))):
                errors = trajectory_report(polluted, odometry, graph_from_records(odometry, polluted, body_camera, settings),
                                           "se3")
                row[name] = {"ate_rmse_m": errors["optimised"]["ate_rmse_m"], "closures_in_graph": errors["graph"]["closures"]}
            table.append(row)
        report["trajectory"]["injected_false_closures"] = table
    if body_camera is not None:
        report["loop_closures"]["nees"] = closure_nees(records, truth.get, body_camera, distance_m)
    if through_node is not None:
        report["node"] = dict(through_node)
        report["trajectory"]["pose_graph_node"] = _node_path_error(records, node_outputs, report["trajectory"], "se3")
    return report, records


def _pose_graph_arguments(mounting, settings, loop_closure_topic: str = "/vpr/loop_closure",
                          fix_topic: str = "") -> list[str]:
    """`--ros-args` of a vpr_pose_graph beside a replayed vpr_localizer (ros/replay.py's topics)."""
    from vpr_ros.ros.replay import ODOM_TOPIC, ros_arguments

    return ros_arguments({"odom_topic": ODOM_TOPIC, "loop_closure_topic": loop_closure_topic, "fix_topic": fix_topic,
                          "path_topic": "/vpr/optimized_path", "publish_period_s": 1.0,
                          "camera_in_body": [float(v) for v in (mounting if mounting is not None else np.zeros(7))],
                          **dataclasses.asdict(settings or GraphSettings())})


def _node_path_error(records, outputs: dict, trajectory: dict, align: str) -> dict:
    """ATE/RPE of the back-end node's last optimised path against the records' truth."""
    from vpr_ros.core.evaluation.trajectory import trajectory_error

    path = outputs.get("path")
    if path is None:  # the back-end node published nothing: say so, never a success
        raise RuntimeError("vpr_pose_graph published no optimised path; its log:\n"
                           + outputs.get("pose_graph_log", "")[-3000:])
    truth = [(r.stamp_ns, r.true_pose) for r in records if np.isfinite(r.true_pose).all()]
    try:
        error = trajectory_error((np.array([t[0] for t in truth]), np.array([t[1] for t in truth])), path, align)
    except ValueError as exc:
        raise RuntimeError(f"vpr_pose_graph's path ({len(path[0])} poses) cannot be scored: {exc}; its log:\n"
                           + outputs.get("pose_graph_log", "")[-3000:]) from exc
    return {**error, "ate_ratio": trajectory["odometry"]["ate_rmse_m"] / max(error["ate_rmse_m"], 1e-9)}


def _session_counts(records, vpr_map: VPRMap) -> dict:
    """Per session of a multi-session map: its frames, and how many top-1 answers and loop closures fell in it."""
    out = {s.id: {"robot": s.robot, "map_frames": int(np.count_nonzero(vpr_map.frames.session == i)), "top1": 0,
                  "loop_closures": 0} for i, s in enumerate(vpr_map.frames.sessions)}
    for record in records:
        if len(record.keys):
            out[vpr_map.frames.session_of(int(record.keys[0])).id]["top1"] += 1
        if record.loop_key >= 0:
            out[vpr_map.frames.session_of(record.loop_key).id]["loop_closures"] += 1
    return out


def _query_mounting(bag: Path, pose_topic: str | None, tf_frames, camera_frame: str):
    """The query camera's pose on the bag's posed body, from its static TF (None when it does not say)."""
    from vpr_ros.core.build.bag_source import read_pose_child_frame, read_static_transform

    body = tf_frames[1] if tf_frames else read_pose_child_frame(bag, pose_topic) if pose_topic else None
    return read_static_transform(bag, body, camera_frame) if body and camera_frame else None


def _print_replay(report: dict) -> None:
    frames = report["frames"]
    print(f"{report['bag']} -> {report['map']} ({report['replay']} replay)  preset {report['preset']}  "
          f"{report['num_queries']} frames / {report['map_size']} map frames")
    print(f"  frames: {frames['processed']} processed, {frames['dropped']} dropped, {frames['bad']} bad, "
          f"{frames['without_true_match']} without a true match in the map")
    truth = (f"within {report['frame_tolerance']} frames" if "frame_tolerance" in report
             else f"within {report['distance_m']} m" if "distance_m" in report else "by the ground-truth table")
    fmt = lambda rec: "  ".join(f"R@{n} {'  n/a' if rec[str(n)] is None else format(rec[str(n)], '.3f')}"
                                for n in RECALL_NS)
    if "sequence" in report:
        seq = report["sequence"]
        if "recall_single" in seq:
            print(f"  single    {fmt(seq['recall_single'])}   ({truth}; each frame by its own image)")
        print(f"  sequence  {fmt(seq['recall_sequence'])}   (last {seq['length']} frames; "
              f"{seq['frames_ranked_by_sequence']} frames ranked by sequence)")
        if "top1" in seq:
            t = seq["top1"]
            print("  sequence top-1: " + "; ".join(
                f"{name.replace('_', ' ')} AUC-PR {t[name]['auc_pr']:.3f}, recall at 100 % precision "
                f"{t[name]['recall_at_precision_100']:.3f}" for name in ("sequence_score", "similarity")))
    if "recall_global" in report:
        print(f"  global    {fmt(report['recall_global'])}   ({truth})")
        print(f"  reranked  {fmt(report['recall'])}")
    else:
        print(f"  global    {fmt(report['recall'])}   ({truth})")
    if "prior" in report:
        prior = report["prior"]
        source = (f"GPS {prior['gps_topic']}" if prior["gps_topic"] else f"sigma {prior['sigma_m']} m")
        print(f"  prior: {source} (k {prior['k_sigma']}, radius {prior['min_radius_m']}.."
              f"{prior['max_radius_m']} m) on {prior['frames_with_prior']} frames; {prior['mean_searched_frames']:.0f} "
              f"of {report['map_size']} map frames searched on average")
    if "sessions" in report:
        print("  sessions of the map: " + "; ".join(
            f"{name}: {s['map_frames']} frames, {s['top1']} top-1 answers, {s['loop_closures']} loop closures"
            for name, s in report["sessions"].items()))
    loop = report["loop_closure"]
    p = "n/a" if loop["precision"] is None else f"{loop['precision']:.3f}"
    r = "n/a" if loop["recall"] is None else f"{loop['recall']:.3f}"
    print(f"  loop closures: {loop['accepted']} accepted, {loop['false']} false; precision {p}, recall {r}")
    if "top1" in report:
        top1 = report["top1"]
        print(f"  top-1 by {top1['confidence']}: AUC-PR {top1['auc_pr']:.3f}, recall at 100 % precision "
              f"{top1['recall_at_precision_100']:.3f}")
    if "metric" in report:
        _print_metric(report["metric"])
    for stage in ("descriptor", "search", "local_features", "match", "verify", "uncertainty", "total", "end_to_end"):
        if stage in report["latency_ms"]:
            lat = report["latency_ms"][stage]
            print(f"  {stage:14} p50 {lat['p50']:7.1f} ms  p95 {lat['p95']:7.1f} ms  max {lat['max']:7.1f} ms")


def _print_metric(metric: dict) -> None:
    used = ", ".join(f"{n} with {source} depth" for source, n in sorted(metric.get("depth_used", {}).items()))
    print(f"  metric loop closures: {metric['metric']} of {metric['loop_closures']} correct ones"
          + (f" ({used})" if used else "")
          + "".join(f"; {n} without scale: {why}" for why, n in metric["direction_only"].items())
          + (f"; {metric['false_metric']} of {metric['false_loop_closures']} false ones metric too (not scored)"
             if metric["false_loop_closures"] else ""))
    if metric.get("translation_error_m", {}).get("count"):
        t, r, nees = metric["translation_error_m"], metric["rotation_error_deg"], metric["nees"]
        print(f"    relative pose error: translation median {t['p50']:.3f} m, p95 {t['p95']:.3f} m; rotation "
              f"median {r['p50']:.2f} deg, p95 {r['p95']:.2f} deg; NEES mean {nees['mean']:.1f} (6 when the "
              f"covariance is right), median {nees['p50']:.1f}")
        located, old = metric["camera_position_error_m"], metric["map_frame_position_error_m"]
        if located.get("count"):
            print(f"    vpr/pose camera position error: median {located['p50']:.3f} m, p95 {located['p95']:.3f} m "
                  f"(the map frame's position: median {old['p50']:.2f} m)")
    elif "note" in metric:
        print(f"    {metric['note']}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpr_eval", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="image-folder dataset: query/, ref/, ground_truth.csv")
    source.add_argument("--map", type=Path, help="map directory to replay the images of --bag against")
    source.add_argument("--slam", type=Path, nargs="+", metavar="BAG",
                        help="a robot's run, its bags in the order recorded, through the pipeline in slam mode (needs "
                             "--odom-topic and --pose-topic: the truth); its loop closures go to the pose-graph "
                             "back-end and the report gives the trajectory error with and without them")
    truth = parser.add_argument_group("ground truth (with --map)")
    truth.add_argument("--distance", type=float, default=25.0,
                       help="a map frame within this many metres of the query is its place (25 m as in the VPR "
                            "literature; with --frame-tolerance: the farthest a nearest map frame may be)")
    truth.add_argument("--frame-tolerance", type=int,
                       help="instead: the map frame nearest the query and this many keys either side")
    truth.add_argument("--ground-truth", type=Path,
                       help="instead: JSON table of query stamps -> map frame stamps (vpr_folder_to_bag writes it)")
    bag = parser.add_argument_group("query bag (with --map)")
    bag.add_argument("--bag", type=Path, help="bag of query images (with ground truth)")
    add_bag_topic_arguments(bag)
    bag.add_argument("--camera-info-topic", help="with --bag: CameraInfo topic (intrinsics for relative poses)")
    bag.add_argument("--depth-topic", help="with --bag: aligned depth images (16UC1/32FC1) given to the localizer with "
                                           "their frames; metric loop closures are scored against the bag's poses")
    parser.add_argument("--prior-sigma", type=float, metavar="M",
                        help="with --map (core replay, or published on the node's prior_topic): give every frame a position prior this many metres (standard "
                             "deviation) around its true position; retrieval searches only map frames near it")
    parser.add_argument("--prior-seed", type=int, default=0, help="with --prior-sigma: seed of the prior's noise")
    parser.add_argument("--prior-gps-topic", metavar="TOPIC",
                        help="with --map (core replay): the bag's sensor_msgs/NavSatFix nearest each frame is its "
                             "position prior (the map's frames need GPS: vpr_build_map --gps-topic)")
    graph = parser.add_argument_group("pose-graph back-end (core/posegraph, vpr_pose_graph; docs/posegraph.md)")
    graph.add_argument("--odom-topic", metavar="TOPIC",
                       help="the robot's nav_msgs/Odometry: with --slam, the keyframes' poses and the back-end's "
                            "chain; with --map, the back-end runs with vpr/pose as fixes. The report gains ATE/RPE of "
                            "the odometry alone and of the optimised path (evo)")
    graph.add_argument("--trajectories", type=Path, metavar="DIR",
                       help="with --odom-topic: write truth, odometry and optimised trajectories (TUM format) here")
    graph.add_argument("--graph-kernel", choices=("cauchy", "huber", "none"), default="cauchy",
                       help="the back-end's robust kernel on closures and fixes (default: cauchy)")
    graph.add_argument("--graph-support", type=int, default=1,
                       help="agreeing closures a closure needs before it enters the graph (default: 1; 0: none)")
    graph.add_argument("--inject-false", type=float, nargs="+", default=[], metavar="SHARE",
                       help="with --slam: also run the back-end with this share of false closures added to the "
                            "accepted ones (e.g. 0.05 0.2), as configured and without kernel or support")
    parser.add_argument("--through-node", action="store_true",
                        help="with --map: replay through a running vpr_localizer (a real ROS graph) instead of the core")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="with --through-node: playback speed (1: the bag's rate; 0: one frame at a time, "
                             "waiting for each answer)")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), metavar="PRESET",
                        help=f"with --dataset: descriptor preset, one of {', '.join(sorted(PRESETS))}")
    parser.add_argument("--checkpoint", type=Path,
                        help="weights file of a published-model preset (cosplace-*, salad-*, ...): with --dataset, "
                             "the preset's weights; with --map, where the map's weights are now")
    parser.add_argument("--uncertainty", action="store_true",
                        help="report how well each confidence tells a correct top-1 from a wrong one (with "
                             "--dataset: train the map's uncertainty model first; with --map: automatic when the "
                             "map has one)")
    parser.add_argument("--json", type=Path, help="write the full report to this JSON file")
    parser.add_argument("--html", type=Path, help="with --map: write a self-contained HTML report with plots")
    parser.add_argument("--plots", type=Path, help="write PNG plots into this folder (with --uncertainty)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser, CONFIG_FLAGS)
    return parser


def _run_dataset(args) -> dict:
    config = config_from_args(args, CONFIG_FLAGS)
    return evaluate_dataset(args.dataset, args.preset, config, not args.quiet, {} if args.uncertainty else None,
                            str(args.checkpoint) if args.checkpoint else None)


def _run_map(args) -> tuple[dict, list, VPRMap]:
    config = config_from_args(args, CONFIG_FLAGS, checkpoint=str(args.checkpoint) if args.checkpoint else "")
    node = {"rate": args.rate} if args.through_node else None
    return evaluate_map_bag(args.map, args.bag, args.image_topic, args.pose_topic,
                            tuple(args.tf_frames) if args.tf_frames else None, args.distance, config,
                            args.frame_tolerance, args.ground_truth, args.camera_info_topic, node, not args.quiet,
                            args.depth_topic, args.prior_sigma, args.prior_seed, args.prior_gps_topic,
                            args.odom_topic, _graph_settings(args), args.trajectories)


def _graph_settings(args):
    return GraphSettings(kernel=args.graph_kernel, support=args.graph_support)


def _run_slam(args) -> tuple[dict, list]:
    config = config_from_args(args, CONFIG_FLAGS, checkpoint=str(args.checkpoint) if args.checkpoint else "")
    return evaluate_slam_bags(args.slam, args.image_topic, args.pose_topic, args.odom_topic, args.distance, config,
                              args.camera_info_topic, args.depth_topic, not args.quiet, _graph_settings(args),
                              args.trajectories, {"rate": args.rate} if args.through_node else None,
                              tuple(args.inject_false))


def _print_trajectory(report: dict) -> None:
    if "trajectory" not in report:
        return
    t = report["trajectory"]
    fmt = lambda e: (f"ATE RMSE {e['ate_rmse_m']:.3f} m (median {e['ate_median_m']:.3f}, max {e['ate_max_m']:.3f}), "  # noqa: E731
                     f"RPE per 10 m {e['rpe_10m_rmse_m']:.3f} m")
    g = t["graph"]
    print(f"  trajectory ({t['mode']}, {'SE(3)-aligned' if t['align'] == 'se3' else 'in the map frame'}, evo):")
    print(f"    odometry alone   {fmt(t['odometry'])}")
    print(f"    with vpr_ros     {fmt(t['optimised'])}  -> {t['ate_ratio']:.1f}x lower ATE")
    if "pose_graph_node" in t:
        print(f"    vpr_pose_graph   {fmt(t['pose_graph_node'])}  -> {t['pose_graph_node']['ate_ratio']:.1f}x lower ATE "
              "(the back-end as its own node, fed by vpr_localizer in the graph)")
    for row in t.get("injected_false_closures", []):
        print(f"    +{row['injected']} false closures ({row['share']:.0%}): ATE {row['configured']['ate_rmse_m']:.3f} m "
              f"as configured, {row['no kernel, no support']['ate_rmse_m']:.3f} m without kernel or support")
    refused = ", ".join(f"{k} {v}" for k, v in g["refused"].items()) or "none"
    print(f"    back-end: {g['keyframes']} keyframes, {g['closures']} closures ({g.get('downweighted', 0)} all but "
          f"ignored by the kernel) and {g['fixes']} fixes in the graph, {g['waiting']} waiting; refused: {refused}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.map and not (args.bag and args.image_topic):
        parser.error("--map needs --bag and --image-topic")
    if args.slam and not (args.image_topic and args.pose_topic and args.odom_topic):
        parser.error("--slam needs --image-topic, --pose-topic (the truth) and --odom-topic (the robot's odometry)")
    if args.through_node and not (args.map or args.slam):
        parser.error("--through-node replays a bag: it needs --map and --bag, or --slam")
    if args.rate < 0:
        parser.error("--rate must be >= 0")
    if args.prior_sigma is not None and (not args.map or args.prior_sigma <= 0):
        parser.error("--prior-sigma takes a positive number of metres, with --map")
    if args.prior_gps_topic and (args.through_node or not args.map or args.prior_sigma):
        parser.error("--prior-gps-topic works with --map and the core replay, and not with --prior-sigma")
    if args.depth_topic and not ((args.map or args.slam) and args.camera_info_topic):
        parser.error("--depth-topic needs --map and --bag or --slam, and --camera-info-topic (3-D points need the intrinsics)")
    try:
        if args.dataset:
            report = _run_dataset(args)
        elif args.slam:
            report, records = _run_slam(args)
        else:
            report, records, vpr_map = _run_map(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"vpr_eval: error: {exc}", file=sys.stderr)
        return 2
    if args.slam:
        _print_slam(report)
        if args.html:
            from vpr_ros.tools.report import write_slam_html

            write_slam_html(args.html, report)
            print(f"  html report: {args.html}")
    elif args.map:
        _print_replay(report)
        if report["frames"]["processed"] == 0:  # a replay that answered nothing failed, whatever else it wrote
            print(f"vpr_eval: error: none of the {report['frames']['total']} frames was answered "
                  f"({report['frames']['dropped']} dropped, {report['frames']['bad']} refused); see the log above",
                  file=sys.stderr)
            return 1
        if args.html:
            from vpr_ros.tools.report import write_html

            write_html(args.html, report, records, vpr_map, query_images(args.bag, args.image_topic))
            print(f"  html report: {args.html}")
        _print_trajectory(report)
    else:
        _print_dataset(report)
    _print_confidence(report, args.plots)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"  report: {args.json}")
    return 0


def _print_slam(report: dict) -> None:
    loops = report["loop_closures"]
    print(f"{len(report['bags'])} bags in slam mode ({report['replay']} replay): {report['frames']['processed']} of "
          f"{report['frames']['total']} frames processed")
    precision = "n/a" if loops["precision"] is None else f"{loops['precision']:.3f}"
    print(f"  loop closures: {loops['accepted']} accepted, {loops['correct']} correct within {report['distance_m']} m "
          f"(precision {precision}), {loops['metric']} metric")
    nees = loops.get("nees", {})
    if nees.get("closures"):
        print(f"  body-frame NEES of the correct metric closures: mean {nees['nees_mean']:.1f} (6 when consistent), "
              f"median {nees['nees_median']:.1f}, {nees['inside_99_percent']:.0%} inside the 99 % bound")
    _print_trajectory(report)


def _print_dataset(report: dict) -> None:
    recall = "  ".join(f"R@{n} {report['recall'][str(n)]:.3f}" for n in RECALL_NS)
    print(f"{report['dataset']}  preset {report['preset']} ({report['descriptor_dim']}-d)  "
          f"{report['num_queries']} queries / {report['map_size']} map frames")
    print(f"  global    {recall}")
    if "sequence" in report:
        seq = report["sequence"]
        recall = "  ".join(f"R@{n} {seq['recall'][str(n)]:.3f}" for n in RECALL_NS)
        print(f"  sequence  {recall}  (last {seq['length']} frames, {seq['frames_ranked_by_sequence']} queries "
              "ranked by sequence)")
    if "rerank" in report:
        rerank = report["rerank"]
        recall = "  ".join(f"R@{n} {rerank['recall'][str(n)]:.3f}" for n in RECALL_NS)
        print(f"  reranked  {recall}  ({rerank['matcher']}, top {rerank['top_k']}, "
              f"{rerank['matcher_ms_per_pair']['p50']:.1f} ms per pair p50, "
              f"{rerank['queries_skipped']} queries verified their first candidate only)")
    for stage, lat in report["latency_ms"].items():
        if stage == "pipeline":  # the same as total
            continue
        print(f"  {stage:11} p50 {lat['p50']:7.1f} ms  p95 {lat['p95']:7.1f} ms")


def _print_confidence(report: dict, plots: Path | None) -> None:
    if "confidence" not in report:
        return
    conf = report["confidence"]
    print(f"  confidence of the top-1 ({conf['top1_accuracy']:.3f} of {conf['queries']} correct):")
    for name, m in conf["methods"].items():
        if "skipped" in m:
            print(f"    {name:15} skipped: {m['skipped']}")
            continue
        print(f"    {name:15} AUC-PR {m['auc_pr']:.3f}  AUROC {m['auroc']:.3f}  R@P100 {m['recall_at_precision_100']:.3f}"
              f"  P@R100 {m['precision_at_recall_100']:.3f}  P@R90 {m['precision_at_recall_90']:.3f}"
              + (f"  ECE {m['ece']:.3f}" if "ece" in m else ""))
    if plots:
        for path in confidence_plots(conf, plots, Path(report.get("dataset") or report["bag"]).name):
            print(f"  plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
