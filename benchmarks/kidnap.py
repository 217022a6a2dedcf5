"""Time to relocalize a kidnapped robot: the node's relocalization policy (core.pipeline.relocalization) fed
by the core Localizer with the shipped settings, on a simulated run, with a simulated AMCL.

Each trial drives `--before` frames of a lap from a start place, then the robot is carried ("kidnapped")
half a lap away and drives on for `--after` frames. The query stream is the lap's own frames (images,
camera info, depth), restamped at the lap's frame period so that time runs on through the jump. AMCL is
simulated two ways:
- lost: it tracks the truth (0.1 m standard deviation) until the kidnapping, then its covariance grows
  (3 m): the doubtful trigger;
- fooled: it never notices; it stays confident (0.1 m) at its old belief moved by the robot's odometry since
  the kidnapping: only the disagreement trigger can catch it.
Printed per mode: trials, how many relocalized within `--after` frames, the time from the kidnapping to the
initial pose (frames x the lap's period), its error against the true base_link pose, and any initial pose
published before the kidnapping (spurious: there must be none).

    .venv/bin/python benchmarks/kidnap.py --run demo_run/run --lap lap_3 --map demo_run/maps/merged
"""

import argparse
import math
from pathlib import Path

import numpy as np

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.matching.transforms import pose_matrices
from vpr_ros.core.pipeline.relocalization import RelocalizationSettings, Relocalizer, RobotLocalization

TOPICS = {"image": "/camera/image_raw", "pose": "/ground_truth", "info": "/camera/camera_info",
          "depth": "/camera/depth/image_raw"}


def yaw_of(pose7) -> float:
    rotation, _ = pose_matrices(pose7)
    return math.atan2(rotation[1, 0], rotation[0, 0])


def planar(pose7) -> np.ndarray:
    return np.array([pose7[0], pose7[1], yaw_of(pose7)])


def compose2(a: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """a (x, y, yaw) moved by `delta` expressed in a's frame."""
    c, s = math.cos(a[2]), math.sin(a[2])
    return np.array([a[0] + c * delta[0] - s * delta[1], a[1] + s * delta[0] + c * delta[1], a[2] + delta[2]])


def relative2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b in a's frame (x, y, yaw)."""
    c, s = math.cos(a[2]), math.sin(a[2])
    d = b[:2] - a[:2]
    return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], math.remainder(b[2] - a[2], 2 * math.pi)])


def trial_results(vpr_map, frames, load, depth, K, config, order: list[int], period_ns: int):
    """The Localizer's answers for the frames in `order`, restamped every period_ns."""
    from vpr_ros.core.pipeline.localizer import Localizer

    localizer = Localizer(config, vpr_map)
    out = []
    for step, i in enumerate(order):
        image = load(frames.sources[i])
        out.append(localizer.process(image, step * period_ns, None, K, depth(int(frames.stamp_ns[i]))))
    return out


def run_policy(results, truth: list[np.ndarray], kidnap: int, mode: str, mounting, period_s: float) -> dict:
    """Feed one trial's answers to the policy with the simulated AMCL; what it published and when. Once an
    initial pose was published after the kidnapping, AMCL takes it and tracks the truth again."""
    policy = Relocalizer(RelocalizationSettings(), mounting)
    published, recovered = [], False
    belief, anchor = planar(truth[kidnap - 1]), planar(truth[kidnap])
    for step, (result, true_pose) in enumerate(zip(results, truth)):
        now, true2 = step * period_s, planar(true_pose)
        if step < kidnap or recovered:
            robot = RobotLocalization(*true2, 0.1, 2.0, now)
        elif mode == "lost":  # AMCL's particles spread: a wide covariance around a wrong place
            robot = RobotLocalization(*(belief + np.array([2.0, 2.0, 0.0])), 3.0, 40.0, now)
        else:  # fooled: confident at its old belief, moved by the robot's motion since the kidnapping
            robot = RobotLocalization(*compose2(belief, relative2(anchor, true2)), 0.1, 2.0, now)
        policy.update_robot(robot)
        out = policy.offer(result, now)
        if out is not None:
            error = math.hypot(out.pose.x - true2[0], out.pose.y - true2[1])
            yaw_error = abs(math.degrees(math.remainder(out.pose.yaw - true2[2], 2 * math.pi)))
            published.append((step, out.trigger, error, yaw_error))
            recovered = recovered or step >= kidnap
    spurious = [p for p in published if p[0] < kidnap]
    after = [p for p in published if p[0] >= kidnap]
    first = after[0] if after else None
    return {"spurious": len(spurious), "relocalized": first is not None,
            "time_s": (first[0] - kidnap + 1) * period_s if first else float("nan"),
            "error_m": first[2] if first else float("nan"), "yaw_error_deg": first[3] if first else float("nan"),
            "trigger": first[1] if first else ""}


