"""vpr_localizer as a managed node: brought up and down through the real lifecycle services
(`<node>/change_state`, `<node>/get_state`), the protocol Nav2's lifecycle_manager speaks, with the node
started as its console script with a params file in its own process."""

import subprocess
import time

import pytest

from conftest import spin_until
from test_node import (MSGS, image_msg, images, listen, map_dir, needs_interfaces,  # noqa: F401 (fixtures)
                       node_process, publish_until)
from test_node_robot import _exited, call, console_script, params_file

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402


class Manager:
    """What a lifecycle manager does: ask for transitions and read the state, through the node's services."""

    def __init__(self, probe, executor, node: str = "/vpr_localizer"):
        self.executor = executor
        self.change = probe.create_client(ChangeState, f"{node}/change_state")
        self.get = probe.create_client(GetState, f"{node}/get_state")
        for client in (self.change, self.get):
            assert spin_until(executor, client.service_is_ready, 60), f"{client.srv_name} is not offered"
        # a client sees the server's request reader before the server sees the client's response reader: a
        # request sent at once may be answered into the void (seen with Jazzy's Fast DDS). get_state is
        # idempotent: ask until it answers; then give change_state's response path the same time.
        for _ in range(10):
            future = self.get.call_async(GetState.Request())
            if spin_until(executor, future.done, 2.0):
                break
        spin_until(executor, lambda: False, 1.0)

    def _call(self, client, request, timeout_s: float = 120):
        future = client.call_async(request)
        assert spin_until(self.executor, future.done, timeout_s), f"{client.srv_name} did not answer"
        return future.result()

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label


def statuses(diags: list) -> list:
    return [s for d in diags for s in d.status if s.name.endswith("vpr_localizer: pipeline")]


def answered_within(executor, pub, msg, received: list, seconds: float) -> bool:
    """Publish `msg` every 0.2 s for `seconds`; whether anything arrived on `received` meanwhile."""
    before, deadline = len(received), time.monotonic() + seconds
    while time.monotonic() < deadline:
        pub.publish(msg)
        spin_until(executor, lambda: len(received) > before, 0.2)
    return len(received) > before


@pytest.mark.slow
@needs_interfaces
def test_managed_node_goes_through_configure_activate_deactivate_and_shutdown(map_dir, images, tmp_path):
    """autostart false: the node waits unconfigured; configure loads the map, activate answers frames,
    deactivate stops processing (said in /diagnostics) and keeps the map, a second activate answers again with
    vpr/load_map working, and the shutdown transition ends the process with exit code 0."""
    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/managed/image", qos_reliability="reliable",
                       autostart=False, diagnostics_period_s=0.2)
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        manager = Manager(probe, executor)
        hyps = listen(probe, MSGS.PlaceHypotheses, "vpr/hypotheses")
        diags = listen(probe, DiagnosticArray, "/diagnostics")
        frame = image_msg(images[1][20], 5 * 10**9)
        pub = probe.create_publisher(type(frame), "/managed/image", 10)
        assert manager.state() == "unconfigured"
        assert pub.get_subscription_count() == 0  # nothing subscribed before activate
        assert spin_until(executor, lambda: any("no map loaded" in s.message for s in statuses(diags)), 10)

        assert manager.transition(Transition.TRANSITION_CONFIGURE) and manager.state() == "inactive"
        assert not answered_within(executor, pub, frame, hyps, 1.0)
        assert manager.transition(Transition.TRANSITION_ACTIVATE) and manager.state() == "active"
        publish_until(probe, executor, "/managed/image", frame, lambda: hyps)
        assert min(abs(h.map_key - 20) for h in hyps[-1].hypotheses[:3]) <= 2

        assert manager.transition(Transition.TRANSITION_DEACTIVATE) and manager.state() == "inactive"
        spin_until(executor, lambda: False, 0.5)  # anything in flight arrives now
        assert not answered_within(executor, pub, frame, hyps, 2.0), "an inactive node processed frames"
        diags.clear()
        assert spin_until(executor, lambda: any("inactive (lifecycle): frames are not processed" in s.message
                                                for s in statuses(diags)), 10)
        assert all(dict((kv.key, kv.value) for kv in s.values)["map_size"] == "40" for s in statuses(diags))

        assert manager.transition(Transition.TRANSITION_ACTIVATE) and manager.state() == "active"
        hyps.clear()
        publish_until(probe, executor, "/managed/image", frame, lambda: hyps)
        reload = call(probe, executor, MSGS.LoadMap, "vpr/load_map", MSGS.LoadMap.Request())
        assert reload.success and reload.map_size == 40, reload.message

        pids = [int(p) for p in subprocess.run(["pgrep", "-f", file], capture_output=True, text=True).stdout.split()]
        assert pids, "the node's process was not found"
        assert manager.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert spin_until(executor, lambda: all(_exited(pid) for pid in pids), 30), "the process did not end"
    assert ended["returncode"] == 0, ended["output"]
    assert "configure failed" not in ended["output"] and "warmed up in" in ended["output"]


