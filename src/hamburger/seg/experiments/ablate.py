"""`hamburger ablate`: the paper's ablations on the embedded benchmark, with the demo's recipe, one resumable command.

Rows are `hamnet_tiny` (v2 NMF, R 16, K 6, the default gradient, random bases) with one thing changed, trained and
tested through `seg compare`'s run layout (``out/<row>/seed<n>``; identical configurations share one run). The
rows that test one of the paper's findings (the ham, the breads, the ham type, the gradient) default to three seeds,
the sweeps (version, init, K in training, R) to one. K at test is swept on the reference runs by evaluation only.
Writes ``ablate.md`` / ``ablate.json`` (mean ± std per row, and beside each finding whether this benchmark
agrees, with the numbers and the seed spread) and one plot per sweep.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from ...data.silhouettes import CLASSES
from ...engine.checkpoint import file_sha256, load_model_weights
from ...engine.common import atomic_write_text, machine_info, mean_std, run_shards, save_figure
from ...engine.config import require_distinct
from ...engine.results import load_result, save_result
from ...functional import DEFAULT_GRAD, parse_grad
from ...ham import Ham
from ..data import build_dataset
from ..eval import evaluate
from ..scenes import cached
from ..train import build_model
from ..transforms import SegTransform
from .compare import check_runs, model_config, run_one

FINDING_SEEDS = (0, 1, 2)
_PAPERS_GRADS = ("one-step", "bptt")
SWEEP_SEEDS = (0,)
TEST_STEPS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30)  # the paper's K-at-test sweep

# (group, label, head, overrides of the demo's SegTrainConfig)
ROWS: tuple[tuple[str, str, str, dict], ...] = (
    ("ham", "Hamburger (NMF)", "hamnet", {}),
    ("ham", "no ham: breads only", "local", {}),
    ("breads", "both breads", "hamnet", {}),
    ("breads", "no lower bread", "hamnet", {"ham_breads": "upper"}),
    ("breads", "no upper bread", "hamnet", {"ham_breads": "lower"}),
    ("ham type", "NMF", "hamnet", {}),
    ("ham type", "VQ", "hamnet", {"ham_type": "vq"}),
    ("ham type", "CD", "hamnet", {"ham_type": "cd"}),
    ("gradient", "one-step (the paper's)", "hamnet", {"ham_grad": "one-step"}),
    # the library's default gradient, when it is neither of the paper's two (the reference's runs)
    *(
        [("gradient", f"{DEFAULT_GRAD} (the default)", "hamnet", {"ham_grad": DEFAULT_GRAD})]
        if DEFAULT_GRAD not in _PAPERS_GRADS
        else []
    ),
    ("gradient", "BPTT", "hamnet", {"ham_grad": "bptt"}),
    ("gradient", "no gradient", "hamnet", {"ham_grad": "none"}),
    ("version", "v1", "hamnet", {"ham_version": "v1"}),
    ("version", "v2", "hamnet", {}),
    ("version", "v2+", "hamnet", {"ham_version": "v2+"}),
    ("init", "random", "hamnet", {}),
    ("init", "online", "hamnet", {"ham_init": "online"}),
    *(("K train", f"K={k}", "hamnet", {"ham_steps": k, "ham_eval_steps": k} if k != 6 else {}) for k in (1, 3, 6, 10)),
    *(("R", f"R={r}", "hamnet", {"rank": r} if r != 16 else {}) for r in (8, 16, 32, 64)),
)
FINDINGS = ("ham", "breads", "ham type", "gradient")
SWEEPS = ("version", "init", "K train", "R")
GROUPS = (*FINDINGS, *SWEEPS)  # ``--groups``: the K-at-test sweep comes with "K train"


def with_grad(head: str, overrides: dict, ham_grad: str | None) -> dict:
    """A row's overrides with ``ham_grad`` (``--ham-grad``) as every Hamburger row's gradient unless the row sets its
    own (the gradient rows); a gradient equal to the models' default is left out, so equal runs share one folder.
    Where a row trains with fewer steps K than ``truncated:k`` or ``phantom:k:λ`` unroll, k becomes K (truncated:K is
    BPTT)."""
    over = dict(overrides)
    if head == "hamnet" and ham_grad is not None:
        over.setdefault("ham_grad", ham_grad)
    spec = parse_grad(over.get("ham_grad", DEFAULT_GRAD))
    steps = over.get("ham_steps", 6)
    if spec.kind in ("truncated", "phantom") and spec.k > steps:  # the K-train sweep's K 1: at most K steps unroll
        over["ham_grad"] = "bptt" if spec.kind == "truncated" else str(spec._replace(k=steps))
    if over.get("ham_grad") == DEFAULT_GRAD:
        del over["ham_grad"]
    return over


def run_tag(head: str, overrides: dict) -> str:
    """One folder per distinct configuration: ``hamnet`` for the reference, else head + sorted overrides."""
    if not overrides:
        return f"{head}-ref" if head == "hamnet" else head
    return head + "-" + "-".join(f"{k.removeprefix('ham_')}={v}" for k, v in sorted(overrides.items()))


def plan(finding_seeds=FINDING_SEEDS, sweep_seeds=SWEEP_SEEDS, ham_grad: str | None = None, groups=GROUPS):
    """Distinct (tag, head, overrides, seed) runs of the rows of ``groups``, reference first."""
    runs: dict[tuple[str, int], tuple[str, str, dict, int]] = {}
    reference = run_tag("hamnet", with_grad("hamnet", {}, ham_grad))
    for group, _, head, over in ROWS:
        if group not in groups:
            continue
        over = with_grad(head, over, ham_grad)
        for seed in finding_seeds if group in FINDINGS else sweep_seeds:
            tag = run_tag(head, over)
            runs.setdefault((tag, seed), (tag, head, over, seed))
    return sorted(runs.values(), key=lambda r: (r[0] != reference, r[3], r[0]))


def test_steps_sweep(out: Path, seeds, *, data_root, device: str, ham_grad: str | None = None):
    """Test mIoU of the reference runs' best checkpoints evaluated with K = 1 … 30 steps (no training)."""
    reference = with_grad("hamnet", {}, ham_grad)
    test = build_dataset("animal-scenes", data_root, "test", transform=SegTransform(train=False))
    scores: dict[int, list[float]] = {k: [] for k in TEST_STEPS}
    for seed in seeds:
        run_dir = out / run_tag("hamnet", reference) / f"seed{seed}"
        cache = run_dir / "test_steps.json"
        weights = run_dir / "best.safetensors"
        recipe = {"test_steps": list(TEST_STEPS), "weights_sha256": file_sha256(weights)}
        cached = load_result(cache, recipe)  # refuses numbers of other weights or another K list
        if cached is not None:
            for k in TEST_STEPS:
                scores[k].append(cached[str(k)])
            continue
        # the reference's own gradient: a damped phantom gradient changes the forward
        model = build_model(model_config("hamnet", reference), len(CLASSES), torch.device(device))
        load_model_weights(model, weights)
        hams = [m for m in model.modules() if isinstance(m, Ham)]
        per = {}
        for k in TEST_STEPS:
            for ham in hams:  # the same weights, another K at test
                ham.eval_steps = k
            per[k] = 100 * evaluate(model.eval(), test, device=device)["miou"]
            scores[k].append(per[k])
        save_result(cache, recipe, {str(k): v for k, v in per.items()}, indent=None)
    return scores


