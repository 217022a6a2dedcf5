"""Make the main environment's non-ROS packages importable from a second (ROS distro) environment.

CI proves the node on ROS 2 Jazzy as well as Kilted without installing torch and the rest twice
(several GB): the Jazzy environment gets its own ROS wheels, and this script links every top-level
entry of the main environment's site-packages that belongs to a distribution which is neither a ROS
wheel (`ros-*`) nor vpr_ros itself and that the target does not already have. Nothing of the main
environment's ROS (Kilted) is reachable from the target, so an import of a ROS module there is Jazzy's
or fails.

Run it with the target environment's interpreter:
    .venv-jazzy/bin/python scripts/link_site_packages.py --source .venv
"""

import argparse
import importlib.metadata
import sys
import sysconfig
from pathlib import Path

OWN = {"vpr-ros"}


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise SystemExit(f"error: expected one site-packages folder in {venv}, found {found}")
    return found[0]


def top_level_entries(dist: importlib.metadata.Distribution) -> set[str]:
    entries = set()  # RECORD lists the .dist-info folder's files too
    for file in dist.files or []:
        first = Path(file).parts[0]
        if first not in ("..", "__pycache__"):
            entries.add(first)
    return entries


def _dist_info(dist: importlib.metadata.Distribution) -> str:
    """The name of the distribution's .dist-info folder, from its RECORD."""
    for file in dist.files or []:
        if file.name == "RECORD":
            return file.parts[0]
    return ""


def normalised(dist: importlib.metadata.Distribution) -> str:
    return dist.metadata["Name"].lower().replace("_", "-")


def is_ros(name: str) -> bool:
    return name.startswith("ros-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the main virtual environment")
    args = parser.parse_args(argv)
    source = site_packages(args.source.resolve())
    target = Path(sysconfig.get_paths()["purelib"])
    if source == target:
        raise SystemExit("error: run this with the second environment's interpreter")
    for entry in target.iterdir():  # links of an earlier run whose package the main environment no longer has
        if entry.is_symlink() and not entry.exists():
            entry.unlink()
    # the target's own installs (not the links of an earlier run)
    present = {normalised(d) for d in importlib.metadata.distributions(path=[str(target)])
               if not Path(str(d.locate_file(""))).joinpath(_dist_info(d)).is_symlink()}
    wanted: list[set[str]] = []
    excluded: set[str] = set()
    kept = 0
    for dist in importlib.metadata.distributions(path=[str(source)]):
        name = normalised(dist)
        if is_ros(name) or name in OWN:
            excluded |= top_level_entries(dist)
        elif name in present:
            kept += 1  # the target's own install wins (numpy, PyYAML, ... that ROS wheels pulled in)
        else:
            wanted.append(top_level_entries(dist))
    linked = 0
    for entries in wanted:
        for entry in sorted(entries - excluded):  # an entry a ROS wheel owns is never shared
            src, dst = source / entry, target / entry
            if src.exists() and not (dst.exists() or dst.is_symlink()):
                dst.symlink_to(src, target_is_directory=src.is_dir())
                linked += 1
    print(f"linked {linked} entries of {source} into {target} ({kept} distributions the target "
          f"already has, {len(excluded)} ROS or vpr_ros entries left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