@pytest.mark.slow
def test_a_failed_configure_leaves_the_node_unconfigured_with_the_reason(map_dir, tmp_path):
    """A missing map fails configure (the manager is told no; the reason is in the log and /diagnostics at
    ERROR) and the process stays up, unconfigured; configured again once the map is there, it serves; SIGINT
    then ends it with exit code 0. With autostart (the default) the same map fails the start: exit code 2."""
    import shutil

    absent = tmp_path / "later"
    file = params_file(tmp_path, map_path=str(absent), autostart=False, diagnostics_period_s=0.2)
    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        manager = Manager(probe, executor)
        diags = listen(probe, DiagnosticArray, "/diagnostics")
        assert not manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == "unconfigured"
        assert spin_until(executor, lambda: any(s.level == DiagnosticStatus.ERROR and "map.json is missing"
                                                in s.message for s in statuses(diags)), 10), \
            [s.message for s in statuses(diags)][-3:]
        shutil.copytree(map_dir, absent)
        assert manager.transition(Transition.TRANSITION_CONFIGURE) and manager.state() == "inactive"
    assert ended["returncode"] == 0, ended["output"]
    assert "configure failed" in ended["output"] and "map.json is missing" in ended["output"], ended["output"]
    out = subprocess.run([console_script(), "--ros-args", "-p", f"map_path:={tmp_path / 'absent'}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "map.json is missing" in out.stdout + out.stderr, out


@pytest.mark.slow
@needs_interfaces
def test_vpr_ros2_speaks_to_the_node_where_no_ros2_command_exists(map_dir, images, tmp_path):
    """The pip install's stand-in for the docs' `ros2` verbs: lifecycle get/set, service call with a YAML
    request, topic echo --once, each against a node started as its console script; a bad type exits 2."""
    from pathlib import Path
    import sys

    script = str(Path(sys.executable).parent / "vpr_ros2")
    file = params_file(tmp_path, map_path=str(map_dir), image_topic="/cli/image", qos_reliability="reliable",
                       autostart=False)

    def run(*args, timeout=120):
        return subprocess.run([script, *args], capture_output=True, text=True, timeout=timeout)

    with node_process([console_script(), "--ros-args", "--params-file", file]) as (probe, executor, ended):
        Manager(probe, executor)  # up and answering
        got = run("lifecycle", "get", "/vpr_localizer")
        assert got.returncode == 0 and "label: unconfigured" in got.stdout, got.stdout + got.stderr
        for transition in ("configure", "activate"):
            done = run("lifecycle", "set", "/vpr_localizer", transition)
            assert done.returncode == 0 and "success: true" in done.stdout, done.stdout + done.stderr
        echo = subprocess.Popen([script, "topic", "echo", "/vpr/hypotheses", "--once"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        pub = probe.create_publisher(type(image_msg(images[1][20], 1)), "/cli/image", 10)
        deadline = time.monotonic() + 60
        while echo.poll() is None and time.monotonic() < deadline:
            pub.publish(image_msg(images[1][20], 5 * 10**9))
            spin_until(executor, lambda: False, 1.0)
        out, err = echo.communicate(timeout=30)
        assert echo.returncode == 0 and "hypotheses:" in out and "map_key:" in out, out[-500:] + err
        saved = run("service", "call", "/vpr/save_map", "vpr_ros_interfaces/srv/SaveMap",
                    f"{{map_path: {tmp_path / 'copy'}}}")
        assert saved.returncode == 0 and "success: true" in saved.stdout, saved.stdout + saved.stderr
        assert (tmp_path / "copy" / "map.json").is_file()
        bad = run("service", "call", "/vpr/save_map", "no_such_pkg/srv/Nothing")
        assert bad.returncode == 2 and "not installed here" in bad.stderr
        pids = [int(p) for p in subprocess.run(["pgrep", "-f", file], capture_output=True, text=True).stdout.split()]
        done = run("lifecycle", "set", "/vpr_localizer", "shutdown")
        assert done.returncode == 0 and "success: true" in done.stdout, done.stdout + done.stderr
        assert pids and spin_until(executor, lambda: all(_exited(pid) for pid in pids), 30), "the process did not end"
    assert ended["returncode"] == 0, ended["output"]