def _fmt(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f} (n={len(values)})" if len(values) > 1 else f"{mean:.1f} (n=1)"


def findings(rows: dict[str, list[float]], ktest: dict[int, list[float]]) -> list[str]:
    """The paper's findings, each with this benchmark's numbers and whether they agree beyond the seed spread."""

    def gap(a: str, b: str) -> tuple[float, float, int]:
        (ma, sa), (mb, sb) = mean_std(rows[a]), mean_std(rows[b])
        return ma - mb, max(sa, sb), min(len(rows[a]), len(rows[b]))

    def verdict(pairs) -> str:
        if any(n < 2 for _, _, n in pairs):  # one seed has no spread to judge a difference against
            return "one seed: no verdict"
        if all(d > s for d, s, _ in pairs):
            return "**agrees**"
        if all(d > 0 for d, _, _ in pairs):
            return "agrees in the means, within the seed spread"
        if any(d < -s for d, s, _ in pairs):
            return "**disagrees** (the opposite holds beyond the seed spread)"
        return "not shown (differences within the seed spread)"

    out = []
    if "ham/Hamburger (NMF)" in rows:
        out += _ham_finding(rows, gap, verdict)
    if "breads/both breads" in rows:
        out += _bread_finding(rows, gap, verdict)
    if "ham type/NMF" in rows:
        out += _type_finding(rows, gap, verdict)
    if "gradient/BPTT" in rows:
        out += _grad_finding(rows, gap, verdict)
    if "K train/K=6" in rows and "ham/Hamburger (NMF)" in rows:
        out += _k_finding(rows, ktest)
    return out


def _ham_finding(rows, gap, verdict) -> list[str]:
    out = []
    pairs = [gap("ham/Hamburger (NMF)", "ham/no ham: breads only")]
    out.append(
        f"- *The ham is essential*: {verdict(pairs)} — {pairs[0][0]:+.1f} mIoU over breads only "
        f"(largest seed std {pairs[0][1]:.1f})."
    )
    return out


