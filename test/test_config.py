"""One source of configuration: LocalizerConfig, the node's parameters, config/localize.yaml and the
tools' flags agree, and the config refuses what the node would refuse."""

import dataclasses
import sys
from pathlib import Path

import pytest
import yaml

from vpr_ros.core.config import BACKEND_NAMES, MATCHER_NAMES, LocalizerConfig, settings
from vpr_ros.ros.parameters import NODE_PARAMETERS, PARAMETERS, localizer_config, params_file_text

REPO = Path(__file__).resolve().parents[1]
FIELDS = {f.name: f for f in dataclasses.fields(LocalizerConfig)}


def shipped_params() -> dict:
    return yaml.safe_load((REPO / "config" / "localize.yaml").read_text())["/**/vpr_localizer"]["ros__parameters"]


def test_node_parameters_config_fields_and_shipped_yaml_agree():
    shipped = shipped_params()
    assert set(shipped) == set(PARAMETERS), "config/localize.yaml and the node's parameters differ"
    assert not set(NODE_PARAMETERS) & set(FIELDS), "a pipeline setting is also declared by the node itself"
    for name, f in FIELDS.items():
        default, description, spec = PARAMETERS[name]
        assert (default, description, spec) == (f.default, f.metadata["description"], f.metadata["spec"]), name
        assert shipped[name] == f.default and type(shipped[name]) is type(f.default), name
    # what the node runs from the shipped file is LocalizerConfig()
    assert localizer_config(shipped) == LocalizerConfig()
    assert (REPO / "config" / "localize.yaml").read_text() == params_file_text()


def test_every_field_is_described_and_numeric_ones_have_a_range():
    for name, (default, description, spec) in settings().items():
        assert description.strip(), name
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert spec is not None and spec[0] <= default <= spec[1], name


def test_plugin_names_and_precisions_in_the_config_are_the_stages_own():
    from vpr_ros.core.matching.matchers import MATCHERS
    from vpr_ros.core import config
    from vpr_ros.core.runtime import devices
    from vpr_ros.core.runtime.backends import BACKENDS

    assert MATCHER_NAMES == tuple(MATCHERS)
    assert BACKEND_NAMES == tuple(BACKENDS)
    assert config.PRECISIONS == devices.PRECISIONS


def test_off_values_round_trip_through_the_node_parameters():
    off = LocalizerConfig(rerank="off", skip_margin=-1.0)
    assert off.rerank is None and off.skip_margin is None
    assert localizer_config({**shipped_params(), **off.as_parameters()}) == off
    on = LocalizerConfig(rerank="xfeat-lighterglue", skip_margin=0.05, top_k=7)
    assert localizer_config({**shipped_params(), **on.as_parameters()}) == on


@pytest.mark.parametrize("field, value", [("top_k", 0), ("top_k", 101), ("min_inlier_ratio", 1.5),
                                          ("accept_min_probability", -1.5), ("accept_min_probability", 1.1), ("rerank", "sift"),
                                          ("mode", "mapping"), ("backend", "openvino"), ("precision", "bf16"),
                                          ("max_keypoints", 8), ("temporal_window", -1), ("top_k", "5")])
def test_the_config_refuses_what_the_node_refuses(field, value):
    with pytest.raises(ValueError, match=field):
        LocalizerConfig(**{field: value})


def test_tool_flags_default_to_the_config():
    from vpr_ros.tools.eval import CONFIG_FLAGS, _parser

    args = _parser().parse_args(["--dataset", "x"])
    for name in CONFIG_FLAGS:
        assert getattr(args, name) == FIELDS[name].default, name
    args = _parser().parse_args(["--dataset", "x", "--rerank", "off", "--top-k", "9", "--skip-margin", "0.1"])
    assert (args.rerank, args.top_k, args.skip_margin) == ("off", 9, 0.1)


@pytest.mark.parametrize("config", [LocalizerConfig(), LocalizerConfig(rerank="off", skip_margin=0.05, device="cpu"),
                                    LocalizerConfig(checkpoint="/w/model.pth", accept_min_similarity=0.0)])
def test_a_replay_node_gets_the_config_it_replays(config, tmp_path):
    """vpr_eval --through-node passes the config as -p name:=value, which ROS reads as YAML: every value
    must come back with its type ("off" a string, not a boolean; 0.0 a float; "" a string)."""
    from vpr_ros.ros.replay import node_arguments

    args = node_arguments(tmp_path, config, with_info=False)
    values = {}
    for flag, rule in zip(args[1::2], args[2::2]):
        assert flag == "-p"
        name, _, text = rule.partition(":=")
        values[name] = yaml.safe_load(text)
    for name, value in config.as_parameters().items():
        assert values[name] == value and type(values[name]) is type(PARAMETERS[name][0]), name
    assert localizer_config(values) == config


def test_replayed_nodes_start_as_a_robot_starts_them(tmp_path):
    """vpr_eval --through-node (and so vpr_demo) starts vpr_localizer from its console script with the shipped
    params file, the replay's own settings after it as -p overrides."""
    from vpr_ros.ros.replay import localizer_command, node_arguments, pose_graph_command

    args = node_arguments(tmp_path, LocalizerConfig(), with_info=False)
    command = localizer_command(args)
    assert Path(command[0]).name in ("vpr_localizer", "python", Path(sys.executable).name)
    at = command.index("--params-file")
    assert command[at + 1] == str(REPO / "config" / "localize.yaml") and command[at - 1] == "--ros-args"
    assert command.count("--ros-args") == 1 and command[at + 2:] == args[1:]
    graph = pose_graph_command(["--ros-args", "-p", "a:=1"])
    assert graph[graph.index("--params-file") + 1] == str(REPO / "config" / "pose_graph.yaml") and graph[-2:] == ["-p", "a:=1"]


def test_the_demo_retrains_a_map_calibrated_for_another_matcher(tmp_path):
    import json as json_module

    from vpr_ros.tools.demo import _map_ready

    run = tmp_path / "run.json"
    run.write_text("{}")
    (tmp_path / "map").mkdir()
    (tmp_path / "map" / "map.json").write_text(json_module.dumps({"uncertainty": True, "local_depth": True,
                                                                  "local_features": True}))
    (tmp_path / "map" / "uncertainty.json").write_text(json_module.dumps(
        {"calibrators": {"global": {}, "rerank:xfeat-lighterglue": {}}}))
    assert _map_ready(tmp_path / "map", run, "xfeat-lighterglue") and _map_ready(tmp_path / "map", run, None)
    assert not _map_ready(tmp_path / "map", run, "xfeat-mnn")


def test_launch_readme_names_every_launch_argument():
    """launch/README.md lists every argument localize.launch.py declares (the launch file's own five and the
    parameter overrides), so a user reading it knows what ros2 launch takes."""
    from vpr_ros.ros.launch_args import OVERRIDES

    text = (REPO / "launch" / "README.md").read_text()
    declared = (REPO / "launch" / "localize.launch.py").read_text()
    own = ("params_file", "namespace", "fastdds_shm", "pose_graph", "pose_graph_params_file")
    assert all(f'"{name}"' in declared for name in own)
    assert all(f"`{name}`" in text for name in (*own, *OVERRIDES))


def test_the_demo_help_says_every_step(capsys):
    from vpr_ros.tools import demo

    with pytest.raises(SystemExit) as done:
        demo.main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "localize the third" in out and "6. `vpr_eval --through-node`: lap 3" in out
    assert "playback speed of lap 3" in out
