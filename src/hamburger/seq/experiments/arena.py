"""`hamburger seq arena`: the causal mixers by the Zoology protocol (Arora et al., 2023), scaled to a CPU.

One model per (mixer, width, learning rate) trains on a mixture of MQAR cells (N, pairs) and is tested on every test
cell, longer ones and more pairs than the mixture included; for each (mixer, width) the learning rate with the best
validation recall is kept (as Zoology does), and ``seeds`` beyond the first run at that learning rate only, so each
reported figure is a mean over the seeds. Each mixer's state per layer is counted both by Zoology's formula
(:func:`formula_state`) and by stepping its recurrent form, so recall is drawn against state. Resumable (a run's
``result.json`` is read back when its recipe matches), ``jobs`` / ``shard`` like ``seq compare``; the plan's
core-hours, from 50 timed steps per (mixer, width), are printed before anything trains and bounded by ``max_hours``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

import torch

from ...engine.common import machine_info, mean_std, run_shards, save_figure, write_results
from ...engine.config import config_dict, require_distinct
from ...engine.results import load_result, recipe_of, save_result
from ...sequence import HYBRIDS, MIXERS, block_mixers, model_state_floats
from ..config import SeqTrainConfig, free_fields_of, mixer_kwargs
from ..data import parse_cells
from ..eval import load_run
from ..train import VOCAB, _Pairs, build_model, evaluate_model, mqar, split_data, train

# Zoology trains on 64:4, 128:8, 256:16, 256:32, 256:64 (vocabulary 8,192) and tests up to N 1,024; here the
# vocabulary is seq train's 256 (127 keys) and N at most 512, so that 2 cores train a model in minutes
TRAIN_CELLS = "64:4,128:8,256:16,256:32"
TEST_CELLS = "64:4,64:16,128:8,128:32,256:16,256:32,256:64,512:32,512:64"
DIMS = (32, 64, 128)
ARENA_MIXERS = ("ham_nmf", "deltanet", "gated_deltanet", "mamba2", "based", "linear", "swa", "softmax")
ITERS = 3000  # seq compare's MQAR budget
LRS = (5e-4, 2e-3, 8e-3)
TEST_EXAMPLES = 500  # per test cell
WINDOW, FEATURES = 64, 16  # sliding-window attention's window and Based's feature dimension (hamburger.recurrent)


def formula_state(name: str, tokens: int, config: SeqTrainConfig) -> float:
    """Floats of state per layer as Zoology counts it (its mixers' ``state_size``): attention 2·N·C, a window
    2·w·C, the delta rule and Mamba-2 H·dk·dv, linear attention H·d·(d + 1), Based H·F·(dv + 1) with F the Taylor
    map's 153 features; the Ham (not in Zoology): its D·R + R² + (L − 1)·D per head (2·D·R under
    ``fit="delta"``); a hybrid: the mean over its blocks."""
    c, h = config.dim, config.heads
    d = c // h
    per = {
        "softmax": 2 * tokens * c,
        "swa": 2 * WINDOW * c,
        "linear": h * d * (d + 1),
        "based": h * (1 + FEATURES + FEATURES * (FEATURES + 1) // 2) * (d + 1),
        "deltanet": h * d * d,
        "gated_deltanet": h * d * d,
        "mamba2": h * d * d,
        "none": 0,
    }
    width = (config.ham_width or c) // h
    if config.ham_fit == "delta":  # the dictionary now and at the chunk's start
        ham = h * 2 * width * config.rank
    else:
        ham = h * (width * config.rank + config.rank**2 + (config.chunk - 1) * width)
    blocks = block_mixers(name, config.depth)
    return sum(ham if m.startswith("ham_") else per[m] for m in blocks) / len(blocks)


def _tag(lr: float) -> str:
    return f"lr{lr:g}"


def plan(
    mixers, dims, lrs, seeds, *, base: SeqTrainConfig, out: Path, best: dict | None = None
) -> list[SeqTrainConfig]:
    """The runs: every (mixer, width, learning rate) at the first seed, then — given ``best`` {(mixer, width): lr} —
    the other seeds at each pair's best learning rate (none for a pair without one)."""
    runs = []
    for m in mixers:
        for dim in dims:
            later = [(best[m, dim], s) for s in seeds[1:]] if best and (m, dim) in best else []
            for lr, seed in [(lr, seeds[0]) for lr in lrs] + later:
                where = out / m / f"d{dim}" / _tag(lr) / f"seed{seed}"
                runs.append(dataclasses.replace(base, mixer=m, dim=dim, lr=lr, seed=seed, out=where))
    return runs