def _bread_finding(rows, gap, verdict) -> list[str]:
    out = []
    pairs = [gap("breads/both breads", "breads/no lower bread"), gap("breads/both breads", "breads/no upper bread")]
    out.append(
        f"- *Both breads help*: {verdict(pairs)} — {pairs[0][0]:+.1f} over no lower bread, {pairs[1][0]:+.1f} "
        f"over no upper bread (largest std {max(p[1] for p in pairs):.1f})."
    )
    return out


def _type_finding(rows, gap, verdict) -> list[str]:
    out = []
    pairs = [gap("ham type/NMF", "ham type/VQ"), gap("ham type/NMF", "ham type/CD")]
    out.append(
        f"- *NMF beats VQ and CD*: {verdict(pairs)} — NMF {pairs[0][0]:+.1f} over VQ, {pairs[1][0]:+.1f} "
        f"over CD (largest std {max(p[1] for p in pairs):.1f})."
    )
    return out


def _grad_finding(rows, gap, verdict) -> list[str]:
    out = []
    pairs = [gap("gradient/one-step (the paper's)", "gradient/BPTT")]
    out.append(
        f"- *BPTT hurts where the one-step gradient does not*: {verdict(pairs)} — one-step "
        f"{pairs[0][0]:+.1f} over BPTT (largest std {pairs[0][1]:.1f})."
    )
    default = f"gradient/{DEFAULT_GRAD} (the default)"
    if default in rows:  # the library's default against the paper's gradient, and against BPTT
        ours, bptt = gap(default, "gradient/one-step (the paper's)"), gap(default, "gradient/BPTT")
        spread = max(ours[1], bptt[1])
        out.append(
            f"- *(ours) the default {DEFAULT_GRAD} beats the paper's one-step*: {verdict([ours])} — "
            f"{ours[0]:+.1f} over one-step, {bptt[0]:+.1f} over BPTT (largest std {spread:.1f})."
        )
    return out


def _k_finding(rows, ktest) -> list[str]:
    out = []
    # K: the sweep in training has one seed, so the reference's seed spread is the yardstick
    spread = mean_std(rows["ham/Hamburger (NMF)"])[1]
    ktrain = {k: statistics.mean(rows[f"K train/K={k}"]) for k in (1, 3, 6, 10)}
    best_train = max(ktrain, key=ktrain.get)
    means = {k: statistics.mean(v) for k, v in ktest.items() if v}
    best_test = max(means, key=means.get) if means else None
    near_train = max(ktrain[3], ktrain[6]) >= ktrain[best_train] - spread
    near_test = best_test is not None and max(v for k, v in means.items() if 3 <= k <= 6) >= means[best_test] - spread
    if len(rows["ham/Hamburger (NMF)"]) < 2:  # the yardstick is the reference's seed spread
        kv = "one seed: no verdict"
    elif best_train in (3, 6) and best_test is not None and 3 <= best_test <= 6:
        kv = "**agrees**"
    elif near_train and near_test:
        kv = "agrees within the seed spread (the best K lies outside 3–6, K of 3–6 within one std of it)"
    else:
        kv = "**disagrees**"
    out.append(
        f"- *K of 3–6 for training and testing*: {kv} — best K in training {best_train} "
        f"({ktrain[best_train]:.1f}; K 3 {ktrain[3]:.1f}, K 6 {ktrain[6]:.1f}), best K at test {best_test}"
        + (
            f" ({means[best_test]:.1f}; K 3–6 up to {max(v for k, v in means.items() if 3 <= k <= 6):.1f})"
            if best_test is not None
            else ""
        )
        + f"; yardstick: the reference's seed std {spread:.1f}."
    )
    return out


