"""`hamburger demo` and `hamburger seg compare`: the same small network with different context heads, trained and
tested on the embedded animal-scenes benchmark with the same budget, through the `hamburger seg` training code.

Each (head, seed) run lives in its own folder and writes ``result.json`` when done; a run killed part-way resumes
from its checkpoint, and finished runs are not repeated.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import torch

from ...data.silhouettes import CLASSES
from ...engine.checkpoint import load_model_weights, model_identity
from ...engine.common import machine_info, save_figure, write_results
from ...engine.config import require_distinct
from ...engine.measure import count_flops, median_time, peak_memory
from ...engine.results import load_result, recipe_of, save_result
from ...functional import DEFAULT_GRAD
from ..config import RESUME_FREE, SegTrainConfig
from ..data import build_dataset
from ..eval import evaluate, palette
from ..models import FAMILIES, holds_ham, list_models
from ..scenes import cached
from ..train import build_model, train
from ..transforms import SegTransform

DEMO_HEADS = ("hamnet", "nonlocal", "fcn")
BN_RECALIB = 10  # batches; 0 reproduces the demo's figures before docs/stability.md
LABELS = {
    "hamnet": "Hamburger (NMF)",
    "nonlocal": "self-attention (SDPA)",
    "fcn": "no context (matched convs)",
    "local": "local control (breads, no ham)",
    "ham_nmf": "Hamburger v1 NMF",
    "ham_vq": "Hamburger v1 VQ",
    "ham_cd": "Hamburger v1 CD",
    "danet": "DANet",
    "ema": "EMANet",
    "ccnet": "CCNet",
    "linear": "linear attn",
    "a2net": "A2-Net",
    "gcnet": "GCNet",
    "nonlocal_naive": "self-attention (naive)",
}


# the fields that configure the Hamburger (the heads without one ignore them)
HAM_FIELDS = frozenset({f.name for f in dataclasses.fields(SegTrainConfig) if f.name.startswith("ham_")} | {"rank"})


def _plan(head: str, family: str, pretrained: str | None, head_lr_mult: float, ham_grad: str | None):
    """(overrides, run folder tag) of a head's runs: None and None for the tiny family without options, as the demo's
    runs were stored."""
    over = {"ham_grad": ham_grad} if ham_grad and has_ham(head) else {}
    if family != "tiny":
        over["model"] = f"{head}_{family}"
    if pretrained:
        over["pretrained"] = pretrained
    if head_lr_mult != 1.0:
        over["head_lr_mult"] = head_lr_mult
    extra = {k: v for k, v in over.items() if k != "ham_grad"}
    suffix = ("-pretrained" if pretrained else "") + (f"-headlr{head_lr_mult:g}" if head_lr_mult != 1.0 else "")
    tag = f"{head}_{family}{suffix}" if extra else None
    return over or None, tag


def model_config(head: str, overrides: dict | None = None, *, pretrained: bool = True) -> SegTrainConfig:
    """A configuration that builds the head's model as its runs do (``overrides`` applied; without the pretrained
    weights unless ``pretrained``): what the plan check, the cost estimate and the prediction plot build."""
    args = train_args(
        head,
        0,
        out=Path("."),
        data_root=None,
        iters=1,
        batch=1,
        lr=1e-3,
        val_interval=1,
        max_val=None,
        workers=0,
        quiet=True,
    )
    args = dataclasses.replace(args, **(overrides or {}))
    return args if pretrained else dataclasses.replace(args, pretrained=None)


def plan_hours(head: str, overrides: dict | None, *, batch: int, iters: int, steps: int = 3) -> float:
    """Hours of ``iters`` training steps of the head's model at the demo's batch and crop on this machine, from the
    median of ``steps`` timed steps (random weights and inputs: the cost, not the result)."""
    model = build_model(model_config(head, overrides, pretrained=False), len(CLASSES), torch.device("cpu")).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.randn(batch, 3, 128, 128), torch.randint(0, len(CLASSES), (batch, 128, 128))

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x)["out"], y).backward()
        optimizer.step()

    return median_time(step, repeats=steps) * iters / 3600


def has_ham(head: str) -> bool:
    """Whether the ``<head>_tiny`` model holds a Hamburger (``hamnet``, ``ham_nmf``, ``ham_vq``, ``ham_cd``)."""
    return holds_ham(f"{head}_tiny")


def train_args(
    head: str,
    seed: int,
    *,
    out: Path,
    data_root,
    iters: int,
    batch: int,
    lr: float,
    val_interval: int,
    max_val: int | None,
    workers: int,
    quiet: bool,
    ham_precision: str | None = None,
    device: str = "cpu",
    bn_recalib: int = BN_RECALIB,
) -> SegTrainConfig:
    """The `hamburger seg train` configuration of one run: the demo's recipe on animal-scenes (BatchNorm statistics
    recomputed from ``bn_recalib`` training batches before each evaluation: docs/stability.md)."""
    return SegTrainConfig(
        dataset="animal-scenes",
        data_root=data_root,
        model=f"{head}_tiny",
        ham_precision=ham_precision,
        out=out,
        crop_size=128,
        scale_range=(1.0, 1.0),
        batch_size=batch,
        iters=iters,
        optimizer="adamw",
        lr=lr,
        weight_decay=0.0,
        bias_lr_mult=1.0,
        aux_weight=0.0,
        workers=workers,
        seed=seed,
        val_interval=val_interval,
        max_val_samples=max_val,
        ckpt_interval=val_interval,
        resume=True,
        no_tensorboard=True,
        quiet=quiet,
        device=device,
        bn_recalib=bn_recalib,
    )


def check_runs(runs) -> None:
    """Build the model of every distinct (head, overrides) run of a plan before the first one trains: a combination
    that cannot be built (a Ham without the asked gradient, a bad override) is a ValueError naming the run."""
    seen = []
    for head, overrides in runs:
        if (head, overrides) in seen:
            continue
        seen.append((head, overrides))
        try:
            build_model(model_config(head, overrides), len(CLASSES), torch.device("cpu"))
        except (TypeError, ValueError) as e:
            over = f" with {overrides}" if overrides else ""
            raise ValueError(f"{head}{over}: {e}; nothing was trained") from None


def _train_ms(log: list[dict]) -> float:
    """Median milliseconds of a training iteration (steps followed by a validation are left out)."""
    diffs = [b["time"] - a["time"] for a, b in zip(log, log[1:]) if "val_miou" not in b]
    return 1e3 * statistics.median(diffs) if diffs else float("nan")


def run_one(
    head: str,
    seed: int,
    *,
    out: Path,
    data_root,
    iters,
    batch,
    lr,
    val_interval,
    max_val,
    workers,
    progress: bool,
    ham_precision: str | None = None,
    overrides: dict | None = None,
    tag: str | None = None,
    device: str = "cpu",
    bn_recalib: int = BN_RECALIB,
) -> dict:
    """Train, select on validation and test one (head, seed); ``overrides`` replace fields of the demo's
    :class:`SegTrainConfig` (a variant, stored under ``out/tag``)."""
    run_dir = out / (tag or f"{head}_tiny") / f"seed{seed}"
    args = train_args(
        head,
        seed,
        out=run_dir,
        data_root=data_root,
        iters=iters,
        batch=batch,
        lr=lr,
        val_interval=val_interval,
        max_val=max_val,
        workers=workers,
        quiet=not progress,
        ham_precision=ham_precision,
        device=device,
        bn_recalib=bn_recalib,
    )
    if overrides:
        args = dataclasses.replace(args, **overrides)
    cached = finished(head, args)
    if cached is not None:
        return cached
    run_dir.mkdir(parents=True, exist_ok=True)
    if progress:
        variant = f" [{tag}]" if tag else ""
        print(f"== {LABELS.get(head, head)} ({args.model}){variant}, seed {seed}: {iters} iterations", flush=True)
    torch.manual_seed(seed)
    train(args)
    model = build_model(args, len(CLASSES), torch.device("cpu"))
    # selected on the validation split; the identity check catches a run folder of another configuration
    load_model_weights(
        model, run_dir / "best.safetensors", model_identity(model, name=args.model, num_classes=len(CLASSES))
    )
    model.eval()
    test = build_dataset("animal-scenes", data_root, "test", transform=SegTransform(train=False))
    metrics = evaluate(model.to(device), test, device=device)
    model.cpu()  # the inference figures below are CPU figures
    x = torch.randn(1, 3, 128, 128)

    def infer():
        with torch.no_grad():
            return model(x)

    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    result = {
        "head": head,
        "model": args.model,
        "seed": seed,
        "iters": iters,
        "batch": batch,
        "variant": tag,
        "overrides": {k: str(v) for k, v in (overrides or {}).items()},
        "test_miou": metrics["miou"],
        "test_iou": metrics["iou"],
        "ham_precision": ham_precision or "fp32",
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": count_flops(infer) / 1e9,
        "train_ms_per_iter": _train_ms(log),
        "infer_ms_per_image": 1e3 * median_time(infer, repeats=5),
        "infer_peak_mib": peak_memory(infer, torch.device("cpu")) / 2**20,
        "val_curve": [(r["time"], r["val_miou"]) for r in log if "val_miou" in r],
        "val_steps": [r["step"] for r in log if "val_miou" in r],
    }
    return save_result(run_dir / "result.json", _recipe(args), result, indent=2)


def _recipe(args: SegTrainConfig) -> dict:
    """What decides a run's result: its configuration but the fields free to change on resume, and the test split."""
    return recipe_of(args, RESUME_FREE, test_split="test")


