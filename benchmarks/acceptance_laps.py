"""Loop closures of the shipped defaults on runs the calibration never saw, and what each acceptance rule does.

Every lap of a simulated run (or an image-folder dataset's queries, in order) is replayed through the core
Localizer with the shipped settings (config/localize.yaml = LocalizerConfig()) against a map whose
uncertainty model was trained by `vpr_train_uncertainty MAP --rerank <the shipped matcher>` (a dataset's map
is built and trained here the same way). Printed per set: R@1, the published top-1 probability's ECE and
AUC-PR beside the best single feature's (the inlier count), and the loop closures (accepted, false, recall)
under each rule: the shipped `accept_min_probability`, and the risk-controlled thresholds (`-1` with
`accept_max_false_rate` alpha) for a few alphas. The shipped temporal window applies to every rule (a closure
needs the previous frame's best candidate within `temporal_tolerance` map keys); the rules other than the
shipped one are applied to the same replay (the window does not depend on the threshold), and the shipped
one is checked against what the pipeline itself accepted.

    .venv/bin/python benchmarks/acceptance_laps.py --run runs/cond --laps dusk=2,night=3,fog=4,rain=5,overcast=6,othercam=7
    .venv/bin/python benchmarks/acceptance_laps.py --dataset ../shared/data/corridor
"""

import argparse
from pathlib import Path

import numpy as np

from vpr_ros.core.config import AUTO_MIN_PROBABILITY, LocalizerConfig
from vpr_ros.core.evaluation.metrics import average_precision, reliability

ALPHAS = (0.005, 0.01, 0.02, 0.05)


def _rules(model, matcher: str | None) -> dict[str, float]:
    calibrator = model.calibrator_for(matcher)
    rules = {f"shipped ({LocalizerConfig.accept_min_probability:g})": LocalizerConfig.accept_min_probability}
    for alpha in ALPHAS:
        threshold = max(AUTO_MIN_PROBABILITY, calibrator.risk_threshold(alpha))
        rules[f"risk {alpha:g} ({threshold:.3f})"] = threshold
    return rules


def _score(name: str, records, positives, rules: dict[str, float], config: LocalizerConfig) -> str:
    answered = [(r, p) for r, p in zip(records, positives) if len(r.keys)]
    correct = np.array([int(r.keys[0]) in p for r, p in answered])
    probability = np.array([r.probabilities[0] for r, _ in answered])
    inliers = np.array([r.inliers[0] if r.reranked else 0 for r, _ in answered], np.float64)
    with_truth = sum(1 for _, p in answered if p)
    cells = [f"{name} | {correct.mean():.3f} | {reliability(probability, correct)['ece']:.3f} | "
             f"{average_precision(probability, correct):.3f} / {average_precision(inliers, correct):.3f}"]
    keys = [int(r.keys[0]) for r, _ in answered]
    window_ok = [False] + [abs(a - b) <= config.temporal_tolerance for a, b in zip(keys[:-1], keys[1:])]
    shipped_loops = np.array([r.loop_key >= 0 for r, _ in answered])
    for label, threshold in rules.items():
        accepted = (probability >= threshold) & np.array(window_ok if config.temporal_window else [True] * len(keys))
        if label.startswith("shipped") and not np.array_equal(accepted, shipped_loops):
            raise RuntimeError(f"{name}: the offline rule does not reproduce the pipeline's acceptance")
        false = int((accepted & ~correct).sum())
        cells.append(f"{int(accepted.sum())} ({false}) {(accepted & correct).sum() / max(with_truth, 1):.3f}")
    return "| " + " | ".join(cells) + " |"


def _laps(run: Path, map_dir: Path, laps: str, config: LocalizerConfig):
    from vpr_ros.core.build.uncertainty_training import train_uncertainty
    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.core.matching.reranker import Reranker
    from vpr_ros.tools import eval as vpr_eval

    trained = VPRMap.load(map_dir)
    if trained.uncertainty is None or trained.uncertainty.calibrator_for(config.rerank) is None:
        print(f"({map_dir} has no calibrator for {config.rerank}: training one here, as vpr_train_uncertainty "
              f"--rerank {config.rerank} would, into a copy)", flush=True)
        import shutil
        import tempfile

        copy = Path(tempfile.mkdtemp(prefix="acceptance_laps_")) / "map"
        shutil.copytree(map_dir, copy)
        trained.uncertainty = train_uncertainty(trained, {}, [Reranker(config.rerank)])
        trained.save(copy, overwrite=True)
        map_dir = copy
    for spec in laps.split(","):
        name, lap = spec.split("=")
        report, records, vpr_map = vpr_eval.evaluate_map_bag(
            map_dir, run / f"lap_{lap}", "/camera/image_raw", "/ground_truth", None, 5.0, config,
            camera_info_topic="/camera/camera_info", depth_topic="/camera/depth/image_raw", progress=False)
        positives, _ = vpr_eval.ground_truth(vpr_map, vpr_eval.replay_inputs(
            run / f"lap_{lap}", "/camera/image_raw", "/ground_truth", None)[1], 5.0, None, None)
        yield name, records, positives, vpr_map


def _dataset(root: Path, config: LocalizerConfig):
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file
    from vpr_ros.core.build.uncertainty_training import train_uncertainty
    from vpr_ros.core.evaluation.datasets import ImageFolderDataset
    from vpr_ros.core.evaluation.replay import record_from_result
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.matching.reranker import Reranker
    from vpr_ros.core.pipeline.localizer import Localizer

    dataset = ImageFolderDataset.load(root)
    vpr_map = build_map(root.name, FrameTable.build(np.zeros(len(dataset.refs), np.int64), dataset.refs),
                        load_image_file, "default", progress=False, local_features="xfeat")
    vpr_map.uncertainty = train_uncertainty(vpr_map, {}, [Reranker(config.rerank)])
    localizer = Localizer(config, vpr_map)
    records = [record_from_result(i, i, None, localizer.process(read_image(path), stamp_ns=i), config.rerank)
               for i, path in enumerate(dataset.queries)]
    yield root.name, records, dataset.positives, vpr_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a vpr_sim run whose map/ holds lap 1's map (trained here when it "
                                                "has no calibrator for the shipped matcher)")
    parser.add_argument("--map", type=Path, help="the map (default: RUN/map)")
    parser.add_argument("--laps", default="dusk=2,night=3,fog=4,rain=5,overcast=6,othercam=7")
    parser.add_argument("--dataset", type=Path, help="an image-folder dataset instead (its map is built here)")
    args = parser.parse_args()
    config = LocalizerConfig()
    sets = _dataset(args.dataset, config) if args.dataset else _laps(args.run, args.map or args.run / "map", args.laps, config)
    header = None
    for name, records, positives, vpr_map in sets:
        rules = _rules(vpr_map.uncertainty, config.rerank)
        if header is None:
            header = ["set", "R@1", "ECE", "AUC-PR (inliers)", *(f"{label}: closures (false) recall" for label in rules)]
            print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|", flush=True)
        print(_score(name, records, positives, rules, config), flush=True)


if __name__ == "__main__":
    main()
