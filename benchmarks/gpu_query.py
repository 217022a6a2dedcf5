"""The whole query on one device, against the stage-by-stage pipeline, in one run.

`Localizer.process` on a `--size`-frame map (the first 40 Corridor references with real descriptors and
local features among random unit vectors, as benchmarks/stages.py builds it) with top-`--pairs`
re-ranking by `--rerank`, in these variants:

- `stages`: the pipeline as it was before the device chain (device_query off, OpenCV MAGSAC++ in
  threads): every stage reads its result back to the host;
- `chain`: device_query on (pipeline/device_chain.py), one CUDA graph per frame on CUDA;
- `chain+compile`: the same with the backbone and sparse head compiled by torch.compile (Inductor).

For each: the median and 90th percentile back to back and with frames arriving at 10 Hz, and the
median of each stage the pipeline reports. Then the chain's stages one by one (eager, synchronised
after each), so that the captured total can be read against its parts. Last, recall on Corridor: every
query against a map of all 111 references, on the CPU stage pipeline (the reference) and on the chain
on `--device`: R@1 before and after re-ranking and the share of candidates with the same verified
decision.

    python benchmarks/gpu_query.py [--device cuda] [--size 100000] [--pairs 10] [--json F]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import vpr_ros  # noqa: F401  (before torch: the OpenMP wait policy)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORRIDOR, clock, machine  # noqa: E402
from stages import fitted_descriptor, large_map  # noqa: E402

from vpr_ros.core.config import LocalizerConfig  # noqa: E402
from vpr_ros.core.evaluation.datasets import ImageFolderDataset  # noqa: E402
from vpr_ros.core.inputs.images import batch_to_uint8, list_images, read_image  # noqa: E402
from vpr_ros.core.pipeline.localizer import Localizer  # noqa: E402
from vpr_ros.core.pipeline.device_chain import DeviceQuery  # noqa: E402
from vpr_ros.core.map.frames import FrameTable  # noqa: E402
from vpr_ros.core.build.map_builder import build_map  # noqa: E402
from vpr_ros.core.build.sources import load_image_file  # noqa: E402
from vpr_ros.core.matching.local_features import LocalExtractor  # noqa: E402
from vpr_ros.core.runtime.backends import TorchBackend  # noqa: E402


def summary(samples: list[float]) -> dict:
    return {"p50": round(statistics.median(samples), 3), "p90": round(float(np.percentile(samples, 90)), 3)}


def config(device: str, rerank: str, pairs: int, chain: bool) -> LocalizerConfig:
    return LocalizerConfig(top_k=pairs, rerank=rerank, device=device, backend="torch", temporal_window=0,
                           verifier="torch" if chain else "opencv", device_query="on" if chain else "off")


def variants(vpr_map, device: str, rerank: str, pairs: int, compile_too: bool):
    """(name, localizer) for each variant; the compiled one swaps in a compiled backend and a new chain."""
    yield "stages", Localizer(config(device, rerank, pairs, False), vpr_map)
    yield "chain", Localizer(config(device, rerank, pairs, True), vpr_map)
    if compile_too:
        localizer = Localizer(config(device, rerank, pairs, True), vpr_map)
        localizer.backend = TorchBackend(vpr_map.descriptor, device, max_keypoints=vpr_map.local_conf["max_keypoints"],
                                         compile=True)
        localizer.device_query = DeviceQuery(vpr_map, localizer.backend, localizer.reranker, pairs)
        yield "chain+compile", localizer


def chain_stages(chain: DeviceQuery, image: np.ndarray, device: str, repeats: int) -> dict:
    """The chain's parts one by one, eagerly, synchronised after each (medians, ms)."""
    batch = batch_to_uint8([image], chain.backend.input_size)
    size = torch.tensor([image.shape[1], image.shape[0]], dtype=torch.float32, device=chain.device)
    images = chain.backend.upload(batch)
    state = {}

    def describe():
        state["out"] = chain.backend.forward(images)

    def search():
        state["search"] = chain.search.search_tensors(state["out"][0], chain.top_k)

    def slots_and_gather():
        _, kpts, local, scores = state["out"]
        state["query"] = chain.reranker.query_slots(kpts[0], local[0], scores[0], size, chain._input_size)
        state["cand"] = chain.reranker.table.gather(state["search"][1][0, :chain.rerank_k])

    def match():
        state["match"] = chain.reranker._match(state["query"], state["cand"], size)

    def verify():
        index, score = state["match"]
        pts1 = state["cand"]["keypoints"].gather(1, index.clamp_min(0)[..., None].expand(-1, -1, 2))
        pts0 = state["query"]["keypoints"].expand(len(index), -1, -1)
        state["fit"] = chain.reranker.verifier.fit(pts0, pts1, index >= 0, score, size, state["cand"]["image_size"])

    def whole():
        chain._read(chain.chain(images, size))

    out = {}
    with torch.inference_mode():
        for name, fn in (("upload", lambda: chain.backend.upload(batch)), ("descriptor", describe),
                         ("search", search), ("query slots + gather", slots_and_gather), ("match", match),
                         ("verify (batched RANSAC)", verify), ("eager chain + read-back", whole)):
            out[name] = round(statistics.median(clock(fn, device, 3, repeats)), 3)
    return out