def main(argv: list[str] | None = None) -> int:
    from vpr_ros.core.build.bag_source import BagDepth, read_bag_frames, read_camera_info
    from vpr_ros.core.map.store import VPRMap

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a vpr_sim run folder")
    parser.add_argument("--lap", default="lap_3")
    parser.add_argument("--map", type=Path, required=True, help="a map with keypoint depths and a calibrator")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--before", type=int, default=10, help="frames driven before the kidnapping")
    parser.add_argument("--after", type=int, default=20, help="frames driven after it")
    args = parser.parse_args(argv)
    bag = args.run / args.lap
    table = read_bag_frames(bag, TOPICS["image"], TOPICS["pose"])
    frames, load = table.frames, table.loader()
    depth = BagDepth(bag, TOPICS["depth"])
    K, _, _ = read_camera_info(bag, TOPICS["info"])
    vpr_map, config = VPRMap.load(args.map), LocalizerConfig()
    mounting = vpr_map.camera.camera_in_body if vpr_map.camera is not None else None
    if mounting is None:
        raise SystemExit(f"{args.map} records no camera mounting: build it from a bag with TF (base_link -> camera)")
    if vpr_map.uncertainty is None or vpr_map.uncertainty.calibrator_for(config.rerank) is None:
        from vpr_ros.core.build.uncertainty_training import train_uncertainty
        from vpr_ros.core.matching.reranker import Reranker

        print(f"({args.map} has no calibrator for {config.rerank}: training one here, in memory, as "
              f"vpr_train_uncertainty --rerank {config.rerank} would)", flush=True)
        vpr_map.uncertainty = train_uncertainty(vpr_map, {}, [Reranker(config.rerank)])
    n = len(frames)
    period_ns = int(np.median(np.diff(frames.stamp_ns)))
    rows = {"lost": [], "fooled": []}
    for trial in range(args.trials):
        start = int(trial * n / args.trials)
        target = (start + args.before + n // 2) % n
        order = [(start + k) % n for k in range(args.before)] + [(target + k) % n for k in range(args.after)]
        results = trial_results(vpr_map, frames, load, depth, K, config, order, period_ns)
        truth = [frames.pose[i] for i in order]
        for mode in rows:
            rows[mode].append(run_policy(results, truth, args.before, mode, mounting, period_ns / 1e9))
        print(f"trial {trial}: frames {order[0]}..{order[args.before - 1]} then {order[args.before]}..{order[-1]}: "
              + "; ".join(f"{m} {r[-1]['trigger'] or 'none'} after {r[-1]['time_s']:.1f} s, {r[-1]['error_m']:.2f} m"
                          for m, r in rows.items()), flush=True)
    print(f"\n{bag} against {args.map.name}: {args.trials} kidnappings half a lap away, {args.before} frames before, "
          f"{args.after} after, frame period {period_ns / 1e9:.2f} s, shipped settings")
    print("| AMCL after the kidnapping | relocalized | time to relocalize (median, max) | position error (median, "
          "max) | heading error (median, max) | spurious before |")
    print("|---|---|---|---|---|---|")
    for mode, trials in rows.items():
        done = [t for t in trials if t["relocalized"]]
        times = np.array([t["time_s"] for t in done]) if done else np.full(1, np.nan)
        errors = np.array([t["error_m"] for t in done]) if done else np.full(1, np.nan)
        yaws = np.array([t["yaw_error_deg"] for t in done]) if done else np.full(1, np.nan)
        print(f"| {mode} | {len(done)} of {len(trials)} | {np.median(times):.1f} s, {times.max():.1f} s | "
              f"{np.median(errors):.2f} m, {errors.max():.2f} m | {np.median(yaws):.1f} deg, {yaws.max():.1f} deg | "
              f"{sum(t['spurious'] for t in trials)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
