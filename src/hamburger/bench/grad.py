"""`hamburger bench grad`: what each gradient through the solve costs — time per training step (forward + backward)
and the step's peak memory (the backward pass included, where an adjoint's memory lives) — against K, for the
Hamburger block and for the demo's tiny segmentation model; and the solve's forward residual ‖step(z_K) − z_K‖/‖z_K‖
(how far from a fixed point the K steps stop).

Every figure is measured in the run that prints it; the estimators of one cell are timed back to back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import functional as HF
from ..burger import Hamburger
from ..engine.common import machine_info, progress_bar, save_figure, write_results
from ..engine.config import require_distinct
from ..engine.measure import bench_device, median_time, peak_memory, synchronizer
from ..functional import parse_grad
from ..seg.models import create_model

ESTIMATORS = ("one-step", "implicit", "implicit:1", "truncated:2", "phantom:2:0.5", "bptt")
STEPS = (6, 12, 30)


def _train_step(model: torch.nn.Module, x: torch.Tensor):
    """One training step of ``model`` on ``x`` (a segmentation model's ``"out"``, a block's output)."""

    def step():
        model.zero_grad(set_to_none=True)
        out = model(x)
        (out["out"] if isinstance(out, dict) else out).square().mean().backward()

    return step


def residual(channels: int, size: int, rank: int, steps: int, *, seed: int = 0) -> float:
    """‖D_{K+1}C_{K+1} − D_K C_K‖ / ‖D_K C_K‖ of NMF on clustered non-negative features: how much one more step
    still moves the reconstruction after K."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, channels, size * size, generator=g) ** 4  # (B, D, N): skewed, as ReLU features are
    bases = torch.nn.functional.normalize(torch.rand(1, channels, rank, generator=g), dim=1)
    a = HF.nmf(x, bases, steps, grad="none").recon
    b = HF.nmf(x, bases, steps + 1, grad="none").recon
    return float((b - a).norm() / a.norm())


def agreement(estimators, steps, *, channels: int = 64, size: int = 16, rank: int = 16, seeds=(0, 1, 2)) -> dict:
    """Cosine similarity of each estimator's gradient with BPTT's at the same K, on NMF in float64: ∂L/∂X for a fixed
    random read-out L = ⟨W, X̄⟩ of the reconstruction, on clustered non-negative features (mean over ``seeds``).
    How far each estimator's direction is from the exact derivative of the unrolled K steps."""
    estimators = [e for e in estimators if e != "none"]  # no gradient, no direction
    out: dict[str, dict[int, float]] = {e: {} for e in estimators}
    for k in steps:
        sums = dict.fromkeys(estimators, 0.0)
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            x = torch.rand(1, channels, size * size, generator=g, dtype=torch.float64) ** 4  # (B, D, N)
            bases = torch.rand(1, channels, rank, generator=g, dtype=torch.float64)
            bases = torch.nn.functional.normalize(bases, dim=1)
            w = torch.randn(1, channels, size * size, generator=g, dtype=torch.float64)
            ref = _input_grad(x, bases, w, k, "bptt")
            for e in estimators:
                sums[e] += float(torch.nn.functional.cosine_similarity(_input_grad(x, bases, w, k, e), ref, dim=0))
        for e in estimators:
            out[e][k] = sums[e] / len(seeds)
    return out


def _input_grad(x: torch.Tensor, bases: torch.Tensor, w: torch.Tensor, steps: int, grad: str) -> torch.Tensor:
    """∂⟨W, X̄⟩/∂X of NMF with K = ``steps`` under ``grad``, flattened."""
    x = x.clone().requires_grad_()
    recon = HF.nmf(x, bases, steps, grad=grad).recon
    return torch.autograd.grad((recon * w).sum(), x)[0].flatten()


