"""vpr_ros.core must never import ROS: checked statically (every import statement) and at run time."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "vpr_ros" / "core"
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "rosidl_parser", "vpr_ros_interfaces", "launch",
               "launch_ros", "ament_index_python", "cv_bridge", "message_filters", "tf2_ros")
MSG_SUFFIXES = ("_msgs", "_srvs", "_interfaces")


def is_ros_module(name: str) -> bool:
    top = name.split(".")[0]
    return (top in ROS_MODULES or name.startswith("vpr_ros.ros") or top.endswith(MSG_SUFFIXES))


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
              and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


ENTRY_POINTS = {"__init__.py", "config.py", "constraints.py", "gate.py", "localizer.py"}
STAGES = ("inputs", "descriptors", "runtime", "maps", "matching", "uncertainty", "evaluation")
# stage -> the stages it must not import (a map or a matcher never needs the evaluation; inputs need nothing)
FORBIDDEN = {"inputs": set(STAGES) - {"inputs"}, "descriptors": {"maps", "matching", "uncertainty", "evaluation"},
             "runtime": {"maps", "matching", "uncertainty", "evaluation"}, "maps": {"evaluation"},
             "matching": {"maps", "uncertainty", "evaluation"}, "uncertainty": {"evaluation"}}


def test_core_is_split_by_stage_with_only_the_entry_points_at_its_top():
    top = {p.name for p in CORE.glob("*.py")}
    assert top == ENTRY_POINTS, f"modules at the top of core/ outside a stage: {sorted(top - ENTRY_POINTS)}"
    packages = {p.parent.name for p in CORE.glob("*/__init__.py")}
    assert packages == set(STAGES), packages
    for stage in STAGES:
        assert ast.get_docstring(ast.parse((CORE / stage / "__init__.py").read_text())), f"core/{stage} says nothing"
    offenders = []
    for stage, forbidden in FORBIDDEN.items():
        for path in sorted((CORE / stage).rglob("*.py")):
            for line, name in imported_names(ast.parse(path.read_text(), str(path))):
                parts = name.split(".")
                if parts[:2] == ["vpr_ros", "core"] and len(parts) > 2 and parts[2] in forbidden | {"localizer"}:
                    offenders.append(f"{path.relative_to(CORE)}:{line}: {name}")
    assert not offenders, "a stage imports a later one:\n" + "\n".join(offenders)


def test_core_sources_import_no_ros():
    files = sorted(CORE.rglob("*.py")) + sorted((CORE.parent / "sim").rglob("*.py"))  # the simulator too
    assert files, f"no sources under {CORE}"
    offenders = [f"{path.relative_to(CORE.parent.parent)}:{line}: {name}"
                 for path in files
                 for line, name in imported_names(ast.parse(path.read_text(), str(path)))
                 if is_ros_module(name)]
    assert not offenders, "vpr_ros.core or vpr_ros.sim imports ROS:\n" + "\n".join(offenders)


def test_importing_core_loads_no_ros_module():
    code = (
        "import importlib, pkgutil, sys\n"
        "import vpr_ros.core as core\n"
        "import vpr_ros.sim as sim\n"
        "for info in [*pkgutil.walk_packages(core.__path__, 'vpr_ros.core.'),\n"
        "             *pkgutil.walk_packages(sim.__path__, 'vpr_ros.sim.')]:\n"
        "    importlib.import_module(info.name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {ROS_MODULES!r}"
        f" or m.split('.')[0].endswith({MSG_SUFFIXES!r}) or m.startswith('vpr_ros.ros'))\n"
        "print('\\n'.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=CORE.parent.parent, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing vpr_ros.core loaded ROS modules: {result.stdout}"