def run(
    *,
    out: Path,
    finding_seeds=FINDING_SEEDS,
    sweep_seeds=SWEEP_SEEDS,
    iters: int = 600,
    data_root=None,
    device: str = "cpu",
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    jobs: int = 1,
    ham_grad: str | None = None,
    groups=GROUPS,
) -> dict:
    """Train and test the default set (resumable), sweep K at test, write the tables and plots. ``ham_grad``: the
    gradient of every Hamburger row but the gradient rows (default: the models' own). ``groups``: the row groups
    trained and reported (all of :data:`GROUPS` by default; the K-at-test sweep comes with ``"K train"``).

    ``shard=(i, n)`` trains only every n-th run from the i-th and writes no tables (several processes can share one
    ``out``); ``jobs=n`` starts n such processes, waits for them, then writes the tables.
    """
    finding_seeds, sweep_seeds = require_distinct(finding_seeds, "seeds"), require_distinct(sweep_seeds, "sweep seeds")
    groups = tuple(require_distinct(groups, "groups"))
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ValueError(
            f"unknown ablation group(s) {', '.join(map(repr, unknown)) or '(none given)'}; groups: {', '.join(GROUPS)}"
        )
    check_runs([(head, over) for _, head, over, _ in plan(finding_seeds, sweep_seeds, ham_grad, groups)])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_root) if data_root else None
    cached(data_root, progress=progress)
    if jobs > 1 and shard is None:
        print(f"training in {jobs} processes; logs in {out}/shard<i>of{jobs}.log", flush=True)
        call = dict(finding_seeds=finding_seeds, sweep_seeds=sweep_seeds, iters=iters, data_root=data_root)
        call |= dict(device=device, ham_grad=ham_grad, groups=groups, out=out, progress=progress)
        run_shards(f"{__name__}:run", call, jobs=jobs, out=out)
    results = {}
    runs = plan(finding_seeds, sweep_seeds, ham_grad, groups)
    if shard is not None:
        index, count = shard
        runs = runs[index::count]
    for i, (tag, head, over, seed) in enumerate(runs, 1):
        if progress:
            print(f"[{i}/{len(runs)}] {tag} seed {seed}", flush=True)
        results[tag, seed] = run_one(
            head,
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
            overrides=over,
            tag=tag,
            device=device,
        )
    if shard is not None:
        return {"runs": len(runs)}
    rows: dict[str, list[float]] = {}
    for group, label, head, over in ROWS:
        if group not in groups:
            continue
        seeds = finding_seeds if group in FINDINGS else sweep_seeds
        tag = run_tag(head, with_grad(head, over, ham_grad))
        rows[f"{group}/{label}"] = [100 * results[tag, s]["test_miou"] for s in seeds]
    ktest = {}
    if "K train" in groups:
        ktest = test_steps_sweep(out, finding_seeds, data_root=data_root, device=device, ham_grad=ham_grad)
    info = {
        **machine_info(),
        "iters": iters,
        "finding_seeds": list(finding_seeds),
        "sweep_seeds": list(sweep_seeds),
        "ham_grad": ham_grad or f"the models' default ({DEFAULT_GRAD})",
        "groups": list(groups),
    }
    md = ["# ablate", ""] + [f"- {k}: {v}" for k, v in info.items()]
    md += ["", "## The seed's findings on animal-scenes", "", *findings(rows, ktest)]
    for group in groups:
        md += ["", f"## {group}", "", "| row | test mIoU |", "|---|---:|"]
        md += [f"| {key.split('/', 1)[1]} | {_fmt(v)} |" for key, v in rows.items() if key.startswith(group + "/")]
    if ktest:
        md += ["", "## K at test (the reference runs' weights, evaluation only)", ""]
        md += ["| K | test mIoU |", "|---:|---:|"]
        md += [f"| {k} | {_fmt(v)} |" for k, v in ktest.items()]
    atomic_write_text(out / "ablate.md", "\n".join(md) + "\n")
    atomic_write_text(out / "ablate.json", json.dumps({"machine": info, "rows": rows, "k_test": ktest}, indent=1))
    _plots(rows, ktest, out)
    if progress:
        print("\n".join(md))
    return {"rows": rows, "k_test": ktest}


def _plots(rows: dict[str, list[float]], ktest: dict[int, list[float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = {"K train": [1, 3, 6, 10], "R": [8, 16, 32, 64]}
    for group, xs in sweeps.items():
        if not any(key.startswith(group + "/") for key in rows):
            continue
        prefix = "K=" if group == "K train" else "R="
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot(xs, [statistics.mean(rows[f"{group}/{prefix}{x}"]) for x in xs], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("K in training and testing" if group == "K train" else "R")
        ax.set_ylabel("test mIoU")
        fig.tight_layout()
        save_figure(fig, out / f"ablate-{group.replace(' ', '-').lower()}.png")
    # every row (findings and categorical sweeps: version, init) as a bar with its seed std
    labels = list(rows)
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(labels) + 1))
    means = [mean_std(rows[k])[0] for k in labels]
    stds = [mean_std(rows[k])[1] for k in labels]
    groups = [k.split("/", 1)[0] for k in labels]
    colors = [f"C{sorted(set(groups), key=groups.index).index(g)}" for g in groups]
    ax.barh(range(len(labels)), means, xerr=stds, color=colors, capsize=2)
    ax.set_yticks(range(len(labels)), [k.replace("/", ": ") + f" (n={len(rows[k])})" for k in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test mIoU")
    ax.set_xlim(min(means) - 10, max(means) + 5)
    fig.tight_layout()  # the long row labels
    save_figure(fig, out / "ablate-rows.png")
    if not ktest:
        return
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ks = [k for k, v in ktest.items() if v]
    stats = [mean_std(ktest[k]) for k in ks]
    ax.errorbar(ks, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=2)
    ax.set_xlabel("K at test (trained with K = 6)")
    ax.set_ylabel("test mIoU")
    fig.tight_layout()
    save_figure(fig, out / "ablate-k-test.png")
