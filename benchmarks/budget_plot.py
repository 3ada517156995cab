"""Validation mIoU against training time for several budgets of the same heads (issue 10's budget question): reads
``seg compare`` run folders and draws one line per (head, budget).

    python benchmarks/budget_plot.py results/compare-recalib results/compare-1600 --out docs/img/budget-curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hamburger.engine.common import save_figure
from hamburger.seg.experiments.compare import LABELS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="seg compare output folders")
    p.add_argument("--heads", default="hamnet,nonlocal,fcn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("budget-curves.png"))
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = ["-", "--", ":"]
    for j, folder in enumerate(args.runs):
        for i, head in enumerate(args.heads.split(",")):
            path = folder / f"{head}_tiny" / f"seed{args.seed}" / "result.json"
            if not path.is_file():
                continue
            r = json.loads(path.read_text())
            t, m = zip(*r["val_curve"])
            label = f"{LABELS.get(head, head)}, {r['iters']} it. (test {100 * r['test_miou']:.1f})"
            ax.plot([v / 60 for v in t], [100 * v for v in m], styles[j % 3], color=f"C{i}", marker=".", label=label)
    ax.set_xlabel("training time (minutes, one torch thread, two runs sharing 2 cores)")
    ax.set_ylabel("validation mIoU")
    ax.legend(fontsize=8)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
