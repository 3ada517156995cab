"""`hamburger estimators`: which gradient through the ham's solve trains the best head, and at what cost.

The demo's recipe on animal-scenes (``hamnet_tiny``: v2 NMF, R 16, 800 iterations), one run per (estimator, K,
seed) through `seg compare`'s run layout, resumable, self-attention (SDPA) beside them from the same command:

1. every estimator of :data:`SHORT` at K = 6;
2. BPTT and the two best estimators of phase 1 whose memory does not grow with K (everything but BPTT; best by mean
   test mIoU) again at K = 12, and the two best of those that also leave the forward unchanged when they differ —
   the choice is recomputed from phase 1's stored results, so a resumed run makes it again, identically.

The **target** (issue "The gradient through the solve, part 2"): an estimator with fixed memory in K whose mean test
mIoU is at least BPTT's mean − max(1.0, BPTT's std) at both K. The **rule** for the default: of those that meet the
target at K = 12 *and leave the forward unchanged*, the cheapest in peak training memory, then time per step
(memory within 5% counts as a tie); BPTT if none does. The forward condition is ours, not the issue's: a phantom
gradient with λ < 1 damps the last k steps in evaluation too, so as a default it would change what every model
computes — the paper's forward, and that of weights converted from its code, would no longer be the default's.
Writes ``estimators.md`` / ``.json`` and ``estimators.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...data.silhouettes import CLASSES
from ...engine.common import atomic_write_text, machine_info, mean_std, run_shards, save_figure
from ...engine.config import require_distinct
from ...engine.measure import median_time, peak_memory
from ...functional import damps_forward, parse_grad
from ..scenes import cached
from ..train import build_model
from .compare import run_one, train_args

SHORT = ("one-step", "bptt", "truncated:1", "truncated:2", "phantom:1:0.5", "phantom:2:0.5", "implicit", "implicit:1")
SHORT_STEPS, LONG_STEPS = 6, 12
SEEDS = (0, 1, 2)
ATTENTION = "nonlocal"
MEMORY_TIE = 0.05  # peak memories within 5% are a tie, then time per step decides


def grows_with_k(grad: str) -> bool:
    """Whether an estimator's training memory grows with K (BPTT only; a fixed k does not)."""
    return parse_grad(grad).kind == "bptt"


def run_tag(grad: str | None, steps: int) -> str:
    """``<grad>-K<steps>`` for a Hamburger run (colons become underscores in folder names), ``attention`` else."""
    return ATTENTION if grad is None else f"{grad.replace(':', '_')}-K{steps}"


def _overrides(grad: str, steps: int) -> dict:
    return {"ham_grad": grad, "ham_steps": steps, "ham_eval_steps": steps}


def train_cost(grad: str | None, steps: int, *, batch: int = 16, repeats: int = 5) -> tuple[float, float]:
    """(peak CPU memory in MiB, median milliseconds) of one training step (forward, loss, backward) of the run's model
    at the demo's batch and crop, the memory beyond what the model's weights already hold. Measured once per
    configuration, one after another in this process — not from the training logs, whose times depend on whatever
    else shared the machine."""
    head = ATTENTION if grad is None else "hamnet"
    args = train_args(
        head,
        0,
        out=Path("."),
        data_root=None,
        iters=1,
        batch=batch,
        lr=2e-3,
        val_interval=1,
        max_val=None,
        workers=0,
        quiet=True,
    )
    if grad is not None:
        import dataclasses

        args = dataclasses.replace(args, **_overrides(grad, steps))
    torch.manual_seed(0)
    model = build_model(args, len(CLASSES), torch.device("cpu")).train()
    x = torch.randn(batch, 3, 128, 128)
    y = torch.randint(0, len(CLASSES), (batch, 128, 128))

    def step():
        torch.nn.functional.cross_entropy(model(x)["out"], y).backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up: lazily created buffers are not the step's memory
    peak = peak_memory(step, torch.device("cpu")) / 2**20
    return peak, 1e3 * median_time(step, repeats=repeats)


def _train(runs, *, out: Path, seeds, iters: int, data_root, device: str, progress: bool) -> dict:
    results = {}
    for i, (grad, steps, seed) in enumerate(runs, 1):
        tag = run_tag(grad, steps)
        if progress:
            print(f"[{i}/{len(runs)}] {tag} seed {seed}", flush=True)
        results[tag, seed] = run_one(
            ATTENTION if grad is None else "hamnet",
            seed,
            out=out,
            data_root=data_root,
            iters=iters,
            batch=16,
            lr=2e-3,
            val_interval=100,
            max_val=None,
            workers=1,
            progress=progress,
            overrides=None if grad is None else _overrides(grad, steps),
            tag=tag,
            device=device,
        )
    return results


