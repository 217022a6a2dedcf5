"""Read a published model's checkpoint file safely and load it strictly, with errors that say why not.

Formats: safetensors (MegaLoc's release), or a torch file read with `weights_only=True` (never
unpickling code): a plain state dict, or one wrapped under `state_dict` / `model_state_dict` /
`model` (Lightning and training-script checkpoints). A `module.` prefix from DataParallel is
removed. Layouts that an author changed between releases are renamed to the current one
(`RENAMES`); anything else that does not fit raises CheckpointError naming the missing,
unexpected and mis-shaped keys, and the presets the file does fit, when any.
"""

import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from vpr_ros.core import LOGGER

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
LISTED_KEYS = 8  # how many keys an error message names per kind


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the architecture."""


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    return path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, on the CPU, unwrapped and without a `module.` prefix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (vpr_ros never downloads weights)")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = [line.strip() for line in str(exc).splitlines() if "unsupported global" in line.lower()]
            if not found:  # not a refused object: a corrupt or foreign file
                raise CheckpointError(f"checkpoint {path} is not a readable torch file: {str(exc).splitlines()[-1]}"
                                      ) from exc
            raise CheckpointError(
                f"checkpoint {path} holds Python objects besides tensors ({found[0]}), and vpr_ros reads weights with "
                "weights_only=True and never unpickles code. Save the weights alone where the model was trained "
                "(torch.save(model.state_dict(), 'weights.pth')), or as safetensors") from exc
        except (RuntimeError, EOFError, OSError) as exc:
            raise CheckpointError(f"checkpoint {path} is not a readable torch file: {exc}") from exc
    for _ in range(2):  # Lightning: {"state_dict": {...}}; some scripts nest once more
        if isinstance(state, dict):
            inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is not None and not all(isinstance(v, torch.Tensor) for v in state.values()):
                state = inner
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors "
                              f"(found a {type(state).__name__} of {len(state) if hasattr(state, '__len__') else '?'} items)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _megaloc_first_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MegaLoc v1.0 (`megaloc.torch`) held DINOv2 as `backbone.model.*`, mask token included."""
    if not any(k.startswith("backbone.model.") for k in state):
        return state
    return {k.replace("backbone.model.", "backbone.", 1): v for k, v in state.items()
            if k != "backbone.model.mask_token"}


RENAMES: dict[str, Callable[[dict], dict]] = {"megaloc": _megaloc_first_release}


def layout(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a module's state dict."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def layout_problems(expected: dict[str, tuple], state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps `state` from loading into a module of layout `expected` (empty: it fits)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: expected {expected[k]}, found {tuple(state[k].shape)}" for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)):
        if keys:
            more = f" and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
            problems.append(f"{len(keys)} {what} key(s): {', '.join(keys[:LISTED_KEYS])}{more}")
    return problems


def fitting_presets(state: dict[str, torch.Tensor]) -> list[str]:
    """The published presets whose architecture the state dict fits (built on the meta device: no memory)."""
    from vpr_ros.core.descriptors.models import PUBLISHED_PRESETS, build_model

    names = []
    for name, conf in PUBLISHED_PRESETS.items():
        adapted = RENAMES.get(conf["model"], lambda s: s)(state)
        with torch.device("meta"):
            net = build_model(conf)
        if not layout_problems(layout(net), adapted):
            names.append(name)
    return names


def load_checkpoint(net: nn.Module, model: str, path: str | Path, preset: str) -> None:
    """Load checkpoint `path` into `net` (architecture `model` of preset `preset`) with strict=True."""
    state = RENAMES.get(model, lambda s: s)(read_state_dict(path))
    problems = layout_problems(layout(net), state)
    if problems:
        fits = fitting_presets(state)
        hint = (f"; it fits preset(s) {', '.join(fits)}" if fits else
                "; it fits no published preset (a checkpoint of another model or of a modified architecture)")
        raise CheckpointError(f"checkpoint {path} does not fit preset {preset!r}: {'; '.join(problems)}{hint}")
    net.load_state_dict(state, strict=True)
    LOGGER.info("loaded %s weights from %s (%d tensors)", preset, path, len(state))
