"""`vpr_train_uncertainty`: train a map's BayesCap head and calibrators, and store them in the map.

    vpr_train_uncertainty maps/lap1
    vpr_train_uncertainty maps/lap1 --rerank xfeat-lighterglue   # also calibrate re-ranked hypotheses

Positive pairs come from the map's poses (within --positive-distance and --positive-heading); a map
without poses uses its route order instead (frames at most --positive-frames keys apart). The
calibration queries are synthetic views of held-out map frames when the map's images can still be
read, else their stored descriptors (optimistic; reported). See vpr_ros/core/uncertainty/training.py.
"""

import argparse
import logging
import sys
from pathlib import Path

from vpr_ros.core.maps.map_store import MapError, VPRMap
from vpr_ros.core.matching.geometry import GeometricVerifier
from vpr_ros.core.matching.matchers import MATCHERS
from vpr_ros.core.matching.reranker import Reranker
from vpr_ros.core.uncertainty.calibration import KINDS
from vpr_ros.core.uncertainty.training import DEFAULT_TRAINING, train_uncertainty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_train_uncertainty", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("map", type=Path, help="map directory (the model is written into it)")
    d = DEFAULT_TRAINING
    parser.add_argument("--positive-distance", type=float, default=d["positive_distance_m"],
                        help="metres within which two posed frames show the same place")
    parser.add_argument("--positive-heading", type=float, default=d["positive_heading_deg"],
                        help="degrees of orientation difference allowed for the same place")
    parser.add_argument("--positive-frames", type=int, default=d["positive_frames"],
                        help="maps without poses: frames at most this many keys apart show the same place")
    parser.add_argument("--rerank", choices=sorted(MATCHERS), action="append", default=[],
                        help="also fit the calibrator for hypotheses re-ranked by this matcher (repeatable; "
                             "the map must store its local features)")
    parser.add_argument("--views", type=int, default=d["views"], help="calibration queries per held-out frame")
    parser.add_argument("--view-strength", type=float, default=d["view_strength"],
                        help="viewpoint change of the synthetic views (1: mild)")
    parser.add_argument("--calibration-fraction", type=float, default=d["calibration_fraction"])
    parser.add_argument("--calibrator", choices=KINDS, default=d["calibrator"])
    parser.add_argument("--epochs", type=int, default=d["epochs"])
    parser.add_argument("--top-k", type=int, default=d["top_k"], help="hypotheses per calibration query")
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--stored-descriptors", action="store_true",
                        help="do not read the map's images; calibrate on stored descriptors (optimistic)")
    parser.add_argument("--checkpoint", type=Path,
                        help="maps of a published-model preset: its weights file, when not where the map records it")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.views < 1 or args.epochs < 1 or args.top_k < 2 or not 0 < args.calibration_fraction < 1:
        parser.error("--views and --epochs must be >= 1, --top-k >= 2, --calibration-fraction in (0, 1)")
    options = {"positive_distance_m": args.positive_distance, "positive_heading_deg": args.positive_heading,
               "positive_frames": args.positive_frames, "views": args.views, "view_strength": args.view_strength,
               "calibration_fraction": args.calibration_fraction, "calibrator": args.calibrator,
               "epochs": args.epochs, "top_k": args.top_k, "seed": args.seed}
    try:
        vpr_map = VPRMap.load(args.map, checkpoint=args.checkpoint)
        progress = None if args.quiet else (lambda epoch, stats: print(
            f"  epoch {epoch:3d}  train loss {stats['train_loss'][-1]:.2f}"
            + (f"  val loss {stats['val_loss'][-1]:.2f}" if stats["val_loss"] else "")))
        load = False if args.stored_descriptors else None
        rerankers = [Reranker(matcher, GeometricVerifier()) for matcher in dict.fromkeys(args.rerank)]
        model = train_uncertainty(vpr_map, options, rerankers, load=load, progress=progress)
        vpr_map.uncertainty = model
        vpr_map.save(args.map, overwrite=True)
    except (FileNotFoundError, ValueError, MapError) as exc:
        print(f"vpr_train_uncertainty: error: {exc}", file=sys.stderr)
        return 2
    t = model.training
    print(f"uncertainty model for map {vpr_map.name}: {t['train_pairs']} training pairs by {t['positives']}, "
          f"{t['calibration_queries']} calibration queries ({t['calibration_views']}, top-1 right "
          f"{t['calibration_top1_accuracy']:.2f}), calibrators {sorted(model.calibrators)}, "
          f"{t['seconds']:.0f} s -> {args.map}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
