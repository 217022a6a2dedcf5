"""Gathering a large map's local features from its build shards: into memory or into memory-mapped files in the
work folder (what vpr_build_map does), then saving them as the map's local_*.npy, in one run.

    .venv/bin/python benchmarks/local_gather.py --frames 60000 --keypoints 512 --dim 64

Writes `--frames` frames of random local features (XFeat's layout: float32 keypoints, float16 descriptors and
scores) as shards of 256 in a work folder and keeps every other frame as a keyframe. Runs each way in a fresh
process, twice (and once the way vpr_build_map gathered them before: every shard read and joined in memory).
Prints the peak of each run's anonymous memory (RssAnon, sampled every 20 ms; the page cache of memory-mapped
files is not counted: the kernel can drop it) and the seconds to gather and to save. Every way must save
identical files.
"""

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def run_one(work: Path, out: Path, on_disk: bool, plan: dict, previous: bool = False) -> dict:
    """In this process: gather the keyframes' local features and save them as a map does."""
    from vpr_ros.core.maps.map_builder import _gather_local
    from vpr_ros.core.maps.shards import ShardStore
    from vpr_ros.core.matching.local_features import LocalFeatureTable

    class Extractor:  # the two numbers _gather_local reads from an extractor
        max_keypoints, dim = plan["keypoints"], plan["dim"]

    peak, done = [rss_anon_kb()], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak.append(rss_anon_kb())

    thread = threading.Thread(target=sample, daemon=True)
    base = rss_anon_kb()
    thread.start()
    store = ShardStore(work, plan["store"])
    rows = np.arange(0, plan["frames"], 2)
    t0 = time.perf_counter()
    if previous:  # what vpr_build_map did before: every shard read, joined, then the keyframes picked
        shards = [store.read(start, stop) for start, stop in store.shards]
        table = LocalFeatureTable(**{c: np.concatenate([shard[f"local_{c}"] for shard in shards])
                                     for c in LocalFeatureTable.COLUMNS}).select(rows)
    else:
        table = _gather_local(store, rows, Extractor, work / "local" if on_disk else None)
    t1 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for column in LocalFeatureTable.COLUMNS:  # as VPRMap.save writes them
        np.save(out / f"local_{column}.npy", np.ascontiguousarray(getattr(table, column)), allow_pickle=False)
    t2 = time.perf_counter()
    done.set()
    thread.join()
    return {"gather_s": t1 - t0, "save_s": t2 - t1, "peak_anon_mb": (max(peak) - base) / 1024}


def write_shards(work: Path, frames: int, keypoints: int, dim: int) -> dict:
    from vpr_ros.core.maps.shards import ShardStore

    plan = {"frames": frames, "shard_frames": 256, "benchmark": "local_gather"}
    store = ShardStore(work, plan, [f"synthetic/{i}" for i in range(frames)])
    rng = np.random.default_rng(0)
    for start, stop in store.shards:
        n = stop - start
        store.write(start, stop, {
            "descriptors": np.zeros((n, 8), np.float32),
            "local_keypoints": rng.uniform(0, 640, (n, keypoints, 2)).astype(np.float32),
            "local_descriptors": rng.standard_normal((n, keypoints, dim)).astype(np.float16),
            "local_scores": rng.uniform(0, 1, (n, keypoints)).astype(np.float16),
            "local_counts": np.full(n, keypoints, np.int32),
            "local_image_size": np.tile(np.array([640, 480], np.int32), (n, 1))})
    return plan


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.glob("local_*.npy")):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40_000)
    parser.add_argument("--keypoints", type=int, default=512)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--tmp", type=Path, default=None, help="where the shards go (default: the system's temp)")
    parser.add_argument("--child", nargs=3, metavar=("WORK", "OUT", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        work, out, mode = args.child
        print(json.dumps(run_one(Path(work), Path(out), mode == "disk", json.loads(args.plan), mode == "before")))
        return
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        work = Path(tmp) / "work"
        t0 = time.perf_counter()
        store_plan = write_shards(work, args.frames, args.keypoints, args.dim)
        size = sum(p.stat().st_size for p in work.glob("shard_*.npz")) / 1e9
        print(f"{args.frames} frames of {args.keypoints} keypoints x {args.dim}: shards {size:.2f} GB written in "
              f"{time.perf_counter() - t0:.0f} s; keyframes: every other frame")
        plan = {"store": store_plan, "frames": args.frames, "keypoints": args.keypoints, "dim": args.dim}
        results, digests = {}, {}
        for mode in ("before", "memory", "disk", "memory", "disk"):
            out = Path(tmp) / f"out_{mode}"
            done = subprocess.run([sys.executable, __file__, "--child", str(work), str(out), mode,
                                   "--plan", json.dumps(plan)], capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.setdefault(mode, []).append(result)
            digests[mode] = digest(out)
            print(f"{mode:>6}: gather {result['gather_s']:.1f} s, save {result['save_s']:.1f} s, "
                  f"peak anonymous memory {result['peak_anon_mb']:.0f} MB")
            for path in out.glob("*.npy"):
                path.unlink()
        assert len(set(digests.values())) == 1, "the ways saved different files"
        kept = sum(p.stat().st_size for p in (work / "local").glob("*.npy")) / 1e9
        before = results["before"][0]["peak_anon_mb"]
        memory = min(r["peak_anon_mb"] for r in results["memory"])
        disk = max(r["peak_anon_mb"] for r in results["disk"])
        print(f"keyframes' local features: {kept:.2f} GB; identical files saved; peak anonymous memory "
              f"before / memory / disk: {before:.0f} / {memory:.0f} / {disk:.0f} MB (before/disk x{before / max(disk, 1):.0f})")


if __name__ == "__main__":
    main()
