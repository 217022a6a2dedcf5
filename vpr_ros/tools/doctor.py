"""`vpr_doctor`: check that this machine can run vpr_ros, and say what it will run on.

Checks every required part (ROS 2 client library and middleware, the vpr_ros_interfaces messages,
torch, faiss, OpenCV, rosbags, ONNX Runtime, the shipped weights), runs one message through a real
rclpy graph on loopback, and reports the optional accelerators (CUDA, faiss GPU, TensorRT).
Exit status 0 when every required part works, 1 otherwise.
"""

import argparse
import importlib
import importlib.metadata
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    status: str
    detail: str


def _version(module_name: str, dist_name: str | None = None) -> str:
    """Import `module_name` and return its version (from the distribution metadata when given)."""
    module = importlib.import_module(module_name)
    if dist_name:
        return importlib.metadata.version(dist_name)
    return str(getattr(module, "__version__", "installed"))


def check_python() -> str:
    if sys.version_info < (3, 10):
        raise RuntimeError(f"Python {sys.version.split()[0]} is too old; vpr_ros needs 3.10+")
    return sys.version.split()[0]


def check_rclpy() -> str:
    import rclpy

    return f"rmw {rclpy.get_rmw_implementation_identifier()}"


def check_interfaces() -> str:
    from vpr_ros.ros.interfaces import MESSAGES, SERVICES, load_interfaces

    if load_interfaces() is None:
        raise RuntimeError("vpr_ros_interfaces is not built (scripts/build_interfaces.py or colcon)")
    return ", ".join(MESSAGES + SERVICES)


def check_graph(timeout_s: float = 10.0) -> str:
    """Publish a PlaceHypotheses and receive it through the middleware, on loopback only."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from vpr_ros_interfaces.msg import PlaceHypotheses

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"vpr_doctor_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = []
    try:
        topic = f"vpr_doctor_{os.getpid()}/hypotheses"
        node.create_subscription(PlaceHypotheses, topic, received.append, 10)
        pub = node.create_publisher(PlaceHypotheses, topic, 10)
        start = time.monotonic()
        while not received and time.monotonic() - start < timeout_s:
            pub.publish(PlaceHypotheses(query_id=7))
            executor.spin_once(timeout_sec=0.05)
        if not received or received[0].query_id != 7:
            raise RuntimeError(f"no message came back through the graph in {timeout_s:.0f} s")
        return f"round trip in {(time.monotonic() - start) * 1e3:.0f} ms (domain {os.environ['ROS_DOMAIN_ID']})"
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def check_torch() -> str:
    import torch
    import torchvision
    from torchvision.ops import deform_conv2d  # noqa: F401  (ALIKED needs it)

    return f"torch {torch.__version__}, torchvision {torchvision.__version__}"


def check_cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise LookupError("no CUDA device: descriptors and matching run on the CPU")
    return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"


def check_faiss() -> str:
    import faiss
    import numpy as np

    index = faiss.IndexFlatIP(8)
    data = np.eye(8, dtype=np.float32)
    index.add(data)
    _, ids = index.search(data[3:4], 1)
    if int(ids[0, 0]) != 3:
        raise RuntimeError("faiss returned a wrong nearest neighbour")
    return f"faiss {faiss.__version__}"


def check_faiss_gpu() -> str:
    import faiss

    count = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if count == 0:
        raise LookupError("faiss without GPU support (optional: faiss-gpu)")
    return f"{count} GPU(s)"


def check_onnxruntime() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}, providers {', '.join(onnxruntime.get_available_providers())}"


def check_tensorrt() -> str:
    try:
        import tensorrt
    except ImportError as exc:
        raise LookupError("TensorRT not installed (optional: pip install tensorrt on a GPU machine)") from exc
    return f"tensorrt {tensorrt.__version__}"


def check_weights() -> str:
    from vpr_ros.core.descriptors.weights import SHIPPED, weights_path

    sizes = {name: weights_path(name).stat().st_size for name in SHIPPED}
    return f"{len(sizes)} files, {sum(sizes.values()) / 2**20:.0f} MiB"


REQUIRED: dict[str, Callable[[], str]] = {
    "python": check_python,
    "rclpy": check_rclpy,
    "vpr_ros_interfaces": check_interfaces,
    "ros graph": check_graph,
    "torch": check_torch,
    "faiss": check_faiss,
    "opencv": lambda: f"opencv {_version('cv2')}",
    "rosbags": lambda: f"rosbags {_version('rosbags', 'rosbags')}",
    "onnx": lambda: f"onnx {_version('onnx')}",
    "onnxruntime": check_onnxruntime,
    "kornia": lambda: f"kornia {_version('kornia')}",
    "weights": check_weights,
}
OPTIONAL: dict[str, Callable[[], str]] = {
    "cuda": check_cuda,
    "faiss gpu": check_faiss_gpu,
    "tensorrt": check_tensorrt,
}


def run_checks(skip: set[str] = frozenset()) -> list[Check]:
    """Run every check not in `skip`; a required failure is FAIL, an optional one a warning."""
    results = []
    for table, bad in ((REQUIRED, FAIL), (OPTIONAL, WARN)):
        for name, check in table.items():
            if name in skip:
                continue
            try:
                results.append(Check(name, OK, check()))
            except Exception as exc:  # a check's failure is its result
                results.append(Check(name, bad, f"{type(exc).__name__}: {exc}"))
    return results


def isolate_ros_graph() -> None:
    """Keep the doctor's own participants off the robot's network: loopback and a private domain."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))


def print_report(results: list[Check]) -> None:
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"  {r.status:4}  {r.name:{width}}  {r.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--skip", action="append", default=[], choices=list(REQUIRED) + list(OPTIONAL),
                        help="skip a check (repeatable)")
    args = parser.parse_args(argv)
    isolate_ros_graph()
    results = run_checks(set(args.skip))
    print("vpr_ros environment:")
    print_report(results)
    failed = [r.name for r in results if r.status == FAIL]
    if failed:
        print(f"required parts failing: {', '.join(failed)}. Run `make setup` (or scripts/setup_env.sh).")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
