"""Check that the robot install resolves where robots are: a pip dry run of requirements-robot.txt (and of
requirements-nodeps.txt, without their dependencies) for Python 3.10 (Ubuntu 22.04, Humble), 3.11 and 3.12
(Ubuntu 24.04, Jazzy), binary wheels only, for this machine's platform. Environment markers are evaluated
for each target version here (pip would evaluate them for the Python running it). CI runs it
(.ci/run); it needs the package index, nothing is installed.

    .venv/bin/python scripts/check_robot_requirements.py [--python 3.10 3.11 3.12]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
SHOWN = ("torch", "numpy", "pandas", "matplotlib", "faiss-cpu", "opencv-python-headless", "scipy", "evo", "ray")


def for_version(path: Path, version: str) -> list[str]:
    """The requirement lines of `path` that apply on Python `version` (markers evaluated), markers dropped."""
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"python_version": version,
                                                                      "python_full_version": version + ".0"}):
            requirement.marker = None
            lines.append(str(requirement))
    return lines


def dry_run(lines: list[str], version: str, no_deps: bool, tmp: Path) -> dict:
    requirements, report = tmp / f"req-{version}-{no_deps}.txt", tmp / f"report-{version}-{no_deps}.json"
    requirements.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
               "--python-version", version, "--target", str(tmp / "target"), "--quiet", "--report", str(report),
               "-r", str(requirements)] + (["--no-deps"] if no_deps else [])
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"pip exit {run.returncode}")
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", nargs="+", default=["3.10", "3.11", "3.12"])
    args = parser.parse_args(argv)
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for version in args.python:
            try:
                chosen = dry_run(for_version(REPO / "requirements-robot.txt", version), version, False, Path(tmp))
                chosen.update(dry_run(for_version(REPO / "requirements-nodeps.txt", version), version, True, Path(tmp)))
            except RuntimeError as exc:
                print(f"Python {version}: does not resolve: {exc}")
                failed.append(version)
                continue
            shown = ", ".join(f"{name} {chosen[name]}" for name in SHOWN if name in chosen)
            print(f"Python {version}: resolves, {len(chosen)} packages ({shown})")
    if failed:
        print(f"check_robot_requirements: the robot requirements do not resolve for Python {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
