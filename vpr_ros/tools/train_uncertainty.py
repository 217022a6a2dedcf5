"""`vpr_train_uncertainty`: train a map's BayesCap head and calibrators, and store them in the map.

    vpr_train_uncertainty maps/lap1
    vpr_train_uncertainty maps/lap1 --rerank xfeat-lighterglue   # also calibrate re-ranked hypotheses
    # also calibrate sequence ranking (sequence_length 10) on another session of the same route, with poses
    vpr_train_uncertainty maps/lap1 --rerank xfeat-mnn --session runs/night --image-topic /camera/image_raw \
        --pose-topic /ground_truth --sequence-length 10

Positive pairs come from the map's poses (within --positive-distance and --positive-heading); a map
without poses uses its route order instead (frames at most --positive-frames keys apart). The
calibration queries are synthetic views of held-out map frames when the map's images can still be
read, else their stored descriptors (optimistic; reported). With --session, another real traversal of
the route (a bag with poses; its poses within --session-distance of a map frame's make the right places) is
replayed against the map: its single-image answers join the synthetic views in the global and re-ranked
calibrators (real revisits under another light carry what views of the map's own images cannot), and its
answers ranked by sequence fit the sequence calibrators, which apply to nodes running the same
--sequence-length and --sequence-similarity. See vpr_ros/core/build/uncertainty_training.py.
"""

import argparse
import logging
import sys
from pathlib import Path

from vpr_ros.core.config import AUTO_MIN_PROBABILITY, LocalizerConfig
from vpr_ros.core.map.store import MapError, VPRMap
from vpr_ros.core.matching.geometry import GeometricVerifier
from vpr_ros.core.matching.matchers import MATCHERS
from vpr_ros.core.matching.reranker import Reranker
from vpr_ros.core.uncertainty.calibration import KINDS
from vpr_ros.core.build.uncertainty_training import (DEFAULT_TRAINING, fit_session_calibrators,
                                                     fit_single_image_on_session, train_uncertainty)


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
    parser.add_argument("--train-views", type=int, default=d["train_views"],
                        help="synthetic views per training frame that train the BayesCap head (0: the map's pairs only)")
    parser.add_argument("--view-strength", type=float, default=d["view_strength"],
                        help="mean change of the synthetic views (each view draws 0.3-1.7 times it; 1: mild)")
    parser.add_argument("--calibration-fraction", type=float, default=d["calibration_fraction"],
                        help="share of the map frames held out from the head for the calibration queries")
    parser.add_argument("--max-calibration-frames", type=int, default=d["max_calibration_frames"],
                        help="at most this many held-out frames (each gives --views queries)")
    parser.add_argument("--calibrator", choices=KINDS, default=d["calibrator"])
    parser.add_argument("--epochs", type=int, default=d["epochs"])
    parser.add_argument("--top-k", type=int, default=d["top_k"], help="hypotheses per calibration query")
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--stored-descriptors", action="store_true",
                        help="do not read the map's images; calibrate on stored descriptors (optimistic)")
    parser.add_argument("--checkpoint", type=Path,
                        help="maps of a published-model preset: its weights file, when not where the map records it")
    session = parser.add_argument_group("sequence ranking, calibrated on another session")
    session.add_argument("--session", type=Path, help="a bag of another traversal of the map's route, with poses")
    session.add_argument("--image-topic", help="with --session: its image topic")
    session.add_argument("--pose-topic", help="with --session: its PoseStamped/Odometry topic (the map's frame)")
    session.add_argument("--session-distance", type=float, default=5.0,
                         help="metres from a map frame within which a session frame shows its place")
    session.add_argument("--sequence-length", type=int, default=10, help="the node's sequence_length")
    session.add_argument("--sequence-max-step", type=int, default=3, help="the node's sequence_max_step")
    session.add_argument("--sequence-similarity", choices=("centred", "plain"), default="centred",
                         help="the node's sequence_similarity")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.session and not (args.image_topic and args.pose_topic):
        parser.error("--session needs --image-topic and --pose-topic")
    if args.session and args.sequence_length < 2:
        parser.error("--sequence-length must be >= 2 with --session")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.views < 1 or args.epochs < 1 or args.top_k < 2 or not 0 < args.calibration_fraction < 1 \
            or args.train_views < 0 or args.max_calibration_frames < 1:
        parser.error("--views, --epochs and --max-calibration-frames must be >= 1, --train-views >= 0, --top-k >= 2, "
                     "--calibration-fraction in (0, 1)")
    options = {"positive_distance_m": args.positive_distance, "positive_heading_deg": args.positive_heading,
               "positive_frames": args.positive_frames, "views": args.views, "train_views": args.train_views,
               "view_strength": args.view_strength,
               "calibration_fraction": args.calibration_fraction, "calibrator": args.calibrator,
               "max_calibration_frames": args.max_calibration_frames,
               "epochs": args.epochs, "top_k": args.top_k, "seed": args.seed}
    try:
        vpr_map = VPRMap.load(args.map, checkpoint=args.checkpoint, with_uncertainty=False)
        progress = None if args.quiet else (lambda epoch, stats: print(
            f"  epoch {epoch:3d}  train loss {stats['train_loss'][-1]:.2f}"
            + (f"  val loss {stats['val_loss'][-1]:.2f}" if stats["val_loss"] else "")))
        load = False if args.stored_descriptors else None
        rerankers = [Reranker(matcher, GeometricVerifier()) for matcher in dict.fromkeys(args.rerank)]
        view_rows: dict = {}
        model = train_uncertainty(vpr_map, options, rerankers, load=load, progress=progress, rows_out=view_rows)
        vpr_map.uncertainty = model
        if args.session:
            _calibrate_on_session(vpr_map, args, view_rows)
        vpr_map.save(args.map, overwrite=True)
    except (FileNotFoundError, ValueError, MapError) as exc:
        print(f"vpr_train_uncertainty: error: {exc}", file=sys.stderr)
        return 2
    t = model.training
    print(f"uncertainty model for map {vpr_map.name}: {t['train_pairs']} training pairs by {t['positives']} and "
          f"{t['view_pairs']} with synthetic views (rank {t['rank']}), {t['calibration_queries']} calibration queries ({t['calibration_views']}, top-1 right "
          f"{t['calibration_top1_accuracy']:.2f}), calibrators {sorted(model.calibrators)}, "
          f"{t['seconds']:.0f} s -> {args.map}")
    alpha = LocalizerConfig.accept_max_false_rate
    for name in ("global", *(f"rerank:{m}" for m in dict.fromkeys(args.rerank))):
        threshold = max(AUTO_MIN_PROBABILITY, model.calibrators[name].risk_threshold(alpha))
        print(f"  {name}: with accept_min_probability < 0, loop closures are accepted from probability {threshold:.3f} "
              f"(false-closure rate <= {alpha:g} on the {model.calibrators[name].fitted_on} calibration queries)")
    for name, counts in t.get("sequence", {}).get("calibrators", {}).items():
        print(f"  {name}: {counts['hypotheses']} hypotheses of the session ({counts['right']} right), "
              f"sequence_length {t['sequence']['length']}, {t['sequence']['similarity']} rows")
    return 0


