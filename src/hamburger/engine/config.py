"""Typed configs and flat YAML recipes whose keys are the CLI flags: read (unknown keys are errors), merged, saved
beside a run, and accepted back as ``--config``.

A task's configuration is a dataclass whose fields are declared with :func:`option` (default, one-line help,
choices); :func:`add_config_arguments` turns it into argparse flags, :func:`config_from_args` builds it from parsed
flags, :func:`save_config` writes exactly its fields, and :func:`changed_fields` compares a resumed run's recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..functional import parse_grad
from .common import atomic_write_text

# the largest R a command accepts: a solve holds R x R Gram matrices (and a causal mixer's state one per head), 64 MiB
# each in fp32 at 4,096; a larger R is refused before anything is allocated
MAX_RANK = 4096


_NO_OFF = object()


def option(
    default,
    help: str,
    *,
    choices: tuple | None = None,
    minimum=None,
    above=None,
    maximum=None,
    parse=None,
    keyword: str | None = None,
    off=_NO_OFF,
):
    """A config field: its default, its one-line documentation (the flag's help), its allowed values and bounds
    (``minimum`` and ``maximum`` inclusive, ``above`` exclusive; a tuple's every element is checked), and ``parse``,
    the argparse type of a field whose value has structure (its errors are usage errors naming the flag). A float
    field is finite. ``keyword``: the module keyword the field sets (a task builds the module's keywords from the
    fields that name one: :func:`module_kwargs`), given None where the field's value is ``off``."""
    meta = {"help": help, "choices": choices, "parse": parse, "minimum": minimum, "above": above, "maximum": maximum}
    if keyword is not None:
        meta["keyword"] = keyword
    if off is not _NO_OFF:
        meta["off"] = off
    return dataclasses.field(default=default, metadata=meta)


def keyword_fields(cls) -> tuple[str, ...]:
    """The fields of the config class ``cls`` that set a module keyword (declared with ``option(keyword=...)``), in
    declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls) if "keyword" in f.metadata)


def module_kwargs(config) -> dict:
    """The module keywords the fields of ``config`` declared with ``option(keyword=...)`` set: ``{keyword: value}``,
    None where a field holds its ``off`` value."""
    out = {}
    for f in dataclasses.fields(config):
        if "keyword" in f.metadata:
            value = getattr(config, f.name)
            out[f.metadata["keyword"]] = None if "off" in f.metadata and value == f.metadata["off"] else value
    return out


@dataclasses.dataclass
class RunConfig:
    """The run fields every task's config shares (a task's config subclasses it and redeclares a field only where
    its default or help differs): where the run goes and how it is watched, never what it computes."""

    device: str = option("cpu", "cpu, cuda, cuda:1, ...")
    workers: int = option(0, "DataLoader workers", minimum=0)
    out: Path = option(Path("runs/run"), "run folder (checkpoints, log, config.yaml)")
    val_interval: int = option(250, "validate every N steps (0: never)", minimum=0)
    ckpt_interval: int = option(500, "checkpoint every N steps", minimum=1)
    resume: bool = option(False, "continue from the checkpoint in --out")
    overwrite: bool = option(False, "replace the run in --out (its checkpoints, weights, log) instead of refusing")
    allow_changed_config: bool = option(False, "let --resume continue with a changed recipe (the change is logged)")
    no_tensorboard: bool = option(False, "do not write TensorBoard events")
    quiet: bool = option(False, "no progress bar")


# the run fields that decide nothing a run computes: a resumed run may change them (each task adds its own)
RUN_FREE = frozenset(
    {
        "out",
        "resume",
        "overwrite",
        "allow_changed_config",
        "quiet",
        "no_tensorboard",
        "workers",
        "device",
        "ckpt_interval",
    }
)
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def bound_error(field: dataclasses.Field, value) -> str | None:
    """What is wrong with ``value`` for ``field``'s bounds (None when it is within them, or is None)."""
    if value is None:
        return None
    meta = field.metadata
    for v in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            return f"must be a finite number, got {_show(value)}"
        if meta.get("minimum") is not None and v < meta["minimum"]:
            return f"must be >= {meta['minimum']}, got {_show(value)}"
        if meta.get("above") is not None and v <= meta["above"]:
            return f"must be > {meta['above']}, got {_show(value)}"
        if meta.get("maximum") is not None and v > meta["maximum"]:
            return f"must be <= {meta['maximum']}, got {_show(value)}"
    return None


def _show(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


def validate_config(config) -> None:
    """Raise ValueError naming the first field of a config dataclass outside its choices or bounds."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "device":
            try:
                device_name(value)
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"device {e}") from None
        choices = f.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise ValueError(f"{f.name} must be one of {tuple(choices)}, got {value!r}")
        message = bound_error(f, value)
        if message:
            raise ValueError(f"{f.name} {message}")


def parse_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_floats(text) -> tuple[float, ...]:
    """argparse type: comma-separated finite numbers."""
    parts = text if isinstance(text, (list, tuple)) else [v for v in str(text).strip("[]() ").split(",") if v.strip()]
    try:
        return tuple(finite_float(v) for v in parts)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}") from None


_ASCII_INT = re.compile(r"[+-]?[0-9]+")


def finite_float(text) -> float:
    """argparse type: a finite number (``nan`` and ``inf`` are refused: no flag of this package takes them)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def ascii_int(text) -> int:
    """argparse type: an integer in ASCII digits (``int`` alone also takes ``2_0`` and other scripts' digits)."""
    if isinstance(text, bool) or not isinstance(text, int) and not _ASCII_INT.fullmatch(str(text).strip()):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(text)


def _number(kind, text, low: float, strict: bool):
    value = (ascii_int if kind is int else finite_float)(text)
    if value < low or strict and value == low:
        raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text!r}")
    return value


def positive_int(text) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, 1, False)


