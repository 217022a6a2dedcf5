"""`vpr_localizer`'s process: the console script and `python -m vpr_ros.ros.main`.

The ROS callbacks run on an executor thread, the node's one processing loop on the main thread.
Exit codes: 0 after a requested shutdown (SIGINT, SIGTERM, the lifecycle shutdown transition), 2 on a
bad configuration (with autostart, the default: a map that fails configure too), 1 when an internal
failure stopped the node. With autostart false the node waits unconfigured for a lifecycle manager
(docs/nav2.md).

    vpr_localizer --ros-args --params-file config/localize.yaml -p map_path:=maps/office
    vpr_localizer --ros-args --params-file config/localize.yaml -p autostart:=false   # for a lifecycle manager
    vpr_localizer --help      # this text and every parameter with its default
"""

import faulthandler
import signal
import threading

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from vpr_ros.core.map.store import MapError
from vpr_ros.ros.node import LocalizerNode
from vpr_ros.ros.parameters import help_text, params_file_text, wants_help

SPIN_PERIOD_S = 0.2  # the executor thread looks at its stop flag at least this often


def main(args: list[str] | None = None) -> int:
    """The console script: 0 after a requested shutdown (SIGINT, SIGTERM), 2 on a bad configuration,
    1 when an internal failure stopped the node."""
    faulthandler.enable()  # a crash in a native library prints every thread's Python stack to stderr
    if wants_help(args):
        print(help_text(__doc__, "config/localize.yaml", params_file_text()), flush=True)
        return 0
    try:
        rclpy.init(args=args)
    except Exception as exc:  # e.g. a malformed --ros-args rule; rcl says which
        print(f"vpr_localizer: error: {exc}", flush=True)
        return 2
    node = None
    try:
        node = LocalizerNode(start_worker=False)
    except (ValueError, MapError, FileNotFoundError, ParameterException) as exc:
        print(f"vpr_localizer: error: {exc}", flush=True)
        _cleanup(node)
        return 2
    except Exception as exc:
        print(f"vpr_localizer: error: failed to start: {type(exc).__name__}: {exc}", flush=True)
        _cleanup(node)
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    if hasattr(signal, "SIGUSR1"):  # verify the map's files read from disk now (map_recheck_s: on a schedule)
        signal.signal(signal.SIGUSR1, lambda *_: node.recheck_map())
    failure: list[BaseException] = []
    stop = threading.Event()

    def spin() -> None:
        try:  # spin_once with a timeout, so that this thread ends by itself before the executor is shut down
            while not stop.is_set() and node.context.ok():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception as exc:  # the executor itself failed: nothing can be received any more
            if not node.context.ok():  # SIGINT shut the context down while the executor built its wait set
                return
            failure.append(exc)
            node.get_logger().fatal(f"the executor stopped: {type(exc).__name__}: {exc}")
        finally:
            node.stop_worker()  # shutdown (SIGINT/SIGTERM through rclpy's handler) ends the processing loop

    # the ROS callbacks on a background thread, the one processing loop on the main thread
    spinner = threading.Thread(target=spin, name="vpr_executor", daemon=True)
    spinner.start()
    try:
        node.run_worker()
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        failure.append(exc)
        node.get_logger().fatal(f"the processing loop stopped: {type(exc).__name__}: {exc}")
    finally:
        # the executor thread ends first, then the executor and the node go: Executor.shutdown() called while
        # another thread waits in it destroys its guard condition under that wait (a segmentation fault, seen
        # once in CI), so nothing is destroyed while the thread can still wait or run a callback
        stop.set()
        spinner.join(timeout=30.0)
        if spinner.is_alive():
            failure.append(RuntimeError("executor thread did not stop"))
            node.get_logger().fatal("the executor thread did not stop within 30 s; exiting without destroying the node")
            rclpy.try_shutdown()
        else:
            executor.shutdown(timeout_sec=0.0)
            _cleanup(node)
    return 1 if failure else 0


def _cleanup(node) -> None:
    if node is not None:
        try:
            node.destroy_node()
        except Exception:  # noqa: BLE001: shutting down anyway
            pass
    rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
