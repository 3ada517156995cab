"""Flat YAML recipes whose keys are the CLI flags: read (unknown keys are errors), merged, saved beside a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import atomic_write_text


def load_recipe(path: Path, parser: argparse.ArgumentParser) -> dict:
    """Read a flat YAML file; every key must be a flag of ``parser`` (dashes or underscores)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a flat mapping of flag: value")
    known = {a.dest for a in parser._actions}
    out = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in known or dest in ("config", "help"):
            raise ValueError(f"recipe {path}: unknown key {key!r}; keys are the command's flags")
        if isinstance(value, (dict, list)) and dest not in ("scales",):
            raise ValueError(f"recipe {path}: key {key!r} must be a scalar (recipes are flat)")
        out[dest] = value
    return out


def parse_with_recipe(
    parser: argparse.ArgumentParser, argv, command: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Flags given on the command line win over the recipe's values, which win over the defaults.

    ``command`` is the sub-command parser that owns the flags (default: ``parser`` itself)."""
    command = command or parser
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        recipe = load_recipe(known.config, command)
        for action in command._actions:
            if action.dest in recipe:
                value = recipe[action.dest]
                if action.type is not None and value is not None and not isinstance(value, (list, bool)):
                    value = action.type(str(value))
                action.default = value
                action.required = False
    return parser.parse_args(argv)


def save_config(args: argparse.Namespace, path: Path) -> None:
    import yaml

    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("func",)}
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    atomic_write_text(Path(path), yaml.safe_dump(values, sort_keys=True))