def run(
    *,
    estimators=ESTIMATORS,
    steps=STEPS,
    sizes=(64, 128),
    channels: int = 512,
    rank: int = 64,
    batch: int = 1,
    repeats: int = 3,
    device: str = "cpu",
    tiny: bool = True,
    out: Path | None = Path("results/bench-grad"),
    progress: bool = True,
) -> dict:
    """Time and peak memory of one training step for every (estimator, K, size) of the block (C, R), and of the
    demo's ``hamnet_tiny`` (batch 16 of 128² images) when ``tiny``; NMF's forward residual at each K."""
    estimators, steps, sizes = (
        require_distinct(estimators, "estimators"),
        require_distinct(steps, "steps"),
        require_distinct(sizes, "sizes"),
    )
    for e in estimators:
        parse_grad(e)
    too_few = [(e, k) for e in estimators for k in steps if parse_grad(e).k > k]
    if too_few:
        raise ValueError(f"an estimator unrolls more steps than K: {too_few}")
    dev, dev_info = bench_device(device)
    sync = synchronizer(dev)
    cells = [("block", s) for s in sizes] + ([("hamnet_tiny", 128)] if tiny else [])
    bar = progress_bar(len(cells) * len(steps) * len(estimators), progress, unit="cell")
    rows = []
    for what, size in cells:
        for k in steps:
            for grad in estimators:
                torch.manual_seed(0)
                if what == "block":
                    model = Hamburger(channels, rank=rank, train_steps=k, grad=grad).to(dev).train()
                    x = torch.randn(batch, channels, size, size, device=dev)
                else:
                    model = create_model("hamnet_tiny", num_classes=11, train_steps=k, grad=grad).to(dev).train()
                    x = torch.randn(16, 3, size, size, device=dev)
                step = _train_step(model, x)
                seconds = median_time(step, repeats=repeats, sync=sync)
                rows.append(
                    {
                        "model": what,
                        "size": size,
                        "steps": k,
                        "grad": grad,
                        "ms": 1e3 * seconds,
                        "peak_mib": peak_memory(step, dev) / 2**20,
                    }
                )
                bar.update(1)
    bar.close()
    residuals = {k: residual(channels, min(sizes), rank, k) for k in sorted({*steps, 6, 7})}
    cosines = agreement([e for e in estimators if parse_grad(e).k <= min(steps)], steps)
    info = {**machine_info(), **dev_info, "channels": channels, "rank": rank, "batch": batch, "repeats": repeats}
    md = markdown(rows, residuals, estimators, cosines)
    result = {"rows": rows, "residual": residuals, "agreement": cosines}
    if out is not None:
        out = Path(out)
        write_results(out, "bench-grad", info, result, md)
        _plot(rows, estimators, out / "bench-grad.png")
    if progress:
        print("\n".join(md))
    return result


def markdown(rows: list[dict], residuals: dict, estimators, cosines: dict | None = None) -> list[str]:
    md = [
        "| model | H = W | K | " + " | ".join(f"{e} ms / MiB" for e in estimators) + " |",
        "|---|---:|---:|" + "---:|" * len(estimators),
    ]
    cells = sorted({(r["model"], r["size"], r["steps"]) for r in rows}, key=lambda c: (c[0] != "block", c[1], c[2]))
    for model, size, k in cells:
        got = {r["grad"]: r for r in rows if (r["model"], r["size"], r["steps"]) == (model, size, k)}
        cost = " | ".join(f"{got[e]['ms']:.0f} / {got[e]['peak_mib']:.0f}" for e in estimators)
        md.append(f"| {model} | {size} | {k} | {cost} |")
    md += [
        "",
        "NMF's forward residual ‖X̄_{K+1} − X̄_K‖ / ‖X̄_K‖ (how much one more step moves the reconstruction):",
        "",
        "| K | " + " | ".join(str(k) for k in residuals) + " |",
        "|---|" + "---:|" * len(residuals),
        "| residual | " + " | ".join(f"{v:.2%}" for v in residuals.values()) + " |",
    ]
    if cosines:
        ks = sorted(next(iter(cosines.values())))
        md += [
            "",
            "Direction of each estimator's ∂L/∂X against BPTT's (cosine similarity; NMF, float64, D 64, N 256, "
            "R 16, mean of 3 draws):",
            "",
            "| gradient | " + " | ".join(f"K = {k}" for k in ks) + " |",
            "|---|" + "---:|" * len(ks),
        ]
        md += [f"| {e} | " + " | ".join(f"{c[k]:.3f}" for k in ks) + " |" for e, c in cosines.items()]
    return md


def _plot(rows: list[dict], estimators, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["model"], r["size"]) for r in rows}, key=lambda c: (c[0] != "block", c[1]))
    fig, axes = plt.subplots(2, len(cells), figsize=(4.2 * len(cells), 6.4), squeeze=False)
    for j, (model, size) in enumerate(cells):
        for e in estimators:
            pts = sorted(
                (r["steps"], r["ms"], r["peak_mib"])
                for r in rows
                if (r["model"], r["size"], r["grad"]) == (model, size, e)
            )
            axes[0, j].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=e)
            axes[1, j].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=e)
        axes[0, j].set_title(f"{model} {size}²", fontsize=9)
        axes[1, j].set_xlabel("K")
    axes[0, 0].set_ylabel("training step (ms)")
    axes[1, 0].set_ylabel("peak memory (MiB)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