def short_plan(estimators, seeds) -> list[tuple[str | None, int, int]]:
    """Phase 1: every estimator at K = 6 and self-attention, seed-major so that an interrupted run has all rows."""
    return [(g, SHORT_STEPS, s) for s in seeds for g in (*estimators, None)]


def keeps_forward(grad: str) -> bool:
    """Whether an estimator leaves the forward (and so evaluation) as the paper's solve: all but a damped phantom."""
    return not damps_forward(grad)


def pick_long(summary: dict[str, dict], count: int = 2) -> list[str]:
    """The ``count`` fixed-memory estimators of phase 1 with the best mean test mIoU, then the ``count`` best of those
    that keep the forward where they are others (ties: the order of SHORT)."""
    fixed = [g for g in summary if g != "attention" and not grows_with_k(g)]
    fixed.sort(key=lambda g: -summary[g]["miou_mean"])
    best = fixed[:count]
    return best + [g for g in [g for g in fixed if keeps_forward(g)][:count] if g not in best]


def _summary(results: dict, grads, steps: int, seeds) -> dict[str, dict]:
    rows = {}
    for grad in (*grads, None):
        mine = [results[run_tag(grad, steps), s] for s in seeds if (run_tag(grad, steps), s) in results]
        if not mine:
            continue
        mean, std = mean_std([100 * r["test_miou"] for r in mine])
        rows[grad or "attention"] = {
            "miou_mean": mean,
            "miou_std": std,
            "mious": [100 * r["test_miou"] for r in mine],
            "train_ms_per_iter": sum(r["train_ms_per_iter"] for r in mine) / len(mine),
        }
    return rows


def meets_target(row: dict, bptt: dict) -> bool:
    """Mean test mIoU at least BPTT's mean − max(1.0, BPTT's std)."""
    return row["miou_mean"] >= bptt["miou_mean"] - max(1.0, bptt["miou_std"])


def choose_default(short: dict[str, dict], long: dict[str, dict]) -> tuple[str, str]:
    """The rule: of the fixed-memory estimators that keep the forward and meet the target at both K, the cheapest at
    K = 12 (peak memory, ties within 5% broken by time per step); BPTT if none. Returns (estimator, the reason)."""
    ok = [
        g
        for g in long
        if g not in ("attention", "bptt")
        and keeps_forward(g)
        and meets_target(long[g], long["bptt"])
        and g in short
        and meets_target(short[g], short["bptt"])
    ]
    if not ok:
        return "bptt", (
            "no estimator with fixed memory in K that keeps the forward met the target at both K = 6 and K = 12"
        )
    least = min(long[g]["peak_mib"] for g in ok)
    tied = [g for g in ok if long[g]["peak_mib"] <= least * (1 + MEMORY_TIE)]
    best = min(tied, key=lambda g: long[g]["step_ms"])
    return best, f"meets the target at K = 6 and 12 ({', '.join(ok)} do), least memory then time per step of those"


