"""Validation curves of `hamburger seq train` runs side by side: one line per run (MQAR recall or LM bits per
character against steps), and a Markdown table of the same points. Reads each run folder's ``log.jsonl`` (and its
``result.json`` or ``eval.json`` for the test figure, where there is one).

    python benchmarks/seq_curves.py "R 24=results/seq-mqar-3000-r24/N256-P32/ham_nmf/seed0" \
        "R 32=results/seq-mqar-3000/N256-P32/ham_nmf/seed0" --out docs/img/seq-mqar-rank.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hamburger.engine.common import atomic_write_text, save_figure

# (axis label, scale, decimals in the table)
METRICS = {"val_accuracy": ("validation recall (%)", 100.0, 2), "val_bpc": ("validation bits per character", 1.0, 3)}


def read_run(folder: Path) -> dict:
    """The validation points of one run and its test figure (None if it has not been tested)."""
    log = folder / "log.jsonl"
    if not log.is_file():
        raise SystemExit(f"{folder}: no log.jsonl (not a seq train run folder?)")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    metric = next((k for k in METRICS if any(k in r for r in rows)), None)
    if metric is None:
        raise SystemExit(f"{folder}: the log has no validation points yet")
    points = [(r["step"], METRICS[metric][1] * r[metric]) for r in rows if metric in r]
    test = None
    for name, key in (
        ("result.json", "accuracy"),
        ("result.json", "bpc"),
        ("eval.json", "accuracy"),
        ("eval.json", "bpc"),
    ):
        path = folder / name
        if test is None and path.is_file() and key in (record := json.loads(path.read_text())):
            test = METRICS[metric][1] * record[key]
    return {"metric": metric, "points": points, "test": test, "steps": rows[-1]["step"] if rows else 0}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER, one per line of the plot")
    p.add_argument("--out", type=Path, default=Path("seq-curves.png"), help="the PNG; the table beside it (.md)")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    runs = {}
    for spec in args.runs:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not folder:
            raise SystemExit(f"expected LABEL=RUN_FOLDER, got {spec!r}")
        runs[label] = read_run(Path(folder))
    metrics = {r["metric"] for r in runs.values()}
    if len(metrics) > 1:
        raise SystemExit(f"the runs log different metrics ({sorted(metrics)}): plot MQAR and LM runs apart")
    metric = metrics.pop()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, run in runs.items():
        ax.plot(*zip(*run["points"]), marker="o", markersize=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(METRICS[metric][0])
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, args.out)
    steps = sorted({s for run in runs.values() for s, _ in run["points"]})
    md = [
        f"| run | steps done | test | {' | '.join(str(s) for s in steps)} |",
        "|---|---:|---:|" + "---:|" * len(steps),
    ]
    for label, run in runs.items():
        at = dict(run["points"])
        digits = METRICS[metric][2]
        cells = [f"{at[s]:.{digits}f}" if s in at else "–" for s in steps]
        test = f"{run['test']:.{digits}f}" if run["test"] is not None else "–"
        md.append(f"| {label} | {run['steps']} | {test} | " + " | ".join(cells) + " |")
    atomic_write_text(
        args.out.with_suffix(".md"), f"{METRICS[metric][0]} at each validation step\n\n" + "\n".join(md) + "\n"
    )
    print("\n".join(md))
    return runs


if __name__ == "__main__":
    main()