def finished(head: str, args: SegTrainConfig) -> dict | None:
    """The result stored in the run folder ``args.out`` if this recipe produced it, else None; a result of another
    recipe is a ValueError naming what differs (the Hamburger's fields do not reach a head without one)."""
    ignore = frozenset() if has_ham(head) else HAM_FIELDS
    return load_result(Path(args.out) / "result.json", _recipe(args), ignore=ignore)


def run(
    *,
    heads: tuple[str, ...] = DEMO_HEADS,
    seeds: tuple[int, ...] = (0,),
    iters: int = 800,
    batch: int = 16,
    lr: float = 2e-3,
    val_interval: int = 100,
    max_val: int | None = None,
    workers: int = 1,
    data_root: Path | None = None,
    out: Path = Path("results/compare"),
    progress: bool = True,
    title: str = "compare",
    ham_precision: str | None = None,
    device: str = "cpu",
    bn_recalib: int = BN_RECALIB,
    ham_grad: str | None = None,
    family: str = "tiny",
    pretrained: str | None = None,
    head_lr_mult: float = 1.0,
) -> dict:
    """Train and test every (head, seed) (resumable), then write ``<title>.md`` / ``.json`` and the plots.
    ``ham_grad`` sets the gradient through the solve of every head with a Hamburger (default: the variant's).
    ``family``: the backbone under the heads (``tiny``: ``<head>_tiny``; ``efflite0``: ``<head>_efflite0``), with
    ``pretrained`` weights (``package:efficientnet-lite0``) fine-tuned at the heads' LR x ``head_lr_mult``; the runs
    of another family than the tiny one are stored under ``out/<head>_<family>[-pretrained]``."""
    heads, seeds = require_distinct(heads, "heads"), require_distinct(seeds, "seeds")
    if val_interval < 1:  # each run's test reads its best validated checkpoint
        raise ValueError(
            f"a comparison validates to pick each run's best checkpoint: val_interval must be >= 1, got {val_interval}"
        )
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {family!r}")
    unknown = [h for h in heads if f"{h}_{family}" not in list_models()]
    if unknown:
        choices = sorted(m[: -len(f"_{family}")] for m in list_models() if m.endswith(f"_{family}"))
        raise ValueError(f"unknown heads {unknown}; available: {', '.join(choices)}")
    plans = {h: _plan(h, family, pretrained, head_lr_mult, ham_grad) for h in heads}
    check_runs([(h, over) for h, (over, _) in plans.items()])
    if progress and family != "tiny":  # a long plan says what it costs before it starts
        hours = sum(plan_hours(h, over, batch=batch, iters=iters) for h, (over, _) in plans.items()) * len(seeds)
        threads = torch.get_num_threads()
        print(
            f"plan: {len(heads) * len(seeds)} runs of {iters} steps, about {hours:.2f} hours of this machine "
            f"({threads} threads; finished runs are read, not trained again)",
            flush=True,
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_root) if data_root else None
    cached(data_root, progress=progress)
    results = [
        run_one(
            h,
            s,
            out=out,
            data_root=data_root,
            iters=iters,
            batch=batch,
            lr=lr,
            val_interval=val_interval,
            max_val=max_val,
            workers=workers,
            progress=progress,
            ham_precision=ham_precision,
            device=device,
            bn_recalib=bn_recalib,
            overrides=plans[h][0],
            tag=plans[h][1],
        )
        for s in seeds
        for h in heads
    ]
    summary = summarise(results, heads)
    info = {
        **machine_info(),
        "seeds": list(seeds),
        "iters": iters,
        "batch": batch,
        "lr": lr,
        "dataset": "animal-scenes",
        "ham_precision": ham_precision or "fp32",
        "train_device": str(device),
        "bn_recalib": bn_recalib,
        "ham_grad": ham_grad or f"the variants' ({DEFAULT_GRAD})",
        **({"family": family, "pretrained": pretrained, "head_lr_mult": head_lr_mult} if family != "tiny" else {}),
    }
    md = markdown(summary, info)
    _write(out, title, info, results, summary, md)
    _plot_curves(results, heads, out / f"{title}-curves.png")
    _plot_predictions(out, plans, seeds[0], data_root, out / f"{title}-predictions.png")
    if progress:
        print("\n".join(md))
        print(f"wrote {out}/{title}.md, .json, -curves.png, -predictions.png")
    return {"machine": info, "results": results, "summary": summary}


