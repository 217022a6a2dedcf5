"""Do the published probabilities hold where the calibration never looked? (issue 41)

The map's uncertainty model is trained as `vpr_train_uncertainty MAP --rerank MATCHER` trains it (synthetic
views of held-out map frames), keeping its calibration rows. Every set of queries (laps of a bag, or an
image-folder dataset, whose own map is built and trained the same way) is replayed through the core
pipeline with the shipped settings (temporal window 0, so that every frame's top-1 counts), globally and
re-ranked. Then, for each candidate feature set, a calibrator is fitted on the calibration rows only (the
best hypothesis of each calibration query, as the training fits the calibrator of the best one) and
its probability of each query's published top-1 is scored on the queries: ECE (10 bins), AUC-PR and
recall at 100 % precision, beside the best single features (L2 distance globally, the inlier count
re-ranked). The shipped sets are features.GLOBAL_FEATURES and features.RERANK_FEATURES.

    .venv/bin/python benchmarks/calibration_transfer.py --map runs/cond/map \
        --bag dusk=runs/cond/lap_2 --bag night=runs/cond/lap_3 --cache runs/cond/transfer
    .venv/bin/python benchmarks/calibration_transfer.py --dataset ../shared/data/corridor --cache runs/corridor

With --cache the replays' features are kept (one .npz per set and ranking) and read back on the next run,
so feature sets can be compared without replaying.
"""

import argparse
from pathlib import Path

import numpy as np

from vpr_ros.core.config import LocalizerConfig
from vpr_ros.core.evaluation.metrics import average_precision, recall_at_full_precision, reliability
from vpr_ros.core.uncertainty.calibration import Calibrator
from vpr_ros.core.uncertainty.features import (ALL_FEATURES, DESCRIPTOR_FEATURES, GEOMETRY_FEATURES, GLOBAL_FEATURES,
                                               RERANK_FEATURES, select)

CANDIDATES = {
    "global": {
        "shipped": GLOBAL_FEATURES,
        "similarity": ["similarity"],
        "similarity, margin": ["similarity", "margin"],
        "descriptor, BayesCap": ["similarity", "margin", "log_query_uncertainty", "log_map_uncertainty",
                                 "pair_likelihood"],
    },
    "rerank": {
        "shipped": RERANK_FEATURES,
        "v2 (descriptor + log inliers)": [f for f in DESCRIPTOR_FEATURES if f != "first"] + ["log_inliers"],
        "log inliers": ["log_inliers"],
        "geometry": GEOMETRY_FEATURES,
        "similarity, margin + geometry": ["similarity", "margin"] + GEOMETRY_FEATURES,
    },
}


def _records_to_arrays(records, positives) -> dict:
    """Top-1 feature rows (Q x ALL_FEATURES) and labels of the records that have ground truth."""
    rows, labels, keys = [], [], []
    for record, places in zip(records, positives):
        if not len(record.keys) or not places:
            continue
        rows.append(record.features()[:1])
        labels.append(int(record.keys[0]) in places)
        keys.append(int(record.keys[0]))
    return {"x": np.concatenate(rows), "y": np.asarray(labels, bool), "key": np.asarray(keys, np.int64)}


def _bag_sets(map_dir: Path, bags: list[str], matcher: str, distance: float, pose_topic: str) -> tuple:
    from vpr_ros.core.build.uncertainty_training import train_uncertainty
    from vpr_ros.core.evaluation.replay import replay_core
    from vpr_ros.core.map.store import VPRMap
    from vpr_ros.core.matching.reranker import Reranker
    from vpr_ros.tools.eval import ground_truth, replay_inputs

    vpr_map = VPRMap.load(map_dir, with_uncertainty=False)
    rows: dict = {}
    vpr_map.uncertainty = train_uncertainty(vpr_map, {}, [Reranker(matcher)], rows_out=rows)

    def replays():
        for spec in bags:
            name, bag = spec.split("=", 1)
            items, queries = replay_inputs(Path(bag), "/camera/image_raw", pose_topic, None)
            positives, _ = ground_truth(vpr_map, queries, distance, None, None)
            for ranking in ("global", "rerank"):
                config = LocalizerConfig(rerank=matcher if ranking == "rerank" else "off", temporal_window=0)
                yield name, ranking, lambda c=config, i=items, p=positives: _records_to_arrays(
                    replay_core(vpr_map, i, c), p)

    return rows, replays()


