"""`hamburger gan compare`: the same GAN, budget and seeds with a Hamburger, self-attention or no context block.

Resumable like `seg compare`: each (arm, seed) trains into ``out/<arm>/seed<n>`` and writes ``result.json`` when
evaluated; a killed run resumes from its checkpoint. The feature classifier of the offline metrics is trained once
into ``out/classifier.safetensors``. Writes ``gan-compare.md`` / ``.json`` (mean ± std over seeds of every metric,
median step time measured interleaved, parameters and FLOPs, the untrained generators' distances), the distance
curves against steps and against seconds, and a sample grid per arm.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ...engine.common import (
    interleaved_medians,
    machine_info,
    mean_std,
    run_shards,
    save_figure,
    write_results,
)
from ...engine.config import require_distinct
from ...engine.measure import count_flops
from ...engine.results import load_result, recipe_of, save_result
from ..config import RESUME_FREE, GANTrainConfig
from ..eval import get_classifier
from ..metrics import evaluate_samples, generate
from ..train import GANTask, build_pair, train

DEFAULT_ARMS = ("ham_nmf", "sagan", "none")
CURVE_POINTS = 6  # distances on the training curve (no flag: a --jobs run passes its own to the shards)
LABELS = {
    "ham_nmf": "Hamburger (NMF)",
    "ham_vq": "Hamburger (VQ)",
    "ham_cd": "Hamburger (CD)",
    "sagan": "self-attention (SAGAN)",
    "linear": "linear attention",
    "none": "no context block",
}


def _config(
    arm: str,
    seed: int,
    *,
    out: Path,
    iters: int,
    batch: int,
    dataset: str,
    data_root,
    device: str,
    classifier: Path | None,
    curve_points: int,
    quiet: bool,
    ema: float | None = None,
    ham_grad: str | None = None,
) -> GANTrainConfig:
    interval = max(1, iters // curve_points)
    extra = ({} if ema is None else {"ema": ema}) | (
        {"ham_grad": ham_grad} if ham_grad and arm.startswith("ham_") else {}
    )
    return GANTrainConfig(
        dataset=dataset,
        data_root=data_root,
        arm=arm,
        seed=seed,
        iters=iters,
        batch_size=batch,
        out=out,
        device=device,
        val_interval=interval,
        ckpt_interval=interval,
        eval_classifier=classifier,
        resume=True,
        no_tensorboard=True,
        quiet=quiet,
        **extra,
    )


def run_one(
    arm: str, seed: int, *, out: Path, classifier, reference, classifier_info: dict, samples: int, **kw
) -> dict:
    """Train (or resume) and evaluate one (arm, seed); cached in ``result.json``."""
    run_dir = out / arm / f"seed{seed}"
    config = _config(arm, seed, out=run_dir, classifier=out / "classifier.safetensors", **kw)
    done, recipe = run_dir / "result.json", _recipe(config, samples=samples, classifier_info=classifier_info)
    cached = load_result(done, recipe)  # refuses a result of another recipe, naming what differs
    if cached is not None:
        return cached
    result = train(config)
    pair = result["model"].cpu()
    fake, labels = generate(pair, samples, num_classes=reference.num_classes, conditional=config.conditional, seed=0)
    metrics = evaluate_samples(fake, labels, reference, classifier, classifier_info=classifier_info, seed=0)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["time"], r["val_frechet_distance"]) for r in log if "val_frechet_distance" in r]
    record = {
        "arm": arm,
        "seed": seed,
        "iters": config.iters,
        "batch": config.batch_size,
        **metrics,
        "train_seconds": log[-1]["time"],
        "curve": curve,
    }
    return save_result(done, recipe, record)


def _recipe(config: GANTrainConfig, *, samples: int, classifier_info: dict) -> dict:
    """What decides a run's numbers: its training recipe (the curve's interval and sample count included), the
    evaluation's sample count and the classifier's weights."""
    return recipe_of(
        config,
        RESUME_FREE - {"val_interval", "eval_samples"},
        samples=samples,
        classifier_sha256=classifier_info["sha256"],
    )


def _cached_or_none(path: Path, recipe: dict) -> dict | None:
    """A derived cache (untrained distances, step times) of this recipe, or None: another recipe's is recomputed."""
    try:
        return load_result(path, recipe)
    except ValueError:
        return None


def untrained_distances(arms, *, out: Path, classifier, reference, classifier_info, samples: int, kw) -> dict:
    """Each arm's generator at initialisation (seed 0): the reference point of "trained"."""
    cache = out / "untrained.json"
    configs = {arm: _config(arm, 0, out=out, classifier=None, **kw) for arm in arms}
    recipe = {arm: _recipe(c, samples=samples, classifier_info=classifier_info) for arm, c in configs.items()}
    cached = _cached_or_none(cache, recipe)
    if cached is not None:
        return {arm: cached[arm] for arm in arms}
    result = {}
    for arm, config in configs.items():
        torch.manual_seed(0)
        pair = build_pair(config, num_classes=reference.num_classes, image_channels=reference.channels)
        fake, labels = generate(pair, samples, num_classes=reference.num_classes, conditional=True, seed=0)
        result[arm] = evaluate_samples(fake, labels, reference, classifier, classifier_info=classifier_info, seed=0)
    save_result(cache, recipe, result)
    return result


