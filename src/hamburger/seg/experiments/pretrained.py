"""`hamburger seg pretrained`: context heads on an ImageNet-pretrained EfficientNet-Lite0 and on the same architecture
from scratch, with one recipe and one budget, over seeds (issue 44's table).

An arm is a head of the ``efflite0`` family with an optional gradient through the Hamburger's solve,
``<head>[@<gradient>]`` (``hamnet@one-step``). Every (arm, initialisation, seed) is one :func:`compare.run_one` run
in ``out/<arm>-<init>/seed<s>``, resumable and read back when finished (its ``result.json`` is all a finished run
needs, so the finished runs of an interrupted plan can be kept and copied back). The heads train at ``lr x
head_lr_mult`` in both initialisations; the backbone at ``lr`` when pretrained and at the heads' rate from scratch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ...engine.common import machine_info, mean_std, run_shards, save_figure, write_results
from ...engine.config import require_distinct
from ...functional import DEFAULT_GRAD
from ..models import list_models
from ..scenes import cached
from . import compare

ARMS = ("hamnet", "hamnet@one-step", "nonlocal", "fcn")  # the trimmed set; add hamnet@bptt, lightham
INITS = ("pretrained", "scratch")
PRETRAINED = "package:efficientnet-lite0"


def parse_arm(arm: str) -> tuple[str, str | None]:
    """``"hamnet@one-step"`` -> ("hamnet", "one-step"); ``"nonlocal"`` -> ("nonlocal", None). An unknown head, or a
    gradient on a head without a Hamburger, is a ValueError (a gradient that does not parse fails the plan check)."""
    head, _, grad = arm.partition("@")
    if f"{head}_efflite0" not in list_models():
        heads = sorted(m.removesuffix("_efflite0") for m in list_models() if m.endswith("_efflite0"))
        raise ValueError(f"{arm!r}: unknown head {head!r}; heads: {', '.join(heads)}")
    if grad and not compare.has_ham(head):
        raise ValueError(f"{arm!r}: {head} holds no Hamburger, so it takes no gradient (@{grad})")
    return head, grad or None


def run_tag(arm: str, init: str) -> str:
    """The run folder of an (arm, init): ``hamnet@one-step``, ``scratch`` -> ``hamnet-grad=one-step-scratch``."""
    return arm.replace("@", "-grad=") + f"-{init}"


def run_plan(arms, inits, seeds, *, lr: float, head_lr_mult: float, pretrained: str):
    """(tag, head, overrides, seed) of every run, seed-major (a partial plan has whole seeds of every arm)."""
    runs = []
    for seed in seeds:
        for init in inits:
            for arm in arms:
                head, grad = parse_arm(arm)
                over: dict = {"model": f"{head}_efflite0", "lr": lr if init == "pretrained" else lr * head_lr_mult}
                if init == "pretrained":
                    over |= {"pretrained": pretrained, "head_lr_mult": head_lr_mult}
                if grad:
                    over["ham_grad"] = grad
                runs.append((run_tag(arm, init), head, over, seed))
    return runs


def run(
    *,
    arms=ARMS,
    inits=INITS,
    seeds=(0, 1, 2),
    iters: int = 3200,
    lr: float = 5e-4,
    head_lr_mult: float = 4.0,
    pretrained: str = PRETRAINED,
    batch: int = 16,
    val_interval: int = 100,
    max_val: int | None = None,
    data_root=None,
    out: Path = Path("results/pretrained"),
    device: str = "cpu",
    progress: bool = True,
    report_only: bool = False,
    shard: tuple[int, int] | None = None,
    jobs: int = 1,
) -> dict:
    """Train and test every (arm, init, seed) not yet finished, then write ``pretrained.md`` / ``.json`` and the
    curves. ``report_only``: train nothing, report the finished runs (the others listed as missing).
    ``shard=(i, n)`` trains every n-th unfinished run from the i-th and writes no table; ``jobs=n`` starts n such
    processes, waits for them, then writes the table."""
    arms, inits = require_distinct(arms, "arms"), require_distinct(inits, "inits")
    seeds = require_distinct(seeds, "seeds")
    if not inits or any(i not in INITS for i in inits):
        raise ValueError(f"inits must be among {INITS}, got {list(inits)}")
    if val_interval < 1:
        raise ValueError(
            f"each run's test reads its best validated checkpoint: val_interval must be >= 1, got {val_interval}"
        )
    out = Path(out)
    runs = run_plan(arms, inits, seeds, lr=lr, head_lr_mult=head_lr_mult, pretrained=pretrained)
    # every run's overrides set its own model, rate and weights, replacing the lr here
    common = dict(iters=iters, batch=batch, lr=lr, val_interval=val_interval, device=device, data_root=data_root)

    def args_of(tag, head, over, seed):
        config = compare.train_args(
            head,
            seed,
            out=out / tag / f"seed{seed}",
            max_val=max_val,
            workers=1,
            quiet=True,
            **common,
        )
        return dataclasses.replace(config, **over)

    # a result of another recipe in a run folder is refused here, before any training
    done = {(t, s): compare.finished(h, args_of(t, h, o, s)) for t, h, o, s in runs}
    todo = [r for r in runs if done[r[0], r[3]] is None]
    if not report_only:
        compare.check_runs([(h, o) for _, h, o, _ in todo])
    if progress and not report_only and shard is None:
        print(
            f"plan: {len(runs)} runs of {iters} steps, {len(runs) - len(todo)} finished; the other {len(todo)} take "
            f"about {plan_hours(todo, batch=batch, iters=iters):.1f} hours of this machine "
            f"({torch.get_num_threads()} threads)",
            flush=True,
        )
    out.mkdir(parents=True, exist_ok=True)
    if not report_only and todo:
        cached(Path(data_root) if data_root else None, progress=progress)
        if jobs > 1 and shard is None:
            print(f"training in {jobs} processes; logs in {out}/shard<i>of{jobs}.log", flush=True)
            call = dict(arms=arms, inits=inits, seeds=seeds, iters=iters, lr=lr, head_lr_mult=head_lr_mult)
            call |= dict(
                pretrained=pretrained, batch=batch, val_interval=val_interval, max_val=max_val, data_root=data_root
            )
            call |= dict(out=out, device=device, progress=progress)
            run_shards(f"{__name__}:run", call, jobs=jobs, out=out)
        else:
            mine = todo if shard is None else todo[shard[0] :: shard[1]]
            for i, (tag, head, over, seed) in enumerate(mine, 1):
                if progress:
                    print(f"[{i}/{len(mine)}] {tag} seed {seed}", flush=True)
                done[tag, seed] = compare.run_one(
                    head,
                    seed,
                    out=out,
                    max_val=max_val,
                    workers=1,
                    progress=progress,
                    overrides=over,
                    tag=tag,
                    **common,
                )
            if shard is not None:
                return {"runs": len(mine)}
        done = {(t, s): compare.finished(h, args_of(t, h, o, s)) for t, h, o, s in runs}
    results = {key: r for key, r in done.items() if r is not None}
    missing = [f"{tag} seed {seed}" for tag, _, _, seed in runs if done[tag, seed] is None]
    info = {
        **machine_info(),
        "arms": list(arms),
        "inits": list(inits),
        "seeds": list(seeds),
        "iters": iters,
        "batch": batch,
        "lr_backbone_pretrained": lr,
        "lr_heads": lr * head_lr_mult,
        "pretrained": pretrained,
        "default_grad": DEFAULT_GRAD,
        "missing_runs": missing,
    }
    rows = summarise(results, arms, inits)
    md = markdown(rows, info)
    runs_json = {f"{tag}/seed{seed}": r for (tag, seed), r in results.items()}
    write_results(out, "pretrained", info, {"rows": rows, "runs": runs_json}, md)
    plot_curves(results, arms, inits, out / "pretrained-curves.png")
    if progress:
        print("\n".join(md))
        print(f"wrote {out}/pretrained.md, .json, -curves.png")
    return {"machine": info, "rows": rows, "missing": missing}


def plan_hours(todo, *, batch: int, iters: int) -> float:
    """Hours of this machine for the ``todo`` runs, from a few timed steps of each distinct model (the weights and the
    learning rates do not change a step's cost)."""
    hours: dict[tuple, float] = {}
    for _, head, over, _ in todo:
        key = (head, over.get("ham_grad"))
        if key not in hours:
            hours[key] = compare.plan_hours(
                head, {k: over[k] for k in ("model", "ham_grad") if k in over}, batch=batch, iters=iters
            )
    return sum(hours[head, over.get("ham_grad")] for _, head, over, _ in todo)


def label(arm: str) -> str:
    head, grad = parse_arm(arm)
    name = compare.LABELS.get(head, head)
    return f"{name}, {grad} gradient" if grad else name


def summarise(results: dict, arms, inits) -> list[dict]:
    """One row per arm: test mIoU (points) mean, standard deviation and seed count for each initialisation."""
    rows = []
    for arm in arms:
        row: dict = {"arm": arm, "label": label(arm)}
        for init in inits:
            tag = run_tag(arm, init)
            mious = [100 * r["test_miou"] for (t, _), r in sorted(results.items()) if t == tag]
            mean, std = mean_std(mious) if mious else (float("nan"), float("nan"))
            row[init] = {"mean": mean, "std": std, "seeds": len(mious), "mious": mious}
            costs = [r["train_ms_per_iter"] for (t, _), r in results.items() if t == tag]
            row[f"{init}_train_ms"] = sum(costs) / len(costs) if costs else float("nan")
        rows.append(row)
    return rows


def _cell(stat: dict) -> str:
    if not stat["seeds"]:
        return "—"
    spread = f" ± {stat['std']:.1f}" if stat["seeds"] > 1 else ""
    return f"{stat['mean']:.1f}{spread} ({stat['seeds']})"


def _diff(have: dict, a: str, b: str) -> str:
    x, y = have[a], have[b]
    return f"{x['mean'] - y['mean']:+.1f} ({x['mean']:.1f} vs {y['mean']:.1f}, seeds {x['seeds']} / {y['seeds']})"


def answers(rows: list[dict]) -> list[str]:
    """The issue's three questions, answered from whatever seeds exist (each line names its seed counts)."""
    by = {r["arm"]: r for r in rows}
    lines = []
    for init in INITS:
        have = {a: r[init] for a, r in by.items() if init in r and r[init]["seeds"]}

        if "hamnet" in have and "nonlocal" in have:
            lines.append(f"- {init}: Hamburger − self-attention = {_diff(have, 'hamnet', 'nonlocal')}")
        if "hamnet" in have and "hamnet@one-step" in have:
            lines.append(f"- {init}: one-step − default gradient = {_diff(have, 'hamnet@one-step', 'hamnet')}")
        if "hamnet" in have and "hamnet@bptt" in have:
            gap, tol = have["hamnet"]["mean"] - have["hamnet@bptt"]["mean"], max(1.0, have["hamnet@bptt"]["std"])
            verdict = "within" if abs(gap) <= tol else "outside"
            lines.append(
                f"- {init}: default − BPTT = {_diff(have, 'hamnet', 'hamnet@bptt')}, {verdict} max(1, std) = {tol:.1f}"
            )
    return lines


def markdown(rows: list[dict], info: dict) -> list[str]:
    inits = info["inits"]
    md = [
        f"## animal-scenes test mIoU (seeds in brackets), {info['iters']} steps, batch {info['batch']}",
        "",
        "| head | " + " | ".join(inits) + (" | pretrained − scratch" if len(inits) == 2 else "") + " | train ms/step |",
        "|---|" + "---:|" * (len(inits) + (len(inits) == 2) + 1),
    ]
    for r in rows:
        cells = [_cell(r[i]) for i in inits]
        if len(inits) == 2:
            a, b = (r[i] for i in inits)
            cells.append(f"{a['mean'] - b['mean']:+.1f}" if a["seeds"] and b["seeds"] else "—")
        ms = [r[f"{i}_train_ms"] for i in inits if r[i]["seeds"]]
        cells.append(f"{sum(ms) / len(ms):.0f}" if ms else "—")
        md.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    md += ["", "### Answers", "", *(answers(rows) or ["- not enough finished runs yet"])]
    if info["missing_runs"]:
        md += ["", f"Not yet run ({len(info['missing_runs'])}): " + ", ".join(info["missing_runs"])]
    return md


def plot_curves(results: dict, arms, inits, path: Path) -> None:
    """Validation mIoU against the training step, one panel per initialisation, one colour per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(inits), figsize=(6 * len(inits), 4.2), sharey=True, squeeze=False)
    colours = plt.cm.tab10(range(len(arms)))
    for ax, init in zip(axes[0], inits):
        for arm, colour in zip(arms, colours):
            tag = run_tag(arm, init)
            mine = [r for (t, _), r in sorted(results.items()) if t == tag]
            for i, r in enumerate(mine):
                values = [100 * v for _, v in r["val_curve"]]
                ax.plot(r["val_steps"], values, "-", color=colour, alpha=0.8, label=label(arm) if i == 0 else None)
        ax.set_title(f"{init} backbone")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation mIoU (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