def summarise(results: list[dict], heads) -> list[dict]:
    rows = []
    for h in heads:
        mine = [r for r in results if r["head"] == h]
        mious = [100 * r["test_miou"] for r in mine]
        rows.append(
            {
                "head": h,
                "label": LABELS.get(h, h),
                "seeds": len(mine),
                "miou_mean": statistics.mean(mious),
                "miou_std": statistics.stdev(mious) if len(mious) > 1 else 0.0,
                **{
                    k: statistics.mean(r[k] for r in mine)
                    for k in ("params", "gflops", "train_ms_per_iter", "infer_ms_per_image", "infer_peak_mib")
                },
            }
        )
    return rows


def markdown(summary: list[dict], info: dict) -> list[str]:
    md = [
        f"## animal-scenes test mIoU, {len(info['seeds'])} seed(s), {info['iters']} iterations, batch {info['batch']}",
        "",
        "| head | test mIoU | params (M) | GFLOPs | train ms/iter | inference ms/image | inference peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(summary, key=lambda r: -r["miou_mean"]):
        pm = f" ± {r['miou_std']:.1f}" if r["seeds"] > 1 else ""
        md.append(
            f"| {r['label']} | {r['miou_mean']:.1f}{pm} | {r['params'] / 1e6:.3f} | {r['gflops']:.2f} | "
            f"{r['train_ms_per_iter']:.0f} | {r['infer_ms_per_image']:.1f} | {r['infer_peak_mib']:.1f} |"
        )
    return md


def _write(out: Path, title: str, info, results, summary, md) -> None:
    write_results(out, title, info, {"summary": summary, "runs": results}, md)


def _plot_curves(results, heads, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.cm.tab10(range(len(heads)))
    for h, colour in zip(heads, colours):
        for i, r in enumerate(x for x in results if x["head"] == h):
            t, m = zip(*r["val_curve"]) if r["val_curve"] else ((), ())
            ax.plot(
                t,
                [100 * v for v in m],
                "-o",
                color=colour,
                markersize=3,
                alpha=0.8,
                label=LABELS.get(h, h) if i == 0 else None,
            )
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("animal-scenes: validation mIoU against training time")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def _plot_predictions(out: Path, plans: dict, seed: int, data_root, path: Path, n: int = 6) -> None:
    """Test images, their labels and each head's prediction (``plans``: head -> (overrides, run folder tag))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    test = build_dataset("animal-scenes", data_root, "test", transform=SegTransform(train=False))
    colours = palette(len(CLASSES))
    models, heads = {}, list(plans)
    for h in heads:
        over, tag = plans[h]
        model = build_model(model_config(h, over, pretrained=False), len(CLASSES), torch.device("cpu"))
        load_model_weights(model, out / (tag or f"{h}_tiny") / f"seed{seed}" / "best.safetensors")
        models[h] = model.eval()
    fig, axes = plt.subplots(n, 2 + len(heads), figsize=(2 * (2 + len(heads)), 2 * n))
    for i in range(n):
        image, label = test[i]
        raw, _ = test.read(i)
        cells = [raw, colours[label.numpy().astype(np.uint8)]]
        with torch.no_grad():
            for h in heads:
                pred = models[h](image[None])["out"].argmax(1)[0].numpy().astype(np.uint8)
                cells.append(colours[pred])
        for j, cell in enumerate(cells):
            axes[i][j].imshow(cell)
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
            if i == 0:
                axes[i][j].set_title(["scene", "ground truth", *[LABELS.get(h, h) for h in heads]][j], fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
