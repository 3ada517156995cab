"""`hamburger seq compare`: mixers inside the same causal Transformer, same width, depth, budget and seeds.

* ``--task mqar``: recall accuracy for every N in ``lengths`` and number of pairs in ``pairs``, or for the listed
  ``cells`` (``--cells 64:8,256:32``; cells with 3·pairs > N are skipped); one seed per cell, three for N = 256
  with 32 pairs; 3,000 steps per run unless told; the mixer-free control (``none``) at the shortest N only.
* ``--task lm``: test bits per character of the character model over ``seeds`` (default 0, 1, 2), with the unigram
  and bigram models' beside them.

Resumable: each run trains into its own folder (``out/<cell>/<mixer>/seed<n>``) and writes ``result.json`` when
tested. Writes ``seq-compare-<task>.md`` / ``.json`` (with parameter counts: equal within 5% by construction) and a
plot.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ...engine.common import machine_info, mean_std, run_shards, save_figure, write_results
from ...engine.config import config_dict, require_distinct
from ...engine.results import load_result, recipe_of, save_result
from ...sequence import HYBRIDS, MIXERS, model_state_floats
from ..config import HAM_OPTIONS, SeqTrainConfig, free_fields_of, mixer_kwargs
from ..eval import load_run, test_metrics
from ..train import train

THREE_SEED_CELL = (256, 32)


def _result_free(config: SeqTrainConfig) -> frozenset:
    """The fields that do not decide a stored result: :func:`free_fields_of` but the validation interval (it picks the
    best weights)."""
    return free_fields_of(config) - {"val_interval"}


def recipe_for(config: SeqTrainConfig) -> dict:
    """What decides a run's result: its config but :func:`_result_free`."""
    return recipe_of(config, _result_free(config))


def _run_one(config: SeqTrainConfig, *, progress: bool) -> dict:
    done, recipe = config.out / "result.json", recipe_for(config)
    # refuses a result of another recipe, naming what differs; a field added since reads as its earlier value, and
    # the attention arms' results saved with the Ham's fields are read without them
    cached = load_result(done, recipe, legacy=SeqTrainConfig.LEGACY_DEFAULTS, ignore=_result_free(config))
    if cached is not None:
        return cached
    if progress:
        print(
            f"== {config.task} {config.mixer} N {config.seq_len} seed {config.seed}: {config.iters} steps", flush=True
        )
    train(config)
    model, _ = load_run(config.out)  # the best validation weights
    log = [json.loads(line) for line in (config.out / "log.jsonl").read_text().splitlines()]
    key = "val_accuracy" if config.task == "mqar" else "val_bpc"
    curve = [(r["step"], r["time"], r[key]) for r in log if key in r]
    record = {
        "mixer": config.mixer,
        "seed": config.seed,
        "seq_len": config.seq_len,
        "pairs": config.pairs,
        "iters": config.iters,
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": log[-1]["time"],
        "curve": curve,
        **{k: v for k, v in test_metrics(model, config).items() if k != "corpus_files"},
    }
    return save_result(done, recipe, record)


# steps of a sweep run unless told: at 1,000 softmax attention had left the plateau only at N 64 and in one seed of
# N 256 / 32 pairs; at 3,000 it recalls 100% there (docs/results/sequences.md)
MQAR_ITERS = 3000


def plan(
    task: str, mixers, *, seeds=None, lengths=(64, 256, 512), pairs=(8, 32), base: SeqTrainConfig, out: Path, cells=None
) -> list[SeqTrainConfig]:
    """Every run of the comparison, seeds outermost within a cell so a partial sweep stays balanced. MQAR's cells:
    ``cells`` ((N, pairs), ...) when given, else every N in ``lengths`` with every count in ``pairs``; a cell needs
    3 x pairs <= N."""
    runs = []
    if task == "mqar":
        grid = [(n, p) for n, p in (cells or [(n, p) for n in lengths for p in pairs]) if 3 * p <= n]
        shortest = min((n for n, _ in grid), default=None)
        for n, p in grid:
            for seed in seeds or ((0, 1, 2) if (n, p) == THREE_SEED_CELL else (0,)):
                for mixer in mixers:
                    if mixer == "none" and n != shortest:  # the control: at chance everywhere, kept where cheap
                        continue
                    runs.append(
                        dataclasses.replace(
                            base,
                            seq_len=n,
                            pairs=p,
                            mixer=mixer,
                            seed=seed,
                            out=out / f"N{n}-P{p}" / mixer / f"seed{seed}",
                        )
                    )
    else:
        for seed in seeds or (0, 1, 2):
            for mixer in mixers:
                runs.append(dataclasses.replace(base, mixer=mixer, seed=seed, out=out / mixer / f"seed{seed}"))
    return runs


