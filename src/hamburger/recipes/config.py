"""Typed configs and flat YAML recipes whose keys are the CLI flags: read (unknown keys are errors), merged, saved
beside a run, and accepted back as ``--config``.

A task's configuration is a dataclass whose fields are declared with :func:`option` (default, one-line help,
choices); :func:`add_config_arguments` turns it into argparse flags, :func:`config_from_args` builds it from parsed
flags, :func:`save_config` writes exactly its fields, and :func:`changed_fields` compares a resumed run's recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .common import atomic_write_text


def option(default, help: str, *, choices: tuple | None = None):
    """A config field: its default, its one-line documentation (the flag's help) and its allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def parse_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_floats(text) -> tuple[float, ...]:
    if isinstance(text, (list, tuple)):
        return tuple(float(v) for v in text)
    try:
        return tuple(float(v) for v in str(text).strip("[]() ").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


_TYPES = {"int": int, "float": float, "str": str, "bool": parse_bool, "Path": Path, "tuple[float, ...]": parse_floats}


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--flag-name`` per field of the dataclass ``cls``, typed from its annotation, documented by its help."""
    for f in dataclasses.fields(cls):
        annotation = str(f.type).replace(" | None", "")
        kind = _TYPES[annotation]
        help_text = f.metadata.get("help", "")
        flag = "--" + f.name.replace("_", "-")
        kw = {"default": f.default, "help": help_text, "choices": f.metadata.get("choices")}
        if annotation == "bool":
            parser.add_argument(flag, type=parse_bool, nargs="?", const=True, **kw)
        else:
            parser.add_argument(flag, type=kind, **kw)


def config_from_args(cls, args: argparse.Namespace):
    """The dataclass ``cls`` from parsed flags (other attributes of ``args`` are ignored)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def config_dict(config) -> dict:
    """The fields of a config as YAML-ready values (paths as strings, tuples as lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
    return out


def changed_fields(saved: dict, config, free: frozenset) -> dict[str, tuple]:
    """{field: (saved value, current value)} for every field outside ``free`` that differs."""
    now = config_dict(config)
    return {k: (saved.get(k), v) for k, v in now.items() if k not in free and saved.get(k) != v}


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
        if isinstance(value, dict) or isinstance(value, list) and dest not in ("scales", "scale_range"):
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
                    try:
                        value = action.type(str(value))
                    except (ValueError, TypeError, argparse.ArgumentTypeError):
                        names = {parse_bool: "true/false", parse_floats: "comma-separated numbers"}
                        kind = names.get(action.type, getattr(action.type, "__name__", "a value"))
                        where = f"recipe {known.config}: key {action.dest!r}"
                        raise ValueError(f"{where} must be {kind}, got {value!r}") from None
                if action.choices is not None and value is not None and value not in action.choices:
                    where = f"recipe {known.config}: key {action.dest!r}"
                    raise ValueError(f"{where} must be one of {tuple(action.choices)}, got {value!r}")
                action.default = value
                action.required = False
    return parser.parse_args(argv)


def save_config(config, path: Path) -> None:
    """Write a config's fields (nothing else, so the file is accepted back as ``--config``) as flat YAML."""
    import yaml

    atomic_write_text(Path(path), yaml.safe_dump(config_dict(config), sort_keys=True))
