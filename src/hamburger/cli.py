"""The ``hamburger`` command: a table of commands. Each task's ``cli.register`` adds its parsers; nothing imports
this module.

=========================  ==========================================================================
command                    registered by (extra to install)
=========================  ==========================================================================
``demo``, ``seg``,         :mod:`hamburger.seg.cli` (``demo``; ``seg`` for seg train/eval/predict)
``ablate``, ``estimators``
``decompose``, ``viz``     :mod:`hamburger.viz.cli` (``demo``)
``bench``                  :mod:`hamburger.bench.cli` (``bench``)
``gan``                    :mod:`hamburger.gan.cli` (``gan``)
``seq``                    :mod:`hamburger.seq.cli` (``seq``)
=========================  ==========================================================================

The core needs only torch; a command whose extra is not installed still shows in ``--help`` and says what to install.
"""

from __future__ import annotations

import argparse
import sys

from .engine.cli import dispatch, missing_extra

# command -> the extra that holds what it needs, in the order of ``hamburger --help``
EXTRAS = {
    "demo": "demo",
    "seg": "seg",
    "ablate": "demo",
    "estimators": "demo",
    "decompose": "demo",
    "viz": "demo",
    "bench": "bench",
    "gan": "gan",
    "seq": "seq",
}
MISSING: dict[str, ModuleNotFoundError] = {}  # a task's CLI that could not be imported: its commands say why


def _missing(error: ModuleNotFoundError) -> ModuleNotFoundError:
    """An optional third-party module is missing: keep the error for the commands; a module of this package is a bug."""
    if not error.name or error.name.split(".")[0] == "hamburger":
        raise error
    return error


try:
    from .seg import cli as seg_cli
except ModuleNotFoundError as e:
    e = _missing(e)
    seg_cli, MISSING["demo"], MISSING["seg"], MISSING["ablate"], MISSING["estimators"] = None, e, e, e, e
try:
    from .viz import cli as viz_cli
except ModuleNotFoundError as e:
    e = _missing(e)
    viz_cli, MISSING["decompose"], MISSING["viz"] = None, e, e
try:
    from .bench import cli as bench_cli
except ModuleNotFoundError as e:
    e = _missing(e)
    bench_cli, MISSING["bench"] = None, e
try:
    from .gan import cli as gan_cli
except ModuleNotFoundError as e:
    e = _missing(e)
    gan_cli, MISSING["gan"] = None, e
try:
    from .seq import cli as seq_cli
except ModuleNotFoundError as e:
    e = _missing(e)
    seq_cli, MISSING["seq"] = None, e

COMMANDS = (seg_cli, viz_cli, bench_cli, gan_cli, seq_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hamburger", description="Matrix decomposition as an alternative to attention: the Hamburger block."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        if module is not None:
            module.register(sub)
    for command, error in MISSING.items():
        missing_extra(sub, command, extra=EXTRAS[command], error=error)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), sys.argv[1:] if argv is None else list(argv), extras=EXTRAS)


if __name__ == "__main__":
    raise SystemExit(main())
