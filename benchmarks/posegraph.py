"""The pose-graph back-end on simulated runs' truth (no rendering): trajectory error with and without
closures, false closures, large drift, the kernels, and iSAM2's time per closure.

    .venv/bin/python benchmarks/posegraph.py [--seeds 0 1 2] [--frames 160] [--laps 3] [--json out.json]
    .venv/bin/python benchmarks/posegraph.py --timing-keyframes 1000     # iSAM2 update per closure

For each seed: the simulator's route and drifting odometry (vpr_sim's defaults, or --drift times them), closures
every 6th frame of the later laps against the nearest earlier frame (5 cm, 0.5 degree published covariance,
the error drawn --overconfidence times wider), a share of them replaced by wrong pairs. The graph gets the
odometry with its covariance and the closures as they come (core/posegraph). ATE is evo's, SE(3)-aligned
(core/evaluation/trajectory.py), of the odometry and of the optimised keyframes.
"""

import argparse
import json
import sys
from dataclasses import replace

import numpy as np

from vpr_ros.core.posegraph.graph import GraphSettings, PoseGraph
from vpr_ros.sim.closures import RunPoses, ate, replay, simulated_closures
from vpr_ros.sim.odometry import OdometryDrift
from vpr_ros.sim.run import SimRun

VARIANTS = {  # name: GraphSettings changes
    "cauchy+support": {},
    "huber+support": {"kernel": "huber"},
    "none+support": {"kernel": "none"},
    "cauchy": {"support": 0},
    "huber": {"kernel": "huber", "support": 0},
    "none": {"kernel": "none", "support": 0},
    "huber+support2": {"kernel": "huber", "support": 2},
    "cauchy+support2": {"support": 2},
}


def scenario(seed: int, frames: int, laps: int, drift: float, false_share: float, overconfidence: float,
             variants: dict, odometry_covariance: bool = True, false_run: int = 1) -> dict:
    run = SimRun({"seed": seed, "frames": frames, "laps": laps, "odometry_drift": drift})
    poses = RunPoses.of(run)
    closures = simulated_closures(poses, np.random.default_rng([seed, 7, int(false_share * 100)]),
                                  overconfidence=overconfidence, false_share=false_share, false_run=false_run)
    out = {"seed": seed, "drift": drift, "false_share": false_share, "closures": len(closures),
           "false": sum(not c.true for c in closures), "odometry_max_error_m": run.drift_summary()["max_error_m"],
           "odometry_ate_m": ate(poses, poses.stamps, poses.odometry)}
    for name, changes in variants.items():
        graph, _ = replay(poses, closures, replace(GraphSettings(), **changes), odometry_covariance)
        out[name] = {"ate_m": ate(poses, graph.stamps(), graph.trajectory()), "in_graph": graph.counts.closures}
    return out


def timing(keyframes: int, repeats: int = 30) -> dict:
    """iSAM2 update time per closure once the graph holds `keyframes` keyframes (closures every 6 frames)."""
    laps = 3
    run = SimRun({"seed": 0, "frames": keyframes // laps, "laps": laps})
    poses = RunPoses.of(run)
    closures = simulated_closures(poses, np.random.default_rng(0))
    _, times = replay(poses, closures, GraphSettings())
    late = times[-repeats:]
    return {"keyframes": len(poses.stamps), "closures": len(times), "p50_ms_last": float(np.median(late)),
            "p90_ms_last": float(np.percentile(late, 90)), "p50_ms_all": float(np.median(times))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--laps", type=int, default=3)
    parser.add_argument("--drift", type=float, nargs="+", default=[1.0, 5.0], help="factors on the default drift")
    parser.add_argument("--false-share", type=float, nargs="+", default=[0.0, 0.05, 0.2])
    parser.add_argument("--overconfidence", type=float, default=2.0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-odometry-covariance", action="store_true",
                        help="the odometry comes without covariance: the graph's drift model (2 %% per metre, "
                             "0.002 rad per metre), overconfident for a drift larger than the default")
    parser.add_argument("--false-run", type=int, default=1,
                        help="false closures in runs of this many that agree with one another (a look-alike stretch)")
    parser.add_argument("--timing-keyframes", type=int, default=0, help="also time iSAM2 at this many keyframes")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    print(f"odometry drift default: {OdometryDrift()}")
    rows = []
    for drift in args.drift:
        for share in args.false_share:
            for seed in args.seeds:
                row = scenario(seed, args.frames, args.laps, drift, share, args.overconfidence,
                               {v: VARIANTS[v] for v in args.variants}, not args.no_odometry_covariance,
                               args.false_run)
                rows.append(row)
                cells = "  ".join(f"{v} {row[v]['ate_m']:.3f} ({row[v]['in_graph']})" for v in args.variants)
                print(f"drift x{drift:g} false {share:.0%} seed {seed}: odometry {row['odometry_ate_m']:.2f} m "
                      f"(max error {row['odometry_max_error_m']:.1f} m), {row['closures']} closures "
                      f"({row['false']} false) -> {cells}", flush=True)
    result = {"rows": rows}
    if args.timing_keyframes:
        result["timing"] = timing(args.timing_keyframes)
        t = result["timing"]
        print(f"iSAM2 at {t['keyframes']} keyframes: {t['p50_ms_last']:.2f} ms p50 per closure over the last 30 "
              f"(p90 {t['p90_ms_last']:.2f}), {t['p50_ms_all']:.2f} ms p50 over all {t['closures']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
