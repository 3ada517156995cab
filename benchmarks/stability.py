"""Why does the Hamburger head train unsteadily? Screen candidate fixes on the embedded benchmark (issue 10).

Each variant is the demo's `hamnet_tiny` run (animal-scenes, batch 16, AdamW 2e-3 poly, validation every 100
iterations on the full validation split) with some fields of its :class:`SegTrainConfig` replaced. Runs are
resumable and never repeated (``seg compare``'s run layout). Writes ``stability.md`` / ``.json`` (test mIoU, the
largest validation drop after the first 20% of training, the spread of the last three evaluations) and
``stability-curves.png``.

    python benchmarks/stability.py --seeds 1 --variants paper,v2+,warmup --out results/stability
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from hamburger.engine.common import atomic_write_text, machine_info, save_figure
from hamburger.seg.experiments.compare import run_one

VARIANTS: dict[str, tuple[str, dict]] = {
    "paper": ("hamnet", {}),  # v2 NMF, R 16, K 6 / 6, one-step gradient, random bases, BatchNorm
    "v2+": ("hamnet", {"ham_version": "v2+"}),  # zero-initialised ham branch, learnable shortcut scale
    "v1": ("hamnet", {"ham_version": "v1"}),
    "online": ("hamnet", {"ham_init": "online"}),
    "fixed": ("hamnet", {"ham_init": "fixed"}),
    "warmup": ("hamnet", {"warmup_iters": 100}),
    "lr1e-3": ("hamnet", {"lr": 1e-3}),
    "K3": ("hamnet", {"ham_steps": 3}),
    "K10": ("hamnet", {"ham_steps": 10, "ham_eval_steps": 10}),
    "bptt": ("hamnet", {"ham_grad": "bptt"}),
    "R8": ("hamnet", {"rank": 8}),
    "R32": ("hamnet", {"rank": 32}),
    "groupnorm": ("hamnet", {"norm": "group"}),  # every norm of the head
    "blockgn": ("hamnet", {"context_norm": "group"}),  # the Hamburger block's norm only
    "blockgn-fixed": ("hamnet", {"context_norm": "group", "ham_init": "fixed"}),
    "attention": ("nonlocal", {}),
    "v2+warmup": ("hamnet", {"ham_version": "v2+", "warmup_iters": 100}),
}


# the screen is of the demo's recipe before docs/stability.md: no BatchNorm recalibration unless the variant says so
BASE = {"bn_recalib": 0}
VARIANTS.update(
    {
        "recalib": ("hamnet", {"bn_recalib": 10}),  # BatchNorm statistics recomputed before each evaluation
        "attention-recalib": ("nonlocal", {"bn_recalib": 10}),
        "fixed-recalib": ("hamnet", {"bn_recalib": 10, "ham_init": "fixed"}),
        "bptt-recalib": ("hamnet", {"bn_recalib": 10, "ham_grad": "bptt"}),
    }
)


def max_drop(steps: list[int], curve: list[float], iters: int) -> float:
    """Largest fall of validation mIoU (points) between consecutive evaluations after the first 20% of training."""
    pairs = [(a, b) for s, a, b in zip(steps[1:], curve, curve[1:]) if s > 0.2 * iters]
    return max([100 * (a - b) for a, b in pairs], default=0.0)


def tail_spread(curve: list[float]) -> float:
    """max - min of the last three evaluations (points)."""
    last = curve[-3:]
    return 100 * (max(last) - min(last)) if last else float("nan")


def draw_spread(run_dir: Path, head: str, overrides: dict, seeds=(0, 1, 2, 3)) -> list[float] | None:
    """Validation mIoU (points) of a run's best checkpoint evaluated from several fixed eval-start draws (the hams'
    ``seed``): how much one evaluation depends on the draw it happens to start from. None for heads without a ham."""
    import dataclasses

    import torch

    from hamburger.engine.checkpoint import load_model_weights
    from hamburger.seg.data import build_dataset
    from hamburger.seg.eval import evaluate
    from hamburger.seg.experiments.compare import train_args
    from hamburger.seg.train import build_model
    from hamburger.seg.transforms import SegTransform

    args = dataclasses.replace(
        train_args(
            head,
            0,
            out=run_dir,
            data_root=None,
            iters=1,
            batch=16,
            lr=2e-3,
            val_interval=100,
            max_val=None,
            workers=0,
            quiet=True,
        ),
        **overrides,
    )
    model = build_model(args, 11, torch.device("cpu"))
    load_model_weights(model, run_dir / "best.safetensors")
    hams = [m for m in model.modules() if hasattr(m, "eval_bases") and m.init == "random"]
    if not hams:
        return None
    val = build_dataset("animal-scenes", None, "val", transform=SegTransform(train=False))
    out = []
    for seed in seeds:
        for ham in hams:
            ham.seed = seed
            ham.eval_bases = ham._draw_fixed(ham.channels // ham.groups)
        out.append(100 * evaluate(model, val)["miou"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="paper,v2+,warmup,online,groupnorm,lr1e-3,R8,K3,bptt,v1")
    p.add_argument("--seeds", default="1")
    p.add_argument("--iters", type=int, default=800)
    p.add_argument("--out", type=Path, default=Path("results/stability"))
    args = p.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in names:
        head, over = VARIANTS[name]
        over = {**BASE, **over}
        for seed in seeds:
            r = run_one(
                head,
                seed,
                out=args.out,
                data_root=None,
                iters=args.iters,
                batch=16,
                lr=2e-3,
                val_interval=100,
                max_val=None,
                workers=1,
                progress=True,
                overrides=over,
                tag=name,
            )
            curve = [m for _, m in r["val_curve"]]
            steps = r.get("val_steps") or [100 * (i + 1) for i in range(len(curve))]
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "test_miou": 100 * r["test_miou"],
                    "curve": curve,
                    "steps": steps,
                    "max_drop": max_drop(steps, curve, args.iters),
                    "tail_spread": tail_spread(curve),
                    "draws": draw_spread(args.out / name / f"seed{seed}", head, over),
                }
            )
    md = [f"# Hamburger head stability screen ({args.iters} iterations)", ""]
    md += [f"- {k}: {v}" for k, v in machine_info().items()]
    md += [
        "",
        "| variant | seeds | test mIoU | worst drop after 20% (pts) | last-3 spread (pts) | best checkpoint's "
        "val mIoU over 4 eval-start draws | val mIoU every 100 iterations |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for name in names:
        rs = [r for r in rows if r["variant"] == name]
        miou = [r["test_miou"] for r in rs]
        sd = f" ± {statistics.stdev(miou):.1f}" if len(miou) > 1 else ""
        curves = "; ".join(" ".join(f"{100 * m:.1f}" for m in r["curve"]) for r in rs)
        draws = "; ".join(f"{min(r['draws']):.1f}–{max(r['draws']):.1f}" if r["draws"] else "fixed start" for r in rs)
        md.append(
            f"| {name} | {','.join(str(r['seed']) for r in rs)} | {statistics.mean(miou):.1f}{sd} | "
            f"{max(r['max_drop'] for r in rs):.1f} | {max(r['tail_spread'] for r in rs):.1f} | {draws} | {curves} |"
        )
    atomic_write_text(args.out / "stability.md", "\n".join(md) + "\n")
    atomic_write_text(args.out / "stability.json", json.dumps(rows, indent=1))
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, name in enumerate(names):
        for j, r in enumerate(r for r in rows if r["variant"] == name):
            ax.plot(
                r["steps"], [100 * m for m in r["curve"]], color=f"C{i % 10}", alpha=0.8, label=name if j == 0 else None
            )
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation mIoU")
    ax.legend(fontsize=8)
    save_figure(fig, args.out / "stability-curves.png")
    print("\n".join(md))


if __name__ == "__main__":
    main()
