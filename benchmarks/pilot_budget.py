"""The training budget a pilot run supports (issue 44): its validation mIoU at each evaluation, and the shortest budget
B (a validation step) at which the mIoU moved less than ``--tolerance`` over the last quarter of B steps.

    PYTHONPATH=src python3 benchmarks/pilot_budget.py results/pretrained-pilot/hamnet_efflite0-pretrained-headlr10/seed0

Reads the run folder's ``log.jsonl`` (written by ``hamburger seg train`` / ``seg compare``); prints Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run: Path) -> list[tuple[int, float]]:
    """(step, validation mIoU in points, 0-100) of every evaluation in the run's log (which holds fractions)."""
    records = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], 100 * r["val_miou"]) for r in records if "val_miou" in r]


def settled_budget(points: list[tuple[int, float]], tolerance: float) -> int | None:
    """The first evaluated step B whose last quarter (the evaluations in [3B/4, B]) spans less than ``tolerance``
    mIoU points; None if no B does (train longer)."""
    for step, _ in points:
        window = [v for s, v in points if 3 * step / 4 <= s <= step]
        if len(window) >= 3 and max(window) - min(window) < tolerance:
            return step
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder with log.jsonl")
    parser.add_argument("--tolerance", type=float, default=0.5, help="mIoU points over the last quarter")
    args = parser.parse_args()
    points = curve(args.run)
    if not points:
        raise SystemExit(f"{args.run}/log.jsonl holds no validation mIoU")
    print("| step | validation mIoU |\n|---:|---:|")
    for step, value in points:
        print(f"| {step} | {value:.2f} |")
    budget = settled_budget(points, args.tolerance)
    last = points[-1][0]
    verdict = (
        f"settled at {budget} steps (the last quarter moved < {args.tolerance})"
        if budget
        else f"not settled within {last} steps: train longer"
    )
    print(f"\nBudget: {verdict}.")


if __name__ == "__main__":
    main()