def run(
    *,
    task: str = "mqar",
    mixers=("ham_nmf", "softmax", "linear", "none"),
    seeds=None,
    lengths=(64, 256, 512),
    pairs=(8, 32),
    cells=None,
    out=Path("results/seq-mqar"),
    progress: bool = True,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    base: SeqTrainConfig | None = None,
    **fields,
) -> dict:
    """Train and test every run (resumable); write the table and the plot. Every run starts from ``base`` (default:
    seq train's configuration) with ``fields`` replaced: the Ham arms' options (:data:`HAM_OPTIONS`), ``device``,
    ``iters`` (None: the task's) or any other :class:`SeqTrainConfig` field (the tests' tiny sizes). ``shard=(i, n)``
    trains only every n-th run from the i-th and writes nothing else; ``jobs=n`` starts n such processes (the cores
    split), each reading the comparison from ``out/shards.json``, then writes the tables."""
    mixers = require_distinct(mixers, "mixers")
    seeds = require_distinct(seeds, "seeds") if seeds is not None else None
    lengths, pairs = require_distinct(lengths, "lengths"), require_distinct(pairs, "pairs")
    unknown = [m for m in mixers if m not in (*MIXERS, *HYBRIDS)]
    if unknown or not mixers:
        raise ValueError(f"unknown mixers {unknown}; available: {', '.join((*MIXERS, *HYBRIDS))}")
    out = Path(out)
    base = base or SeqTrainConfig()
    iters = fields.pop("iters", None) or (MQAR_ITERS if task == "mqar" else base.iters)
    run_fields = {"task": task, "resume": True, "no_tensorboard": True, "quiet": not progress, "iters": iters}
    base = dataclasses.replace(base, **run_fields, **fields)
    cells = require_distinct(tuple(tuple(c) for c in cells), "cells") if cells else None
    runs = plan(task, mixers, seeds=seeds, lengths=lengths, pairs=pairs, base=base, out=out, cells=cells)
    if not runs:
        asked = f"cells {list(cells)}" if cells else f"lengths {list(lengths)}, pairs {list(pairs)}"
        raise ValueError(f"no (N, pairs) cell fits 3 x pairs <= N: {asked}")
    out.mkdir(parents=True, exist_ok=True)  # only now: every run's configuration (and its mixer) was checked
    if jobs > 1 and shard is None:
        default = config_dict(SeqTrainConfig())
        changed = {k: v for k, v in config_dict(base).items() if v != default[k] and k not in run_fields}
        call = {"task": task, "mixers": mixers, "seeds": seeds, "lengths": lengths, "pairs": pairs, "cells": cells}
        if progress:
            print(f"training in {jobs} processes; logs in {out}/shard<i>of{jobs}.log", flush=True)
        call |= {"out": out, "progress": progress, "iters": iters}
        run_shards(f"{__name__}:run", {**call, **changed}, jobs=jobs, out=out)
    if shard is not None:
        runs = runs[shard[0] :: shard[1]]
    results = [_run_one(cfg, progress=progress) for cfg in runs]
    if shard is not None:
        return {"runs": results}
    md = _table(task, results, mixers) + state_table(mixers, sorted({r["seq_len"] for r in results}), base)
    info = {
        **machine_info(),
        "task": task,
        "iters": base.iters,
        "dim": base.dim,
        "depth": base.depth,
        "batch": base.batch_size,
        "heads": base.heads,
        "conv": base.conv,
        "lr": base.lr,
        **{name: getattr(base, name) for name in HAM_OPTIONS},
    }
    write_results(out, f"seq-compare-{task}", info, {"runs": results}, md)
    _plot(task, results, mixers, out)
    if progress:
        print("\n".join(md))
    return {"runs": results}