def step_times(arms, *, repeats: int, kw) -> dict[str, float]:
    """Median seconds of one training step (D and G updates) per arm, the arms' steps interleaved."""
    from contextlib import nullcontext

    fns = {}
    for arm in arms:
        config = _config(arm, 0, out=Path("unused"), classifier=None, **{**kw, "quiet": True, "iters": repeats + 5})
        config.val_interval = 0
        task = GANTask()
        torch.manual_seed(0)
        pair, train_set, _, _ = task.build(config, torch.device(config.device))
        opt, _ = task.optimizer(pair, config)
        batches = iter(task.batches(train_set, config, world=1, rank=0, start=0))
        scaler = torch.amp.GradScaler(enabled=False)
        fns[arm] = lambda t=task, p=pair, o=opt, b=batches, c=config, s=scaler: t.train_step(
            p, b, o, s, c, torch.device(c.device), nullcontext
        )
    return interleaved_medians(fns, repeats=repeats, warmup=2)


def costs(arms, *, kw, num_classes: int, channels: int) -> dict[str, dict]:
    """Parameters and forward GFLOPs per sample of G and D for each arm."""
    out = {}
    for arm in arms:
        config = _config(arm, 0, out=Path("unused"), classifier=None, **kw)
        pair = build_pair(config, num_classes=num_classes, image_channels=channels).eval()
        z, y = torch.randn(1, config.z_dim), torch.tensor([0])
        x = pair.generator(z, y)
        out[arm] = {
            "params_g": sum(p.numel() for p in pair.generator.parameters()),
            "params_d": sum(p.numel() for p in pair.discriminator.parameters()),
            "gflops_g": count_flops(lambda p=pair, z=z, y=y: p.generator(z, y)) / 1e9,
            "gflops_d": count_flops(lambda p=pair, x=x, y=y: p.discriminator(x, y)) / 1e9,
        }
    return out


