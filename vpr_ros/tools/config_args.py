"""Command-line flags derived from core.config.LocalizerConfig: `--top-k` for `top_k`, with the field's
default, description and choices, so that a tool runs the pipeline the node runs unless told otherwise."""

import argparse
import dataclasses

from vpr_ros.core.config import LocalizerConfig


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


ALIASES = {"sequence_length": ("--sequence",)}  # shorter spellings of some flags


def add_config_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """One flag per named LocalizerConfig field."""
    fields = {f.name: f for f in dataclasses.fields(LocalizerConfig)}
    group = parser.add_argument_group("pipeline (LocalizerConfig; the node's parameters of the same names)")
    for name in names:
        f = fields[name]
        spec = f.metadata["spec"]
        kwargs = {"default": f.default, "type": type(f.default),
                  "help": f"{f.metadata['description']} (default: {f.default})".replace("%", "%%")}  # argparse formats help
        if isinstance(f.default, str) and spec is not None:
            kwargs["choices"] = [c for c in spec if c]
        group.add_argument(flag(name), *ALIASES.get(name, ()), dest=name, **kwargs)


def config_from_args(args: argparse.Namespace, names: tuple[str, ...], **fixed) -> LocalizerConfig:
    """LocalizerConfig from the parsed flags of `names` plus `fixed` values; raises ValueError naming a bad one."""
    return LocalizerConfig(**{name: getattr(args, name) for name in names}, **fixed)