def run(
    *,
    out: Path,
    estimators=SHORT,
    seeds=SEEDS,
    iters: int = 800,
    data_root=None,
    device: str = "cpu",
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    jobs: int = 1,
    long: tuple[str, ...] | None = None,
) -> dict:
    """Both phases (resumable), the tables and the plot. ``shard=(i, n)`` trains every n-th run of a phase only (phase 2
    when ``long`` is given); ``jobs=n`` runs each phase in n such processes, the cores split between them."""
    estimators, seeds = require_distinct(tuple(estimators), "estimators"), require_distinct(tuple(seeds), "seeds")
    if "bptt" not in estimators:
        raise ValueError("the estimator table needs 'bptt' (the target is measured against it)")
    if long is not None:
        long = require_distinct(tuple(long), "--long estimators")
        if "bptt" not in long:
            raise ValueError("--long needs 'bptt' (the long phase's target is measured against it)")
    for g in (*estimators, *(long or ())):
        parse_grad(g)  # a clear error before hours of training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_root) if data_root else None
    cached(data_root, progress=progress)
    kw = {"out": out, "seeds": seeds, "iters": iters, "data_root": data_root, "device": device, "progress": progress}
    # the call a shard process reads from out/shards.json, phase 2's with its gradients
    call = dict(estimators=estimators, seeds=seeds, iters=iters, data_root=data_root, device=device, out=out)
    call |= dict(progress=progress)
    if shard is not None:
        index, count = shard
        runs = [(g, LONG_STEPS, s) for s in seeds for g in long] if long else short_plan(estimators, seeds)
        _train(runs[index::count], **kw)
        return {}
    if jobs > 1:
        print(f"phase 1 (K = {SHORT_STEPS}) in {jobs} processes; logs in {out}/shard<i>of{jobs}.log", flush=True)
        run_shards(f"{__name__}:run", call, jobs=jobs, out=out)
    short_results = _train(short_plan(estimators, seeds), **kw)
    short = _summary(short_results, estimators, SHORT_STEPS, seeds)
    long = list(long) if long else ["bptt", *pick_long(short)]
    if jobs > 1:
        print(f"phase 2 (K = {LONG_STEPS}: {', '.join(long)}) in {jobs} processes", flush=True)
        run_shards(f"{__name__}:run", {**call, "long": long}, jobs=jobs, out=out)
    long_results = _train([(g, LONG_STEPS, s) for s in seeds for g in long], **kw)
    long_rows = _summary(long_results, long, LONG_STEPS, seeds)
    long_rows.pop("attention", None)
    for steps, rows in ((SHORT_STEPS, short), (LONG_STEPS, long_rows)):
        for grad, row in rows.items():
            row["peak_mib"], row["step_ms"] = train_cost(None if grad == "attention" else grad, steps)
            row["fixed_memory"] = grad != "attention" and not grows_with_k(grad)
    default, why = choose_default(short, long_rows)
    info = {**machine_info(), "iters": iters, "seeds": list(seeds), "threads": torch.get_num_threads()}
    md = markdown(short, long_rows, default, why, info)
    atomic_write_text(out / "estimators.md", "\n".join(md) + "\n")
    payload = {
        "machine": info,
        "short_steps": SHORT_STEPS,
        "long_steps": LONG_STEPS,
        "short": short,
        "long": long_rows,
        "default": default,
        "why": why,
    }
    atomic_write_text(out / "estimators.json", json.dumps(payload, indent=1))
    plot(short, long_rows, out / "estimators.png")
    if progress:
        print("\n".join(md))
    return payload


def markdown(short: dict, long: dict, default: str, why: str, info: dict) -> list[str]:
    md = ["# The gradient through the solve: estimators on animal-scenes", ""]
    md += [f"- {k}: {v}" for k, v in info.items()]
    for steps, rows in ((SHORT_STEPS, short), (LONG_STEPS, long)):
        bptt = rows["bptt"]
        md += [
            "",
            f"## K = {steps}",
            "",
            f"target: mean ≥ BPTT's mean − max(1.0, BPTT's std) = {bptt['miou_mean'] - max(1.0, bptt['miou_std']):.1f}",
            "",
            "| gradient | test mIoU (mean ± std) | seeds | ms / step (alone) | ms / iteration (training log) "
            "| peak training MiB | fixed memory in K | keeps the forward | meets the target |",
            "|---|---:|---|---:|---:|---:|---|---|---|",
        ]
        for grad, r in sorted(rows.items(), key=lambda kv: -kv[1]["miou_mean"]):
            seeds = " / ".join(f"{v:.1f}" for v in r["mious"])
            target = "—" if grad in ("attention", "bptt") else ("yes" if meets_target(r, bptt) else "no")
            label = "self-attention (SDPA)" if grad == "attention" else grad
            fixed = "—" if grad == "attention" else ("yes" if r["fixed_memory"] else "no")
            forward = "—" if grad == "attention" else ("yes" if keeps_forward(grad) else "no (damped)")
            md.append(
                f"| {label} | {r['miou_mean']:.1f} ± {r['miou_std']:.1f} | {seeds} | "
                f"{r['step_ms']:.0f} | {r['train_ms_per_iter']:.0f} | {r['peak_mib']:.0f} | {fixed} "
                f"| {forward} | {target} |"
            )
    md += ["", f"**Default by the rule: `{default}`** — {why}."]
    return md


def plot(short: dict, long: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    colors = {g: f"C{i}" for i, g in enumerate(dict.fromkeys([*short, *long]))}  # one colour per estimator
    for ax, (steps, rows) in zip(axes, ((SHORT_STEPS, short), (LONG_STEPS, long))):
        for grad, r in rows.items():
            ax.errorbar(
                r["peak_mib"],
                r["miou_mean"],
                yerr=r["miou_std"],
                marker="o",
                capsize=3,
                color=colors[grad],
                label="self-attention" if grad == "attention" else grad,
            )
        bptt = rows["bptt"]
        ax.axhline(bptt["miou_mean"] - max(1.0, bptt["miou_std"]), color="gray", ls="--", lw=1, label="target")
        ax.set_title(f"K = {steps}")
        ax.set_xlabel("peak training memory (MiB, batch 16, 128²)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test mIoU (3 seeds)")
    fig.tight_layout()
    save_figure(fig, path)
