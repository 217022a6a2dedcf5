"""The core's layout: it never imports ROS (checked statically, every import statement, and at run time),
its rooms stand in one order with no import running back up and no circle, and the files that had grown
past one idea stay small."""

import ast
import subprocess
import sys
from pathlib import Path

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


# the core's rooms, lowest first: a module imports only from its own room or a lower one (core/__init__.py,
# the package logger, from any); docs/development.md says what each holds
ROOMS = ("inputs", "descriptors", "runtime", "matching", "uncertainty", "map", "retrieval", "config", "build",
         "pipeline", "posegraph", "evaluation")
SMALL = {"core/pipeline/localizer.py": 350, "ros/node.py": 350}  # the orchestrators, in lines


def room_of(module: str) -> str | None:
    """vpr_ros.core.<room>[.<module>] -> room; None outside the core or for the core package itself."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["vpr_ros", "core"] and len(parts) > 2 else None


def core_imports() -> dict[str, set[str]]:
    """core module -> the core modules it imports (at any level: a function-level import counts)."""
    graph = {}
    for path in sorted(CORE.rglob("*.py")):
        module = ".".join(path.relative_to(CORE.parent.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {name for _, name in imported_names(ast.parse(path.read_text(), str(path)))
                         if room_of(name) is not None}
    return graph


def test_every_room_is_named_and_said_and_nothing_else_sits_at_the_top():
    top = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    packages = {p.parent.name for p in CORE.glob("*/__init__.py")}
    assert top | packages == set(ROOMS), f"rooms not in the order: {sorted(top | packages ^ set(ROOMS))}"
    for room in packages:
        assert ast.get_docstring(ast.parse((CORE / room / "__init__.py").read_text())), f"core/{room} says nothing"


def test_no_import_runs_back_up_and_no_circle():
    graph = core_imports()
    upward = [f"{module} imports {name}" for module, names in graph.items() for name in sorted(names)
              if room_of(module) and ROOMS.index(room_of(name)) > ROOMS.index(room_of(module))]
    assert not upward, "imports running back up the rooms:\n" + "\n".join(upward)
    known = {name: {n for n in names if n in graph} for name, names in graph.items()}
    done, circles = set(), []

    def visit(module, path):  # depth-first; a module met again on its own path closes a circle
        if module in path:
            circles.append(" -> ".join(path[path.index(module):] + [module]))
            return
        if module in done:
            return
        for name in sorted(known[module]):
            visit(name, path + [module])
        done.add(module)

    for module in sorted(known):
        visit(module, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_orchestrators_stay_small_and_messages_only_read_the_core():
    for relative, limit in SMALL.items():
        lines = len((CORE.parent / relative).read_text().splitlines())
        assert lines <= limit, f"vpr_ros/{relative} has {lines} lines (at most {limit}): give the new idea a module"
    messages = CORE.parent / "ros" / "messages.py"
    computing = [name for _, name in imported_names(ast.parse(messages.read_text()))
                 if room_of(name) is not None and name != "vpr_ros.core.pipeline.results"]
    assert not computing, f"ros/messages.py computes with the core instead of reading its answer: {computing}"


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
