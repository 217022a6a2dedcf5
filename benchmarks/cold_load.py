"""Opening a large map with its files out of the page cache (a robot's first start after boot) and with them in it,
in one run, and its first queries after each.

    .venv/bin/python benchmarks/cold_load.py /tmp/city/c1m/map --runs 3 --queries 50

Before each cold run every file of the map is dropped from the page cache with posix_fadvise(DONTNEED), which
needs no privileges and works for files nobody is writing. Then a fresh process imports vpr_ros, times
VPRMap.load (the shipped default: checksums in the background for maps over 256 MiB; --checksums off: none),
and searches `--queries` vectors one at a time at `--rate` per second (a camera's): map frames' own descriptors
plus noise, drawn before the drop. Each line gives the load time, the first query, the p50 of the rest, the
slowest query in each second after the load, and the process's major page faults (reads that went to the disk). A warm
run follows each cold one. The storage below the virtual disk may have its own cache; the major faults say what
the guest read from it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
import numpy as np
t0 = time.perf_counter()
from vpr_ros.core.map.store import VPRMap
t1 = time.perf_counter()
faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
m = VPRMap.load(sys.argv[1], verify_checksums={"auto": "auto", "off": False}[sys.argv[3]])
t2 = time.perf_counter()
faults_load = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults0
ms, at = [], []
period = 1.0 / float(sys.argv[4])
for i, q in enumerate(np.load(sys.argv[2])):
    time.sleep(max(0.0, t2 + i * period - time.perf_counter()))  # a camera's rate
    s = time.perf_counter()
    m.index.search(q[None], 10)
    ms.append((time.perf_counter() - s) * 1e3)
    at.append(s - t2)
seconds = {f"max_ms_{int(t)}s": round(max(v for v, a in zip(ms, at) if int(a) == int(t)), 1) for t in sorted(set(map(int, at)))}
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_query_ms": ms[0],
                  "rest_p50_ms": float(np.percentile(ms[1:], 50)), "rest_max_ms": max(ms[1:]), **seconds,
                  "major_faults_load": faults_load,
                  "major_faults_queries": resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults0 - faults_load}))
"""


def drop_from_page_cache(folder: Path) -> int:
    """posix_fadvise(DONTNEED) on every file of `folder`; returns the bytes dropped."""
    total = 0
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            total += path.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("map", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0, help="queries per second from the end of the load")
    parser.add_argument("--checksums", choices=("auto", "off"), default="auto",
                        help="auto: the shipped default (in the background for large maps); off: not verified, to see "
                             "what the background reading costs the first queries")
    args = parser.parse_args()
    descriptors = np.load(args.map / "descriptors.npy", mmap_mode="r")
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(descriptors), args.queries, replace=False))
    queries = np.asarray(descriptors[rows], np.float32) + rng.normal(0, 0.03, (args.queries, descriptors.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    del descriptors
    with tempfile.TemporaryDirectory() as tmp:
        qpath = Path(tmp) / "queries.npy"
        np.save(qpath, queries)
        for run in range(args.runs):
            for state in ("cold", "warm"):
                if state == "cold":
                    dropped = drop_from_page_cache(args.map)
                done = subprocess.run([sys.executable, "-c", CHILD, str(args.map), str(qpath), args.checksums,
                                       str(args.rate)],
                                      capture_output=True,
                                      text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(json.dumps({"run": run, "state": state, "map_bytes_dropped": dropped if state == "cold" else 0,
                                  **{k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}}))


if __name__ == "__main__":
    main()