def run(
    *,
    arms=DEFAULT_ARMS,
    seeds=(0, 1, 2),
    iters: int = GANTrainConfig.iters,
    batch: int = 32,
    out: Path = Path("results/gan"),
    dataset: str = "silhouettes",
    data_root=None,
    device: str = "cpu",
    samples: int = 2000,
    curve_points: int = CURVE_POINTS,
    timing_repeats: int = 10,
    classifier_epochs: int = 4,
    ema: float | None = None,
    ham_grad: str | None = None,
    progress: bool = True,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Train and evaluate every (arm, seed) (resumable), then write the tables, curves and grids.

    ``shard=(i, n)`` trains only every n-th (seed, arm) from the i-th and writes no tables (several processes can
    share one ``out``); ``jobs=n`` starts n such processes (the cores split), waits for them, then writes the tables.
    """
    arms, seeds = require_distinct(arms, "arms"), require_distinct(seeds, "seeds")
    out = Path(out)
    kw = dict(
        iters=iters,
        batch=batch,
        dataset=dataset,
        data_root=data_root,
        device=device,
        curve_points=curve_points,
        quiet=not progress,
        ema=ema,
        ham_grad=ham_grad,
    )
    for arm in arms:  # every arm's networks built before the first one trains: a bad combination trains nothing
        try:
            build_pair(
                _config(arm, seeds[0] if seeds else 0, out=out, classifier=None, **kw), num_classes=10, image_channels=1
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"arm {arm}: {e}; nothing was trained") from None
    out.mkdir(parents=True, exist_ok=True)
    classifier, info, reference = get_classifier(
        dataset, data_root, 32, path=out / "classifier.safetensors", progress=progress, epochs=classifier_epochs
    )
    if samples > 2 * len(reference) and progress:
        print(f"note: {samples} generated images against {len(reference)} reference images", flush=True)
    if jobs > 1 and shard is None:
        if progress:
            print(f"training in {jobs} processes; logs in {out}/shard<i>of{jobs}.log", flush=True)
        call = dict(arms=arms, seeds=seeds, out=out, samples=samples, classifier_epochs=classifier_epochs)
        call |= {k: v for k, v in kw.items() if k != "quiet"} | {"progress": progress}
        run_shards(f"{__name__}:run", call, jobs=jobs, out=out)
    todo = [(seed, arm) for seed in seeds for arm in arms]  # arms interleaved per seed: a partial run stays balanced
    if shard is not None:
        todo = todo[shard[0] :: shard[1]]
    results = {}
    for seed, arm in todo:
        if progress:
            print(f"== {LABELS.get(arm, arm)}, seed {seed}: {iters} steps", flush=True)
        results[arm, seed] = run_one(
            arm, seed, out=out, classifier=classifier, reference=reference, classifier_info=info, samples=samples, **kw
        )
    if shard is not None:
        return {"runs": len(todo)}
    untrained = untrained_distances(
        arms, out=out, classifier=classifier, reference=reference, classifier_info=info, samples=samples, kw=kw
    )
    times_path = out / "step_times.json"
    times_recipe = {
        "repeats": timing_repeats,
        **{arm: recipe_of(_config(arm, 0, out=out, classifier=None, **kw), RESUME_FREE) for arm in arms},
    }
    times = _cached_or_none(times_path, times_recipe)
    if times is None:
        times = save_result(times_path, times_recipe, step_times(arms, repeats=timing_repeats, kw=kw), indent=None)
    times = {arm: times[arm] for arm in arms}
    cost = costs(arms, kw=kw, num_classes=reference.num_classes, channels=reference.channels)
    for arm in arms:
        src = out / arm / f"seed{seeds[0]}" / "samples" / "final.png"
        if src.is_file():
            shutil.copyfile(src, out / f"grid-{arm}.png")
    rows = {arm: [results[arm, s] for s in seeds] for arm in arms}
    info_all = {
        **machine_info(),
        "dataset": dataset,
        "iters": iters,
        "batch": batch,
        "lr_decay_from": GANTrainConfig.lr_decay_from,
        "ema": ema or 0.0,
        "seeds": list(seeds),
        "generated": samples,
        "reference": len(reference),
        "classifier_accuracy": info["accuracy"],
        "classifier_sha256": info["sha256"],
    }
    md = report(rows, untrained, times, cost, info)
    write_results(
        out,
        "gan-compare",
        info_all,
        {"runs": {a: r for a, r in rows.items()}, "untrained": untrained, "step_seconds": times, "costs": cost},
        md,
    )
    _curves(rows, out)
    if progress:
        print("\n".join(md))
    return {"rows": rows, "untrained": untrained, "step_seconds": times, "costs": cost}


def _fmt(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def report(rows: dict, untrained: dict, times: dict, cost: dict, info: dict) -> list[str]:
    """The comparison table and the acceptance checks, as Markdown lines."""
    n = len(next(iter(rows.values())))
    md = [
        f"Fréchet classifier distance (**not FID**: features of a classifier trained here on the GAN's training "
        f"split; held-out accuracy {100 * info['accuracy']:.1f}%, sha256 {info['sha256'][:16]}…), mean ± std over "
        f"{n} seed(s); lower is better.",
        "",
        "| arm | Fréchet cls. dist. | KID ×100 | precision | recall | cls. acc. on samples | rel. to real | "
        "ms/step | G+D params (M) | G+D GFLOPs/sample |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, runs in rows.items():
        c = cost[arm]
        md.append(
            f"| {LABELS.get(arm, arm)} | {_fmt([r['frechet_distance'] for r in runs])} | "
            f"{_fmt([r['kid'] for r in runs], 100)} | {_fmt([r['knn_precision'] for r in runs], digits=3)} | "
            f"{_fmt([r['knn_recall'] for r in runs], digits=3)} | "
            f"{_fmt([r['classifier_accuracy_fake'] for r in runs], 100, 1)}% | "
            f"{_fmt([r['relative_accuracy'] for r in runs], 100, 0)}% | {1e3 * times[arm]:.0f} | "
            f"{(c['params_g'] + c['params_d']) / 1e6:.3f} | {c['gflops_g'] + c['gflops_d']:.4f} |"
        )
    md += ["", "## Checks", ""]
    for arm, runs in rows.items():
        worst = max(r["frechet_distance"] for r in runs)
        start = untrained[arm]["frechet_distance"]
        rel = min(r["relative_accuracy"] for r in runs)
        mean = sum(r["relative_accuracy"] for r in runs) / len(runs)
        md.append(
            f"- {LABELS.get(arm, arm)}: worst trained distance {worst:.2f} vs untrained {start:.2f} "
            f"({'≤' if worst <= start / 4 else '>'} a quarter); class accuracy on samples {100 * mean:.0f}% "
            f"of real over the seeds ({'≥' if mean >= 0.6 else '<'} 60%), the worst seed's {100 * rel:.1f}% "
            f"({'≥' if rel >= 0.6 else '<'} 60%)"
        )
    return md


def _curves(rows: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for k, (arm, runs) in enumerate(rows.items()):
        color = f"C{k}"
        for i, r in enumerate(runs):
            steps, secs, dist = zip(*r["curve"]) if r["curve"] else ((), (), ())
            label = LABELS.get(arm, arm) if i == 0 else None
            axes[0].plot(steps, dist, color=color, alpha=0.8, marker="o", ms=3, label=label)
            axes[1].plot([s / 60 for s in secs], dist, color=color, alpha=0.8, marker="o", ms=3, label=label)
    for ax, xlabel in zip(axes, ("step", "minutes")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Fréchet classifier distance")
        ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[0].set_title("step-matched")
    axes[1].set_title("time-matched")
    save_figure(fig, out / "gan-compare-curves.png")
