"""Describing a map's shards on Ray: a Ray Data `map_batches` over the pending shards with an actor pool
of ShardWorkers (one GPU per actor where the cluster has GPUs, else one CPU), each reading images from
and writing its shards to the build's work folder on shared storage. Ray is imported only here, only
when asked for (`vpr_build_map --ray`)."""

import logging
import os
import re

from vpr_ros.core import LOGGER
from vpr_ros.core.build.shards import ShardWorker


def ray_runtime(address: str, cpus: int | None = None):
    """Connect to Ray: "auto" starts a local runtime on this machine (`cpus` CPUs, default all), anything
    else is an existing cluster's address (ray://host:10001, or host:6379 from a cluster node). A runtime
    this process already joined is used as it is."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--ray needs Ray: pip install 'ray[data]' (requirements.txt pins it)") from exc
    if not ray.is_initialized():
        options = {"include_dashboard": False, "logging_level": logging.WARNING}
        if address == "auto":
            ray.init(num_cpus=cpus or os.cpu_count(), **options)
        else:
            ray.init(address=address, **options)
    return ray


def describe_on_ray(folder: str, shards: list[tuple[int, int]], address: str = "auto", workers: int | None = None,
                    batch_size: int = 8, progress: bool = False) -> None:
    """Describe `shards` (start, stop) of the work folder on Ray's workers; raises RuntimeError naming the
    failure when a shard cannot be described (the shards finished before it stay for a resume)."""
    ray = ray_runtime(address)
    import ray.data

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    workers = workers or (gpus or max(1, int(resources.get("CPU", 1))))
    per_actor = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    threads = 1 if not gpus else None  # a CPU actor owns one core: one torch thread
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    if not progress:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    LOGGER.info("describing %d shards on Ray with %d %s workers", len(shards), workers, "GPU" if gpus else "CPU")
    items = [{"start": start, "stop": stop} for start, stop in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
        fn_constructor_kwargs={"folder": str(folder), "batch_size": batch_size,
                               "device": "cuda" if gpus else "cpu", "threads": threads}, **per_actor)
    done, pids = 0, set()
    try:
        for row in dataset.iter_rows():
            done += int(row["frames"])
            pids.add(int(row["pid"]))
            LOGGER.debug("shard at frame %d done (%d frames so far)", row["start"], done)
    except Exception as exc:  # Ray wraps the worker's exception; its message names the image
        raise RuntimeError(f"a Ray worker failed ({done} frames described in this run): {_worker_error(exc)}") from exc
    LOGGER.info("described %d shards (%d frames) in %d Ray worker processes%s", len(shards), done,
                len(pids - {os.getpid()}), " and this one" if os.getpid() in pids else "")


def _worker_error(exc: BaseException) -> str:
    """The worker's own exception ("ValueError: cannot decode image ...") out of Ray's wrapping, which keeps
    it only as the text of the worker's traceback."""
    texts = []
    while exc is not None and len(texts) < 8:
        texts.append(str(exc))
        exc = exc.__cause__ or getattr(exc, "cause", None)
    found = [m for text in texts for m in re.findall(r"^\s*(?:\w+\.)*(\w+(?:Error|Exception)): (.+)$", text, re.M)
             if m[0] not in ("UserCodeException", "RayTaskError")]
    return f"{found[-1][0]}: {found[-1][1]}" if found else texts[-1].strip().splitlines()[0]
