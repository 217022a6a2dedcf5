"""`vpr_ros2`: the few `ros2` verbs the docs use, for a pip install, where no `ros2` command exists (ros2cli
has no wheels). Same syntax as ros2's for these verbs:

    vpr_ros2 topic echo /vpr/loop_closure [--once] [--count N]
    vpr_ros2 service call /vpr/relocalize std_srvs/srv/Trigger
    vpr_ros2 service call /vpr/save_map vpr_ros_interfaces/srv/SaveMap "{map_path: maps/site, append: true}"
    vpr_ros2 lifecycle get /vpr_localizer
    vpr_ros2 lifecycle set /vpr_localizer configure      # configure, activate, deactivate, cleanup, shutdown

`ros2 launch` has no such stand-in: without launch, start the node's console script with its params file
(`vpr_localizer --ros-args --params-file config/localize.yaml -p map_path:=...`). On a robot with ROS 2
installed, use `ros2` itself.
Exit codes: 0 done, 1 no answer or a failed call, 2 bad arguments.
"""

import argparse
import importlib
import sys
import time

import yaml

WAIT_S = 10.0  # how long to wait for a topic's type or a service to appear
# A client sees a service's request reader before the service sees the client's response reader: a request
# sent the moment the service is "ready" can be answered into the void (seen with Jazzy's Fast DDS). Spin
# this long first; idempotent requests (get_state) are asked again when no answer comes.
SETTLE_S = 1.0


def request(rclpy, node, client, message, timeout_s: float, attempts: int = 1):
    """The service's response, or None and why not (not offered, or no answer in time)."""
    if not client.wait_for_service(timeout_sec=WAIT_S):
        return None, f"service {client.srv_name} is not offered (waited {WAIT_S:g} s)"
    settle = time.monotonic() + SETTLE_S
    while time.monotonic() < settle:
        rclpy.spin_once(node, timeout_sec=0.05)
    for _ in range(attempts):
        future = client.call_async(message)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout_s)
        if future.done():
            return future.result(), ""
    return None, f"{client.srv_name} did not answer within {timeout_s:g} s"


def message_type(name: str):
    """pkg/msg/Name, pkg/srv/Name (or pkg/Name for a message) -> the Python class; ValueError otherwise."""
    parts = name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] not in ("msg", "srv"):
        raise ValueError(f"{name!r} is not a type name like std_msgs/msg/String or std_srvs/srv/Trigger")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"type {name} is not installed here: {exc}") from exc


def to_plain(msg):
    """A message as plain Python (dicts, lists, numbers, strings) for YAML."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {field: to_plain(getattr(msg, field)) for field in msg.get_fields_and_field_types()}
    if isinstance(msg, (bytes, bytearray)):
        return list(msg)
    if hasattr(msg, "tolist"):
        return msg.tolist()
    if isinstance(msg, (list, tuple)):
        return [to_plain(v) for v in msg]
    return msg


def fill(msg, values: dict):
    """Set a message's fields from a dict (nested messages from nested dicts); ValueError on an unknown field."""
    fields = msg.get_fields_and_field_types()
    for key, value in (values or {}).items():
        if key not in fields:
            raise ValueError(f"{type(msg).__name__} has no field {key!r}; it has {sorted(fields)}")
        current = getattr(msg, key)
        if hasattr(current, "get_fields_and_field_types") and isinstance(value, dict):
            fill(current, value)
        else:
            setattr(msg, key, value)
    return msg


def _node():
    import rclpy

    rclpy.init()
    return rclpy, rclpy.create_node(f"vpr_ros2_{int(time.time() * 1000) % 10**9}")


