"""Build and install the vpr_ros_interfaces package into a Python virtual environment.

The ROS 2 wheels on PyPI ship ament/rosidl CMake files that name the wheel build container's
Python include and numpy include folders. This script rewrites those two paths to the running
interpreter's, then configures, builds and installs the interface package with plain CMake into
the environment prefix, so that `import vpr_ros_interfaces.msg` works there. It is idempotent:
a stamp holding a hash of the interface sources skips a rebuild when nothing changed.

Run it with the environment's interpreter: `.venv/bin/python scripts/build_interfaces.py`.
"""

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vpr_ros_interfaces"
# Paths of the manylinux build image, e.g. /opt/python/cp311-cp311/include/python3.11
FOREIGN_PY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
FOREIGN_NUMPY_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include")


def source_hash() -> str:
    """Hash of every file of the interface package (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(PACKAGE)).encode())
            digest.update(path.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def fix_wheel_cmake_paths(prefix: Path) -> int:
    """Rewrite the build container's include paths in the wheels' CMake files; return files changed."""
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        fixed = FOREIGN_NUMPY_INCLUDE.sub(np_include, text)
        fixed = FOREIGN_PY_INCLUDE.sub(py_include, fixed)
        if fixed != text:
            path.write_text(fixed, errors="surrogateescape")
            changed += 1
    return changed


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="install prefix (default: the running virtual environment)")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="CMake build folder (default: PREFIX/build/vpr_ros_interfaces)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the stamp matches")
    args = parser.parse_args(argv)

    prefix = args.prefix.resolve()
    if shutil.which("cmake") is None:
        print("error: cmake not found; install it (apt-get install cmake)", file=sys.stderr)
        return 1
    build_dir = (args.build_dir or prefix / "build" / "vpr_ros_interfaces").resolve()
    stamp = prefix / "share" / "vpr_ros_interfaces" / ".vpr_ros_build_stamp"
    wanted = source_hash()
    if not args.force and stamp.is_file() and stamp.read_text().strip() == wanted:
        print("vpr_ros_interfaces is up to date in", prefix)
        return 0

    print(f"fixed CMake paths in {fix_wheel_cmake_paths(prefix)} wheel files")
    # A build folder configured for other sources or another prefix is stale.
    shutil.rmtree(build_dir, ignore_errors=True)
    run(["cmake", "-S", str(PACKAGE), "-B", str(build_dir),
         f"-DCMAKE_PREFIX_PATH={prefix}", f"-DCMAKE_INSTALL_PREFIX={prefix}",
         "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}",
         "-DCMAKE_BUILD_TYPE=Release"])
    run(["cmake", "--build", str(build_dir), "-j2"])
    run(["cmake", "--install", str(build_dir)])
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted + "\n")
    print("installed vpr_ros_interfaces into", prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
