"""What every command shares: the user's errors reported as one line, comma-separated name lists, and the dispatch
of ``hamburger <command> [<sub-command>] ...`` to the handler its parser registered.

A task's ``cli.register(subparsers)`` adds its commands and sets ``handler=`` on each leaf parser with
``set_defaults``; :func:`dispatch` parses (in two passes, so a ``--config`` recipe's values become the defaults of the
flags it names) and calls that handler.
"""

from __future__ import annotations

import argparse

import torch

from .common import ShardsFailed
from .config import parse_with_recipe, require_distinct

# what a user's input can cause: reported as one line naming the command, never a traceback (OSError: a path the
# file system refuses, e.g. --out /proc/x, a full disk; its message names the path)
USER_ERRORS = (ValueError, OSError, ShardsFailed)


def names(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; a name given twice is a ``ValueError``."""
    return require_distinct((v.strip() for v in text.split(",") if v.strip()), "names")


def choices(allowed: tuple[str, ...]):
    """argparse type: comma-separated names, each one of ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        try:
            picked = names(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        bad = [n for n in picked if n not in allowed]
        if not picked or bad:
            raise argparse.ArgumentTypeError(f"expected comma-separated names from {', '.join(allowed)}; got {text!r}")
        return picked

    return parse


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def leaf_command(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """The command words of ``argv`` (``["seg", "train"]``) and the parser that owns their flags.

    Each level's command is the first word after the previous one that is not a flag; a word that is not one of the
    level's sub-commands (a flag's value, an optional sub-command left out) ends the walk."""
    words, current, rest = [], parser, list(argv)
    while rest:
        table = _subcommands(current)
        word = next((a for a in rest if not a.startswith("-")), None)
        if word not in table:
            break
        words.append(word)
        current = table[word]
        rest = rest[rest.index(word) + 1 :]
    return words, current


# optional modules that one extra provides whatever the command (the others: the command's own extra)
MODULE_EXTRAS = {"skimage": "demo", "sklearn": "gan", "torchmetrics": "gan", "sympy": "seq"}


def install_hint(command: str, module: str, extras: dict[str, str]) -> str:
    extra = MODULE_EXTRAS.get(module.split(".")[0], extras.get(command, command))
    return f'{command} needs the optional dependency {module!r}: pip install "hamburger[{extra}]"'


def missing_extra(sub, command: str, *, extra: str, error: ModuleNotFoundError) -> None:
    """Register ``command`` (whose CLI could not be imported) so that it says what to install instead of failing."""
    # every word after the command, flags included, is only collected (no flag is known): the handler explains
    p = sub.add_parser(
        command, help=f'(not installed: pip install "hamburger[{extra}]")', add_help=False, prefix_chars="\x00"
    )
    p.add_argument("rest", nargs="*")

    def handler(_args) -> None:
        raise SystemExit(f"hamburger {install_hint(command, error.name or str(error), {command: extra})}")

    p.set_defaults(handler=handler)


def dispatch(parser: argparse.ArgumentParser, argv: list[str], *, extras: dict[str, str] | None = None) -> int:
    """Parse ``argv`` (a ``--config`` recipe's values become the defaults), call the leaf command's handler, and
    turn a user's error into one line naming the command; a missing optional dependency names the extra that
    installs it (``extras``: command -> extra)."""
    words, leaf = leaf_command(parser, argv)
    label = " ".join(words) or parser.prog
    try:
        args = parse_with_recipe(parser, argv, leaf)
        handler = args.handler
        handler(args)
    except USER_ERRORS as e:
        raise SystemExit(f"{parser.prog} {label}: {e}") from None
    except ModuleNotFoundError as e:
        if not e.name or e.name.split(".")[0] == "hamburger" or not words:
            raise
        raise SystemExit(f"{parser.prog} {install_hint(words[0], e.name, extras or {})}") from None
    return 0


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when a command's ``--threads`` was given (default: torch's choice)."""
    if threads:
        torch.set_num_threads(threads)