def _dataset_sets(root: Path, matcher: str) -> tuple:
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file
    from vpr_ros.core.build.uncertainty_training import train_uncertainty
    from vpr_ros.core.evaluation.datasets import ImageFolderDataset
    from vpr_ros.core.evaluation.replay import record_from_result
    from vpr_ros.core.inputs.images import read_image
    from vpr_ros.core.map.frames import FrameTable
    from vpr_ros.core.pipeline.localizer import Localizer
    from vpr_ros.core.matching.reranker import Reranker

    dataset = ImageFolderDataset.load(root)
    vpr_map = build_map(root.name, FrameTable.build(np.zeros(len(dataset.refs), np.int64), dataset.refs),
                        load_image_file, "default", progress=False, local_features="xfeat")
    rows: dict = {}
    vpr_map.uncertainty = train_uncertainty(vpr_map, {}, [Reranker(matcher)], rows_out=rows)
    images = [read_image(path) for path in dataset.queries]

    def replays():
        for ranking in ("global", "rerank"):
            config = LocalizerConfig(rerank=matcher if ranking == "rerank" else "off", temporal_window=0)

            def run(config=config):
                localizer = Localizer(config, vpr_map)
                records = [record_from_result(i, i, None, localizer.process(image, stamp_ns=i), config.rerank)
                           for i, image in enumerate(images)]
                return _records_to_arrays(records, dataset.positives)

            yield root.name, ranking, run

    return rows, replays()


def _score(probability: np.ndarray, correct: np.ndarray) -> str:
    return (f"{reliability(probability, correct)['ece']:.3f} / {average_precision(probability, correct):.3f} / "
            f"{recall_at_full_precision(probability, correct):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", type=Path, help="map directory (with local features) the bags are replayed against")
    parser.add_argument("--bag", action="append", default=[], metavar="NAME=BAG", help="a set of queries (repeatable)")
    parser.add_argument("--dataset", type=Path, help="image-folder dataset (query/, ref/, ground_truth.csv)")
    parser.add_argument("--pose-topic", default="/ground_truth")
    parser.add_argument("--distance", type=float, default=5.0)
    parser.add_argument("--matcher", default=LocalizerConfig.rerank)
    parser.add_argument("--cache", type=Path, help="keep and reuse the calibration rows and replays here")
    args = parser.parse_args()
    cache = args.cache
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    cached_rows = cache / "calibration.npz" if cache else None
    if cached_rows is not None and cached_rows.is_file():
        saved = np.load(cached_rows)
        rows = {name: (saved[f"{name}_x"], saved[f"{name}_y"]) for name in ("global", "rerank")}
        rows_fresh, replays = None, None
    else:
        rows_fresh, replays = (_dataset_sets(args.dataset, args.matcher) if args.dataset
                               else _bag_sets(args.map, args.bag, args.matcher, args.distance, args.pose_topic))
        rows = {"global": rows_fresh["global"], "rerank": rows_fresh[f"rerank:{args.matcher}"]}
        if cached_rows is not None:
            np.savez(cached_rows, **{f"{n}_{k}": v for n, (x, y) in rows.items() for k, v in (("x", x), ("y", y))})
    sets = {}
    if replays is not None:
        for name, ranking, run in replays:
            sets[(name, ranking)] = run()
            if cache is not None:
                np.savez(cache / f"{name}.{ranking}.npz", **sets[(name, ranking)])
    else:
        for path in sorted(cache.glob("*.*.npz")):
            name, ranking = path.name[:-4].rsplit(".", 1)
            sets[(name, ranking)] = dict(np.load(path))
    print(f"calibration rows: {len(rows['global'][1])} global, {len(rows['rerank'][1])} re-ranked "
          f"({rows['rerank'][1].mean():.2f} right); features {ALL_FEATURES}")
    for ranking in ("global", "rerank"):
        x_cal, y_cal = rows[ranking]
        best = x_cal[:, ALL_FEATURES.index("first")] == 1
        if 0 < y_cal[best].sum() < best.sum():  # as the training does: all rows when the best ones are one class
            x_cal, y_cal = x_cal[best], y_cal[best]
        else:
            print(f"({ranking}: the calibration queries' best hypotheses are all one class; fitted on every hypothesis)")
        fitted = {}
        for label, names in CANDIDATES[ranking].items():
            fitted[label] = Calibrator(list(names), increasing=list(names)).fit(select(x_cal, list(names)), y_cal)
        baseline = "similarity" if ranking == "global" else "log_inliers"
        print(f"\n{ranking}: ECE / AUC-PR / recall at 100 % precision of the top-1 probability "
              f"(AUC-PR of {'L2' if ranking == 'global' else 'inliers'} alone in the last column)")
        print("| set | top-1 right | " + " | ".join(CANDIDATES[ranking]) + " | baseline AUC-PR |")
        print("|---" * (len(CANDIDATES[ranking]) + 3) + "|")
        for (name, r), data in sorted(sets.items()):
            if r != ranking:
                continue
            x, y = data["x"], data["y"].astype(bool)
            cells = [_score(c.predict(select(x, c.features)), y) for c in fitted.values()]
            column = x[:, ALL_FEATURES.index(baseline)]
            print(f"| {name} | {y.mean():.3f} ({len(y)}) | " + " | ".join(cells)
                  + f" | {average_precision(column, y):.3f} |")


if __name__ == "__main__":
    main()