def int_between(low: int, high: int):
    """argparse type: an integer in ``low..high`` (counts whose memory grows with them: the bound is the message)."""

    def parse(text) -> int:
        value = _number(int, text, low, False)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text!r}")
        return value

    parse.__name__ = f"an integer in {low}..{high}"
    return parse


def grad_spec(text) -> str:
    """argparse type: a gradient through a ham's solve (``one-step``, ``bptt``, ``none``, ``implicit[:<k>]``,
    ``truncated:<k>``, ``phantom:<k>:<λ>``; docs/solve.md), as the spelling of its parsed :class:`GradSpec`."""
    try:
        return str(parse_grad(str(text)))  # its canonical spelling
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def grad_specs(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated gradients, each as :func:`grad_spec`, none given twice."""
    try:
        picked = require_distinct((t.strip() for t in str(text).split(",") if t.strip()), "names")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return tuple(grad_spec(t) for t in picked)


def shard_spec(text: str) -> tuple[int, int]:
    """argparse type: ``I/N`` with 0 <= I < N (``--shard`` of ablate and gan compare)."""
    try:
        index, count = (int(t) for t in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/2, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected 0 <= I < N, got {text!r}")
    return index, count


def nonnegative_int(text) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, 0, False)


def positive_float(text) -> float:
    """argparse type: a number > 0."""
    return _number(float, text, 0.0, True)


def nonnegative_float(text) -> float:
    """argparse type: a number >= 0."""
    return _number(float, text, 0.0, False)


def require_distinct(values, what: str) -> tuple:
    """``values`` as a tuple; ``ValueError`` naming the repeated ones (two equal seeds are one seed, not two)."""
    values = tuple(values)
    repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
    if repeated:
        raise ValueError(f"{what} must be distinct, got {', '.join(map(str, repeated))} more than once")
    return values


def _list_of(item, what: str):
    def parse(text) -> tuple:
        parts = text if isinstance(text, (list, tuple)) else str(text).strip("[]() ").split(",")
        values = tuple(item(str(v).strip()) for v in parts if str(v).strip())
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        try:
            return require_distinct(values, "the values")
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = f"comma-separated {what}"
    return parse


def device_name(text) -> str:
    """argparse type: a torch device string that exists here (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        dev = torch.device(str(text))
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    return str(text)


positive_ints = _list_of(positive_int, "integers >= 1")
rank_int = int_between(1, MAX_RANK)
nonnegative_ints = _list_of(nonnegative_int, "integers >= 0")
positive_floats = _list_of(positive_float, "numbers > 0")
integers = _list_of(ascii_int, "integers")


_TYPES: dict[str, Callable[[Any], Any]] = {
    "device": device_name,
    "int": ascii_int,
    "float": finite_float,
    "str": str,
    "bool": parse_bool,
    "Path": Path,
    "tuple[float, ...]": parse_floats,
}


def _bounded(kind, field: dataclasses.Field):
    """``kind`` (an argparse type) followed by ``field``'s bound check, as an argparse type."""

    def parse(text):
        value = kind(text)
        message = bound_error(field, value)
        if message:
            raise argparse.ArgumentTypeError(message)
        return value

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


@dataclasses.dataclass(frozen=True)
class Here:
    """A command's own default for a declared option and what it means there, for :func:`add_config_arguments`'s
    ``defaults`` (``Here(None, "the task's")``: the command fills it in)."""

    value: Any
    note: str


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls,
    *,
    only: tuple[str, ...] | None = None,
    defaults: dict | None = None,
    lists: tuple[str, ...] = (),
) -> None:
    """One ``--flag-name`` per field of the dataclass ``cls`` (or per field named in ``only``), typed from its
    annotation (or its ``parse``), documented by its help; values outside a field's bounds are argparse errors naming
    the flag. ``defaults`` replace a field's default for this command (a value, or a :class:`Here` that says what it
    means; the help says so). A field named in ``lists`` takes comma-separated values, each parsed and bounded as the
    field's (a sweep over it). Each flag remembers its declaration (``action.declared``): a test checks that no
    command writes such a flag by hand."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((set(only or ()) | set(lists) | set(defaults or ())) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__} declares no {unknown}")
    chosen = (
        [fields[n] for n in only] if only is not None else sorted(fields.values(), key=lambda f: f.name in RUN_FIELDS)
    )
    for f in chosen:  # with every field: the run's own flags last
        annotation = str(f.type).replace(" | None", "")
        kind: Callable[[str], Any] = f.metadata.get("parse") or _TYPES["device" if f.name == "device" else annotation]
        if any(f.metadata.get(k) is not None for k in ("minimum", "above", "maximum")):
            kind = _bounded(kind, f)
        if f.name in lists:
            kind = _list_of(kind, f"values of --{f.name.replace('_', '-')}")
        help_text = f.metadata.get("help", "")
        default = f.default
        if defaults and f.name in defaults:
            here = defaults[f.name]
            default, note = (here.value, here.note) if isinstance(here, Here) else (here, str(here))
            help_text = f"{help_text} [here: {note}]"
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"default": default, "help": help_text, "choices": f.metadata.get("choices")}
        if annotation == "bool":
            action = parser.add_argument(flag, type=parse_bool, nargs="?", const=True, **kw)
        else:
            action = parser.add_argument(flag, type=kind, **kw)
        action.declared = f"{cls.__name__}.{f.name}"  # type: ignore[attr-defined]


@dataclasses.dataclass
class ExperimentOptions:
    """The options the experiment commands share (demo, compare, ablate, estimators, bench, viz, decompose, and the
    commands that read a run: eval, predict, sample): where their results go and how their runs are split among
    seeds and processes. A command takes those it has with ``add_config_arguments(parser, ExperimentOptions,
    only=..., defaults=...)``; where and how long each run trains come from the task's own config."""

    out: Path | None = option(None, "where the command writes its results")
    seeds: tuple[int, ...] = option((0, 1, 2), "comma-separated seeds", parse=integers)
    seed: int = option(0, "random seed")
    jobs: int = option(1, "training processes at once, the cores split", minimum=1)
    shard: tuple[int, int] | None = option(None, "I/N: train only every N-th run from the I-th", parse=shard_spec)


def config_from_args(cls, args: argparse.Namespace):
    """The dataclass ``cls`` from parsed flags (other attributes of ``args`` are ignored)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def config_dict(config) -> dict:
    """The fields of a config as YAML-ready values (paths as strings, tuples as lists)."""
    return {f.name: _yaml_value(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _yaml_value(value):
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def changed_fields(saved: dict, config, free: frozenset) -> dict[str, tuple]:
    """{field: (saved value, current value)} for every field outside ``free`` that differs. A field the saved config
    lacks (added to the config since the run was written) counts as the value runs had before the field existed:
    the config class's ``LEGACY_DEFAULTS`` entry where its default has changed since, else its default. A field
    saved as None ("the default") that the config now resolves to a value counts as its ``LEGACY_DEFAULTS`` entry
    too, where it has one: the default the run was trained with."""
    now = config_dict(config)
    fields = dataclasses.fields(config)
    legacy = getattr(type(config), "LEGACY_DEFAULTS", {})
    defaults = {f.name: _yaml_value(f.default) for f in fields if f.default is not dataclasses.MISSING} | legacy
    was = {k: saved[k] if k in saved else defaults.get(k) for k in now}
    was |= {k: legacy[k] for k in legacy if k in now and was[k] is None and now[k] is not None}
    return {k: (was[k], v) for k, v in now.items() if k not in free and was[k] != v}


def _where(error) -> str:
    """`` at line L, column C: <problem>`` of a YAML syntax error (what the reader knows of it)."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {getattr(error, 'problem', None) or error}"


def load_recipe(path: Path, parser: argparse.ArgumentParser) -> dict:
    """Read a flat YAML file; every key must be a flag of ``parser`` (dashes or underscores)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"recipe {path}: YAML syntax error{_where(e)}") from None
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
                parse = action.type
                if callable(parse) and value is not None and not isinstance(value, (list, bool)):
                    try:
                        value = parse(str(value))
                    except argparse.ArgumentTypeError as e:
                        raise ValueError(f"recipe {known.config}: key {action.dest!r} {e}") from None
                    except (ValueError, TypeError):
                        names: dict[Any, str] = {
                            parse_bool: "true/false",
                            parse_floats: "comma-separated finite numbers",
                        }
                        kind = names.get(parse, getattr(parse, "__name__", "a value"))
                        where = f"recipe {known.config}: key {action.dest!r}"
                        raise ValueError(f"{where} must be {kind}, got {value!r}") from None
                if action.choices is not None and value is not None and value not in action.choices:
                    where = f"recipe {known.config}: key {action.dest!r}"
                    raise ValueError(f"{where} must be one of {tuple(action.choices)}, got {value!r}")
                action.default = value
                action.required = False
    return parser.parse_args(argv)


def load_run_config(run: Path, cls, command: str):
    """The ``cls`` config saved as ``config.yaml`` in the run folder ``run`` of ``hamburger <command>``. A field the
    file lacks (a run saved before the field existed) takes the class's ``LEGACY_DEFAULTS`` entry where there is one —
    what the run trained with — and the current default otherwise."""
    import yaml

    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{run} holds no config.yaml: not a {command} run folder")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: YAML syntax error{_where(e)}; not a readable {command} run config") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} is not a mapping of settings: not a {command} run config")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(
            f"{path} has settings a {command} run does not have ({', '.join(map(str, unknown[:5]))}): "
            f"is {run} a run of another command?"
        )
    legacy = {k: v for k, v in getattr(cls, "LEGACY_DEFAULTS", {}).items() if k not in data}
    return cls(**legacy, **data)


def save_config(config, path: Path) -> None:
    """Write a config's fields (nothing else, so the file is accepted back as ``--config``) as flat YAML."""
    import yaml

    atomic_write_text(Path(path), yaml.safe_dump(config_dict(config), sort_keys=True))
