"""What the benchmarks share: where the data is, a map of the Corridor references, timing with warm-up and
device synchronisation, and a line naming the machine. (The node benchmarks' own parts are in
node_harness.py.) Every benchmark runs on tiny inputs in the slow tests (test/test_benchmarks.py), so
that one that no longer runs is noticed."""

import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VPR_ROS_DATA", REPO.parent / "shared" / "data"))
CORRIDOR = DATA / "corridor"


def corridor_available(root: Path = CORRIDOR) -> bool:
    """True when the Corridor images and their ground truth are there; otherwise says that the benchmark is
    skipped."""
    if (root / "ground_truth.csv").is_file():
        return True
    print(f"skipped: {root} not found")
    return False


def corridor_map(root: Path = CORRIDOR, local_features: str = "xfeat"):
    """A map (map.store.VPRMap, in memory) of the Corridor references, keyed in file order, one per second."""
    from vpr_ros.core.build.map_builder import build_map
    from vpr_ros.core.build.sources import load_image_file
    from vpr_ros.core.inputs.images import list_images
    from vpr_ros.core.map.frames import FrameTable

    refs = list_images(root / "ref")
    frames = FrameTable.build(np.arange(1, len(refs) + 1) * 10**9, refs)
    return build_map("corridor", frames, load_image_file, local_features=local_features)


def clock(fn, device: str = "cpu", warmup: int = 0, repeats: int = 1, gap_s: float = 0.0) -> list[float]:
    """Milliseconds of each of `repeats` runs of fn() after `warmup` ones, the device synchronised around each;
    with gap_s, the machine idles that long before each run, as between the frames of a camera."""
    from vpr_ros.core.runtime.devices import synchronize

    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        time.sleep(gap_s)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def machine() -> str:
    """e.g. "x86_64, 2 CPUs, 2 torch threads, torch 2.14.1" (and the GPU when there is one)."""
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} CPUs, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}{gpu}")
