"""The code runs on Python 3.10 (Humble's Python) and newer: checked with vermin, a tool that knows
which syntax and standard-library names each Python version has, over every Python file we ship or
run."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = ["vpr_ros", "test", "benchmarks", "scripts", "launch", "setup.py"]


def vermin(*paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "vermin"), "--target=3.10-", "--violations", "--no-tips",
                           "--eval-annotations", *paths], cwd=REPO, capture_output=True, text=True)


def test_every_python_file_runs_on_python_3_10():
    out = vermin(*CHECKED)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_check_catches_python_3_11_names(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import tomllib\nfrom typing import Self\n")
    out = vermin(str(probe))
    assert out.returncode != 0 and "tomllib" in out.stdout and "typing.Self" in out.stdout
