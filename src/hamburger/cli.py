"""The ``hamburger`` command: a table of commands. Each task's ``cli.register`` adds its parsers; nothing imports
this module.

=========================  ==========================================================================
command                    registered by
=========================  ==========================================================================
``demo``, ``seg``,         :mod:`hamburger.seg.cli` (segmentation; the demo is ``seg compare`` of
``ablate``                 three heads)
``decompose``, ``viz``     :mod:`hamburger.viz.cli`
``bench``                  :mod:`hamburger.bench.cli`
``gan``                    :mod:`hamburger.gan.cli`
``seq``                    :mod:`hamburger.seq.cli`
=========================  ==========================================================================
"""

from __future__ import annotations

import argparse
import sys

from .bench import cli as bench_cli
from .engine.cli import dispatch
from .gan import cli as gan_cli
from .seg import cli as seg_cli
from .seq import cli as seq_cli
from .viz import cli as viz_cli

COMMANDS = (seg_cli, viz_cli, bench_cli, gan_cli, seq_cli)  # in the order of ``hamburger --help``


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hamburger", description="Matrix decomposition as an alternative to attention: the Hamburger block."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    raise SystemExit(main())