def _calibrate_on_session(vpr_map: VPRMap, args, view_rows: dict) -> None:
    """Replay --session against the map, once per ranking: without sequence matching, to refit the single-image
    calibrators on the views and the session together; with it, to fit the sequence calibrators."""
    from vpr_ros.tools.eval import ground_truth, replay_inputs

    items, queries = replay_inputs(args.session, args.image_topic, args.pose_topic, None)
    positives, _ = ground_truth(vpr_map, queries, args.session_distance, None, None)
    # the replays run before the calibrators they fit exist: their "no calibrator for sequence ranking" is noise
    quiet = lambda record: "no calibrator for sequence ranking" not in record.getMessage()  # noqa: E731
    logging.getLogger("vpr_ros").addFilter(quiet)
    try:
        single = _replays(vpr_map, items, args, sequence_length=0)
        fit_single_image_on_session(vpr_map.uncertainty, view_rows, single, positives, args.calibrator, str(args.session))
        replays = _replays(vpr_map, items, args, sequence_length=args.sequence_length)
    finally:
        logging.getLogger("vpr_ros").removeFilter(quiet)
    fit_session_calibrators(vpr_map.uncertainty, replays, positives, args.sequence_length,
                            args.sequence_similarity, args.calibrator, str(args.session))


def _replays(vpr_map: VPRMap, items: list, args, sequence_length: int) -> dict:
    """The session replayed (with sequence matching when sequence_length > 0): global ranking, and re-ranked by
    each --rerank matcher."""
    from vpr_ros.core.config import LocalizerConfig
    from vpr_ros.core.evaluation.replay import replay_core

    replays = {}
    for matcher in [None, *dict.fromkeys(args.rerank)]:
        config = LocalizerConfig(rerank=matcher or "off", top_k=args.top_k, temporal_window=0,
                                 sequence_length=sequence_length, sequence_max_step=args.sequence_max_step,
                                 sequence_similarity=args.sequence_similarity)
        if not args.quiet:
            print(f"replaying {args.session} ({len(items)} frames), ranked by "
                  + (f"sequence ({sequence_length} frames)" if sequence_length else "single image")
                  + (f", re-ranked by {matcher}" if matcher else ""))
        replays[matcher] = replay_core(vpr_map, items, config, progress=not args.quiet)
    return replays


if __name__ == "__main__":
    sys.exit(main())