def _recipe(config: SeqTrainConfig, test_cells: str) -> dict:
    return recipe_of(config, free_fields_of(config) - {"val_interval"}, test_cells=test_cells)


def _test_cells(model, config: SeqTrainConfig, cells) -> dict:
    recall = {}
    for j, (n, p) in enumerate(cells):
        data = _Pairs(*mqar(TEST_EXAMPLES, seq_len=n, pairs=p, vocab=VOCAB, seed=(config.data_seed + 7) * 1_000 + j))
        recall[f"{n}:{p}"] = evaluate_model(model, data, "mqar", device="cpu")["accuracy"]
    return recall


def stored(config: SeqTrainConfig, test_cells: str) -> dict | None:
    """The finished run's record if this recipe produced it, else None (another recipe's is a ValueError)."""
    return load_result(config.out / "result.json", _recipe(config, test_cells), legacy=SeqTrainConfig.LEGACY_DEFAULTS)


def run_one(config: SeqTrainConfig, test_cells: str, *, progress: bool) -> dict:
    """Train one model on the mixture (resumable), test it on every cell, count its state; the record is cached."""
    cached = stored(config, test_cells)
    if cached is not None:
        return cached
    if progress:
        print(f"== {config.mixer} C {config.dim} LR {config.lr:g} seed {config.seed}: {config.iters} steps", flush=True)
    train(config)
    model, _ = load_run(config.out)  # the best validation weights
    log = [json.loads(line) for line in (config.out / "log.jsonl").read_text().splitlines()]
    longest = max(n for n, _ in parse_cells(test_cells))
    kw = dict(dim=config.dim, depth=config.depth, heads=config.heads, **mixer_kwargs(config))
    record = {
        "mixer": config.mixer,
        "dim": config.dim,
        "lr": config.lr,
        "seed": config.seed,
        "params": sum(p.numel() for p in model.parameters()),
        "val_accuracy": max(r["val_accuracy"] for r in log if "val_accuracy" in r),
        "final_loss": [r for r in log if "val_accuracy" in r][-1]["loss"],  # the tie-break of best_lrs
        "train_seconds": log[-1]["time"],
        "recall": _test_cells(model.eval(), config, parse_cells(test_cells)),
        "state_formula": formula_state(config.mixer, longest, config),
        "state_stepped": model_state_floats(config.mixer, longest, **kw),
        "state_at": longest,
        "cpu": machine_info()["cpu"],  # runs of one plan may come from different machines
    }
    return save_result(config.out / "result.json", _recipe(config, test_cells), record)


def step_seconds(config: SeqTrainConfig, steps: int = 50) -> float:
    """Seconds per training step of ``config``'s model on its mixture, timed over ``steps`` steps here."""
    model = build_model(config)
    data = split_data(dataclasses.replace(config, train_examples=config.batch_size), "train")
    inputs, targets = data.inputs[: config.batch_size], data.targets[: config.batch_size]
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def best_lrs(results: list[dict], mixers, dims, seed: int) -> dict:
    """{(mixer, width): the learning rate whose first-seed model recalled most on the validation mixture}, for the
    pairs with a first-seed run. Ties (several rates at 100% on the training mixture) go to the lower training loss
    at the last validation: the better fit, chosen without the test cells."""
    best = {}
    for m in mixers:
        for dim in dims:
            mine = [r for r in results if (r["mixer"], r["dim"], r["seed"]) == (m, dim, seed)]
            if mine:
                best[m, dim] = max(mine, key=lambda r: (r["val_accuracy"], -r["final_loss"]))["lr"]
    return best