def corridor_recall(root: Path, device: str, rerank: str, pairs: int) -> dict:
    """R@1 (global, re-ranked) and verified decisions: the CPU stage pipeline against the chain on `device`."""
    dataset = ImageFolderDataset.load(root)
    frames = FrameTable.build(np.zeros(len(dataset.refs), np.int64), dataset.refs)
    vpr_map = build_map("corridor", frames, load_image_file, "default", local_features="xfeat")
    queries = [read_image(q) for q in dataset.queries]
    answers = {}
    for name, cfg in (("cpu stages", config("cpu", rerank, pairs, False)), (f"{device} chain", config(device, rerank, pairs, True))):
        localizer = Localizer(cfg, vpr_map)
        results = [localizer.process(q, i) for i, q in enumerate(queries)]
        answers[name] = results
        vpr_map.index.to_device("cpu")
    report = {}
    for name, results in answers.items():
        top_global = [r.global_keys[0] for r in results]
        top = [r.places[0].hypothesis.key for r in results]
        report[name] = {"R@1 global": round(float(np.mean([k in dataset.positives[i] for i, k in enumerate(top_global)])), 3),
                        "R@1 re-ranked": round(float(np.mean([k in dataset.positives[i] for i, k in enumerate(top)])), 3)}
    (ref_name, ref), (dev_name, dev) = answers.items()
    same = []
    for a, b in zip(ref, dev):
        verified = {p.hypothesis.key: p.verified for p in b.places if p.verification is not None}
        same += [p.verified == verified[p.hypothesis.key] for p in a.places
                 if p.verification is not None and p.hypothesis.key in verified]
    report["same verified decision"] = round(float(np.mean(same)), 3)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, default=CORRIDOR)
    parser.add_argument("--size", type=int, default=100000)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--rerank", default="xfeat-lighterglue")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--no-recall", action="store_true", help="skip the Corridor recall comparison")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = args.device
    report = {"machine": machine(), "device": device,
              "size": args.size, "pairs": args.pairs, "rerank": args.rerank, "variants": {}}
    print(report["machine"], flush=True)
    refs = [read_image(p) for p in list_images(args.data / "ref")[:40]]
    query = read_image(list_images(args.data / "query")[10])
    descriptor = fitted_descriptor(refs[:30])
    with tempfile.TemporaryDirectory(prefix="vpr_gpu_query_") as folder:
        vpr_map = large_map(descriptor, refs, LocalExtractor("xfeat", 512), args.size, Path(folder))
        for name, localizer in variants(vpr_map, device, args.rerank, args.pairs, not args.no_compile):
            stages: dict[str, list[float]] = {}

            def process():
                result = localizer.process(query, 0)
                for stage, ms in result.timings_ms.items():
                    stages.setdefault(stage, []).append(ms)
                return result

            top = process().places[0]
            entry = {"label": f"{localizer.backend_label}; {type(localizer.reranker.verifier).__name__}",
                     "top1": [top.hypothesis.key, top.verification.inlier_count if top.verification else None],
                     "back_to_back": summary(clock(process, device, args.warmup, args.repeats)),
                     "at_10_hz": summary(clock(process, device, 2, max(10, args.repeats // 3), gap_s=0.1)),
                     "stages_p50": {s: round(statistics.median(v[args.warmup:]), 3) for s, v in stages.items()}}
            if localizer.device_query is not None and name == "chain":
                entry["chain_stages_eager"] = chain_stages(localizer.device_query, query, device, args.repeats)
            report["variants"][name] = entry
            print(name, json.dumps(entry, indent=1), flush=True)
            vpr_map.index.to_device("cpu")
    if not args.no_recall and (args.data / "ground_truth.csv").is_file():
        report["corridor"] = corridor_recall(args.data, device, args.rerank, 5)
        print("corridor", json.dumps(report["corridor"], indent=1), flush=True)
    base = report["variants"]["stages"]["back_to_back"]["p50"]
    for name, entry in report["variants"].items():
        print(f"{name:15} p50 {entry['back_to_back']['p50']:8.2f} ms  p90 {entry['back_to_back']['p90']:8.2f} ms  "
              f"10 Hz p50 {entry['at_10_hz']['p50']:8.2f} ms  speed-up {base / entry['back_to_back']['p50']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