def state_table(mixers, lengths, config: SeqTrainConfig) -> list[str]:
    """Each mixer's recurrent state per layer after N tokens (floats, batch 1), measured by stepping it."""
    md = [
        "",
        f"Recurrent state per layer after N tokens (floats, batch 1; C {config.dim}, {config.heads} head(s), "
        f"Ham R {config.rank}{f', W {config.ham_width}' if config.ham_width else ''}, chunk {config.chunk}):",
        "",
        "| mixer | " + " | ".join(f"N {n}" for n in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for m in mixers:  # a hybrid's: the mean over its blocks (its window's keys and values counted)
        kw = dict(dim=config.dim, depth=config.depth, heads=config.heads, **mixer_kwargs(config, m))
        md.append(f"| {m} | " + " | ".join(f"{model_state_floats(m, n, **kw):,.0f}" for n in lengths) + " |")
    return md


def _mean_std(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.3f} ± {std:.3f}" if len(values) > 1 else f"{mean:.3f}"


def _table(task: str, results: list[dict], mixers) -> list[str]:
    params = {m: next(r["params"] for r in results if r["mixer"] == m) for m in mixers}
    spread = (max(params.values()) - min(params.values())) / max(params.values())
    md = [
        f"Parameters per arm: {', '.join(f'{m} {params[m] / 1e3:.1f}k' for m in mixers)} (spread {100 * spread:.1f}%).",
        "",
    ]
    if task == "mqar":
        cells = sorted({(r["seq_len"], r["pairs"]) for r in results})
        md += [
            "Test recall accuracy (%, mean ± std where several seeds):",
            "",
            "| mixer | " + " | ".join(f"N {n}, {p} pairs" for n, p in cells) + " |",
            "|---|" + "---:|" * len(cells),
        ]
        for m in mixers:
            row = []
            for n, p in cells:
                acc = [100 * r["accuracy"] for r in results if r["mixer"] == m and (r["seq_len"], r["pairs"]) == (n, p)]
                row.append(_mean_std(acc) if acc else "-")
            md.append(f"| {m} | " + " | ".join(row) + " |")
    else:
        first = results[0]
        md += [
            f"Test bits per character on sympy {first.get('corpus_sha256', '')[:16]}… (unigram "
            f"{first['unigram_bpc']:.3f}, bigram {first['bigram_bpc']:.3f}):",
            "",
            "| mixer | test bpc | train minutes |",
            "|---|---:|---:|",
        ]
        for m in mixers:
            rs = [r for r in results if r["mixer"] == m]
            md.append(
                f"| {m} | {_mean_std([r['bpc'] for r in rs])} | {_mean_std([r['train_seconds'] / 60 for r in rs])} |"
            )
    return md


def _plot(task: str, results: list[dict], mixers, out: Path) -> None:
    """LM: the validation curves. MQAR: test accuracy against N per mixer (solid: the fewest pairs, dashed: more)
    beside the validation curves of the three-seed cell (or of every run when it is absent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = results
    if task == "mqar" and any((r["seq_len"], r["pairs"]) == THREE_SEED_CELL for r in results):
        shown = [r for r in results if (r["seq_len"], r["pairs"]) == THREE_SEED_CELL]  # the three-seed cell
    if task == "mqar":
        fig, (grid, ax) = plt.subplots(1, 2, figsize=(9.5, 3.4))
        styles = dict(zip(sorted({r["pairs"] for r in results}), ("-", "--", ":", "-.")))
        for k, m in enumerate(mixers):
            for p, style in styles.items():
                ns = sorted({r["seq_len"] for r in results if r["mixer"] == m and r["pairs"] == p})
                mine = [r for r in results if r["mixer"] == m and r["pairs"] == p]
                acc = [mean_std([100 * r["accuracy"] for r in mine if r["seq_len"] == n])[0] for n in ns]
                grid.plot(ns, acc, style, color=f"C{k}", marker="o", ms=3, label=f"{m}, {p} pairs")
        grid.set_xscale("log", base=2)
        grid.set_xlabel("sequence length N")
        grid.set_ylabel("test recall accuracy (%)")
        grid.set_ylim(-2, 102)
        grid.legend(fontsize=7)
        if shown is not results:
            ax.set_title(f"N {THREE_SEED_CELL[0]}, {THREE_SEED_CELL[1]} pairs, every seed", fontsize=9)
    else:
        fig, ax = plt.subplots(figsize=(5, 3.4))
    for k, m in enumerate(mixers):
        for i, r in enumerate(r for r in shown if r["mixer"] == m):
            steps = [c[0] for c in r["curve"]]
            ax.plot(steps, [c[2] for c in r["curve"]], color=f"C{k}", marker="o", ms=3, label=m if i == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy" if task == "mqar" else "validation bits per character")
    ax.legend(fontsize=8)
    save_figure(fig, out / f"seq-compare-{task}.png")