def run(
    *,
    mixers=ARENA_MIXERS,
    dims=DIMS,
    lrs=LRS,
    seeds=(0,),
    train_cells: str = TRAIN_CELLS,
    test_cells: str = TEST_CELLS,
    out=Path("results/seq-arena"),
    progress: bool = True,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    max_hours: float = 30.0,
    phase: int = 0,
    report_only: bool = False,
    also: tuple[tuple[str, Path], ...] = (),
    base: SeqTrainConfig | None = None,
    **fields,
) -> dict:
    """Train and test the arena (resumable); write ``seq-arena.md`` / ``.json`` and the recall-against-state plot.
    ``fields`` replace fields of ``base`` (seq train's configuration with the task, the mixture and N set here): the
    Ham's options, ``iters``, ``device``, the tests' tiny sizes. ``shard=(i, n)`` trains every n-th run of phase
    ``phase`` (0: every learning rate at the first seed; 1: the other seeds at the best ones) and writes nothing
    else; ``jobs=n`` runs each phase in n such processes, each reading the call from ``out/shards.json``.
    ``report_only``: train nothing; the tables of the finished runs (a learning rate is the best of those finished,
    the runs not yet made are counted). ``also``: (label, folder) pairs of other arenas (a Ham variant's, run with
    other Ham options into another ``out``) whose rows join this report's table and plot, each mixer named
    ``"<mixer> (<label>)"``, read from the ``seq-arena.json`` their own report wrote."""
    mixers, dims = require_distinct(mixers, "mixers"), require_distinct(dims, "widths")
    lrs, seeds = require_distinct(lrs, "learning rates"), require_distinct(seeds, "seeds")
    unknown = [m for m in mixers if m not in (*MIXERS, *HYBRIDS)]
    if unknown:
        raise ValueError(f"unknown mixers {unknown}; available: {', '.join((*MIXERS, *HYBRIDS))}")
    train_cells = ",".join(f"{n}:{p}" for n, p in parse_cells(train_cells))
    test_cells = ",".join(f"{n}:{p}" for n, p in parse_cells(test_cells))
    longest = max(n for n, _ in (*parse_cells(train_cells), *parse_cells(test_cells)))
    out = Path(out)
    run_fields = {"task": "mqar", "train_cells": train_cells, "seq_len": longest, "resume": True}
    run_fields |= {"no_tensorboard": True, "quiet": not progress}
    base = dataclasses.replace(base or SeqTrainConfig(), **run_fields, **fields)
    first = plan(mixers, dims, lrs, seeds, base=base, out=out)  # every run's configuration is checked here

    def second(results: list[dict]) -> list[SeqTrainConfig]:
        best = best_lrs(results, mixers, dims, seeds[0])
        return [c for c in plan(mixers, dims, lrs, seeds, base=base, out=out, best=best) if c.seed != seeds[0]]

    def trained(runs: list[SeqTrainConfig]) -> list[dict]:
        return [run_one(c, test_cells, progress=progress) for c in runs]

    if report_only:
        results = [r for r in (stored(c, test_cells) for c in first) if r is not None]
        planned = len(first) + len(mixers) * len(dims) * (len(seeds) - 1)
        results += [r for r in (stored(c, test_cells) for c in second(results)) if r is not None]
        return _report(results, mixers, dims, seeds, base, test_cells, train_cells, lrs, out, progress, planned, also)
    if shard is not None:  # one process of a --jobs run: its share of one phase
        runs = first if phase == 0 else second(trained(first))
        return {"runs": trained(runs[shard[0] :: shard[1]])}
    out.mkdir(parents=True, exist_ok=True)
    hours = (
        sum(step_seconds(next(c for c in first if (c.mixer, c.dim) == (m, d))) for m in mixers for d in dims)
        * base.iters
        * (len(lrs) + len(seeds) - 1)
        / 3600
    )
    count = len(mixers) * len(dims) * (len(lrs) + len(seeds) - 1)
    if progress:
        print(f"plan: {count} runs of {base.iters} steps, about {hours:.2f} hours of this machine", flush=True)
    if hours > max_hours:
        raise ValueError(
            f"the plan needs about {hours:.1f} hours, more than max_hours={max_hours:g}: trim widths or cells, "
            "or raise it"
        )
    default = config_dict(SeqTrainConfig())
    changed = {k: v for k, v in config_dict(base).items() if v != default[k] and k not in run_fields}
    call = {"mixers": mixers, "dims": dims, "lrs": lrs, "seeds": seeds, "train_cells": train_cells}
    call |= {"test_cells": test_cells, "out": out, "progress": progress, "max_hours": max_hours, **changed}
    if jobs > 1:
        run_shards(f"{__name__}:run", {**call, "phase": 0}, jobs=jobs, out=out)
    results = trained(first)
    if len(seeds) > 1:
        if jobs > 1:
            run_shards(f"{__name__}:run", {**call, "phase": 1}, jobs=jobs, out=out)
        results += trained(second(results))
    return _report(results, mixers, dims, seeds, base, test_cells, train_cells, lrs, out, progress, count, also)


def joined(also: tuple[tuple[str, Path], ...], test_cells: str) -> tuple[list[dict], list[dict]]:
    """The rows and runs of other arenas' reports, each mixer renamed ``"<mixer> (<label>)"``; their test cells must
    be these."""
    rows, runs = [], []
    for label, folder in also:
        path = Path(folder) / "seq-arena.json"
        if not path.is_file():
            raise ValueError(f"{path} does not exist: run that arena (or its --report-only) first")
        theirs = json.loads(path.read_text())
        if theirs["machine"]["test_cells"] != test_cells:
            raise ValueError(f"{path} tests other cells ({theirs['machine']['test_cells']}) than {test_cells}")
        rows += [{**r, "mixer": f"{r['mixer']} ({label})"} for r in theirs["results"]["rows"]]
        runs += theirs["results"]["runs"]
    return rows, runs