def echo(topic: str, count: int | None) -> int:
    rclpy, node = _node()
    try:
        deadline = time.monotonic() + WAIT_S
        kind = None
        while kind is None and time.monotonic() < deadline:
            kind = next((types[0] for name, types in node.get_topic_names_and_types() if name == topic), None)
            rclpy.spin_once(node, timeout_sec=0.1)
        if kind is None:
            print(f"vpr_ros2: no publisher of {topic} seen within {WAIT_S:g} s", file=sys.stderr)
            return 1
        received = []
        node.create_subscription(message_type(kind), topic, lambda m: (
            received.append(1), print(yaml.safe_dump(to_plain(m), sort_keys=False) + "---", flush=True)), 10)
        while count is None or len(received) < count:
            rclpy.spin_once(node, timeout_sec=0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def call(service: str, type_name: str, request_yaml: str, timeout_s: float) -> int:
    """Call a service once (it may not be idempotent) and print the response as YAML."""
    kind = message_type(type_name)
    message = fill(kind.Request(), yaml.safe_load(request_yaml) if request_yaml else {})
    rclpy, node = _node()
    try:
        response, why = request(rclpy, node, node.create_client(kind, service), message, timeout_s)
        if response is None:
            print(f"vpr_ros2: {why}", file=sys.stderr)
            return 1
        print(yaml.safe_dump(to_plain(response), sort_keys=False), end="")
        return 1 if getattr(response, "success", True) is False else 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


TRANSITIONS = ("configure", "activate", "deactivate", "cleanup", "shutdown")


TARGETS = {"configure": "inactive", "activate": "active", "deactivate": "inactive", "cleanup": "unconfigured",
           "shutdown": "finalized"}


def lifecycle(node_name: str, transition: str | None) -> int:
    """Get a managed node's state, or ask for a transition (shutdown: from whatever state it is in). One
    process, both clients made first; get_state (idempotent, asked again when unanswered) is the handshake
    before change_state is sent once. When change_state's answer is lost on the way back, get_state says
    whether the transition happened (a node that shut down is gone)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    node_name = "/" + node_name.strip("/")
    rclpy, node = _node()
    try:
        get = node.create_client(GetState, f"{node_name}/get_state")
        change = node.create_client(ChangeState, f"{node_name}/change_state")
        state, why = request(rclpy, node, get, GetState.Request(), 3.0, attempts=3)
        if state is None:
            print(f"vpr_ros2: {why}", file=sys.stderr)
            return 1
        label = state.current_state.label
        if transition is None:
            print(yaml.safe_dump(to_plain(state), sort_keys=False), end="")
            return 0
        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": {"unconfigured": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
                            "inactive": Transition.TRANSITION_INACTIVE_SHUTDOWN,
                            "active": Transition.TRANSITION_ACTIVE_SHUTDOWN}.get(label)}
        if ids[transition] is None:
            print(f"vpr_ros2: {node_name} is {label}: no shutdown transition from there", file=sys.stderr)
            return 1
        answer, _ = request(rclpy, node, change, ChangeState.Request(transition=Transition(id=ids[transition])),
                            60.0)
        if answer is None:  # lost on the way back, or still running: what state is the node in now?
            after, _ = request(rclpy, node, get, GetState.Request(), 3.0, attempts=3)
            now = after.current_state.label if after is not None else "finalized (gone)"
            success = now.startswith(TARGETS[transition])
            print(f"success: {str(success).lower()}  # no answer from change_state; {node_name} is now {now}")
            return 0 if success else 1
        print(yaml.safe_dump(to_plain(answer), sort_keys=False), end="")
        return 0 if answer.success else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_ros2", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    topic = verbs.add_parser("topic").add_subparsers(dest="action", required=True).add_parser("echo")
    topic.add_argument("topic")
    topic.add_argument("--once", action="store_true")
    topic.add_argument("--count", type=int)
    service = verbs.add_parser("service").add_subparsers(dest="action", required=True).add_parser("call")
    service.add_argument("service")
    service.add_argument("type")
    service.add_argument("request", nargs="?", default="")
    service.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    life = verbs.add_parser("lifecycle").add_subparsers(dest="action", required=True)
    life.add_parser("get").add_argument("node")
    setter = life.add_parser("set")
    setter.add_argument("node")
    setter.add_argument("transition", choices=TRANSITIONS)
    args = parser.parse_args(argv)
    try:
        if args.verb == "topic":
            return echo(args.topic, 1 if args.once else args.count)
        if args.verb == "service":
            return call(args.service, args.type, args.request, args.timeout)
        return lifecycle(args.node, args.transition if args.action == "set" else None)
    except (ValueError, yaml.YAMLError) as exc:
        print(f"vpr_ros2: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