def _report(
    results, mixers, dims, seeds, base, test_cells, train_cells, lrs, out: Path, progress, planned, also=()
) -> dict:
    """Write ``seq-arena.md`` / ``.json`` and the plot of ``results`` and of the ``also`` arenas' rows (``planned``:
    the plan's run count)."""
    other_rows, other_runs = joined(also, test_cells)
    rows = summary(results, mixers, dims, seeds) + other_rows
    md = table(rows, test_cells)
    if len(results) < planned:
        md += ["", f"{len(results)} of the plan's {planned} runs are finished; the others are not in this table."]
    cpus = Counter(r.get("cpu", "not recorded") for r in (*results, *other_runs))
    md += ["", "Runs by CPU: " + ", ".join(f"{c} ({n})" for c, n in sorted(cpus.items())) + "."]
    info = {**machine_info(), "train_cells": train_cells, "test_cells": test_cells, "iters": base.iters}
    info |= {"lrs": list(lrs), "seeds": list(seeds), "depth": base.depth, "heads": base.heads, "vocab": VOCAB}
    info |= {"runs_finished": len(results), "runs_planned": planned, "also": {k: str(v) for k, v in also}}
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, "seq-arena", info, {"rows": rows, "runs": results}, md)
    _plot(rows, out)
    if progress:
        print("\n".join(md))
    return {"rows": rows, "runs": results}


def summary(results: list[dict], mixers, dims, seeds) -> list[dict]:
    """One row per (mixer, width): its best learning rate, the recall of every test cell and their mean (means and
    spreads over the seeds run at that learning rate), and its state by both counts."""
    best = best_lrs(results, mixers, dims, seeds[0])
    rows = []
    for m in mixers:
        for dim in dims:
            if (m, dim) not in best:
                continue
            mine = [r for r in results if (r["mixer"], r["dim"], r["lr"]) == (m, dim, best[m, dim])]
            cells = list(mine[0]["recall"])
            recall = {c: mean_std([100 * r["recall"][c] for r in mine]) for c in cells}
            mean = mean_std([100 * sum(r["recall"].values()) / len(cells) for r in mine])
            rows.append(
                {
                    "mixer": m,
                    "dim": dim,
                    "lr": best[m, dim],
                    "seeds": len(mine),
                    "recall": recall,
                    "mean": mean,
                    "state_formula": mine[0]["state_formula"],
                    "state_stepped": mine[0]["state_stepped"],
                    "state_at": mine[0]["state_at"],
                    "params": mine[0]["params"],
                }
            )
    return rows


def table(rows: list[dict], test_cells: str) -> list[str]:
    cells = [f"{n}:{p}" for n, p in parse_cells(test_cells)]
    at = rows[0]["state_at"] if rows else 0
    md = [
        f"Test recall (%) per cell N:pairs at each (mixer, width)'s best learning rate (mean ± std over the seeds run "
        f"there); state per layer at N {at} (floats), by Zoology's formula and measured by stepping:",
        "",
        "| mixer | C | LR | seeds | state (formula) | state (stepped) | mean | " + " | ".join(cells) + " |",
        "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(cells),
    ]
    for r in rows:
        each = " | ".join(f"{r['recall'][c][0]:.1f}" for c in cells)
        state = f"{r['state_formula']:,.0f} | {r['state_stepped']:,.0f}"
        md.append(f"| {r['mixer']} | {r['dim']} | {r['lr']:g} | {r['seeds']} | {state} | {r['mean'][0]:.1f} | {each} |")
    return md


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, m in enumerate(dict.fromkeys(r["mixer"] for r in rows)):  # 20 distinct colours, then the markers differ
        mine = sorted((r for r in rows if r["mixer"] == m), key=lambda r: r["state_stepped"])
        style = dict(color=plt.get_cmap("tab20")(i % 20), marker="osD^v<>"[i // 10 % 7], linestyle="-")
        ax.plot([max(r["state_stepped"], 1) for r in mine], [r["mean"][0] for r in mine], label=m, **style)
    ax.set_xscale("log")
    ax.set_xlabel("state per layer (floats, measured by stepping)")
    ax.set_ylabel("mean test recall (%)")
    ax.set_title("MQAR recall against state (the arena)")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    save_figure(fig, out / "seq-arena.png")
