"""`hamburger seq bench`: one causal mixer layer against sequence length N — forward time, training-step time and
peak memory — with each mixer's power-law exponent over N and its crossover against causal SDPA attention (the
smallest N from which it is faster at every longer N measured). CPU here, ``--device cuda`` on a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...engine.common import atomic_write_text, machine_info, save_figure
from ...engine.config import require_distinct
from ...engine.measure import bench_device, median_time, peak_memory, power_law_exponent, synchronizer
from ...sequence import create_mixer
from ..config import HAM_OPTIONS, SeqTrainConfig, mixer_kwargs

BENCH_HAM = {"rank": 16, "chunk": 64}  # the layer whose cost docs/results report (seq train's other Ham defaults)


def crossover(rows: list[dict], mixer: str, key: str, reference: str = "softmax") -> int | None:
    """The smallest N from which ``mixer``'s ``key`` is below the reference's at every longer measured N."""
    mine = {r["n"]: r[key] for r in rows if r["mixer"] == mixer}
    ref = {r["n"]: r[key] for r in rows if r["mixer"] == reference}
    ns = sorted(set(mine) & set(ref))
    best = None
    for n in reversed(ns):
        if mine[n] < ref[n]:
            best = n
        else:
            break
    return best


def run(
    *,
    ns=(512, 1024, 2048, 4096, 8192, 16384),
    mixers=("ham_nmf", "ham_vq", "softmax", "linear"),
    dim=128,
    heads=4,
    repeats=3,
    device="cpu",
    out=Path("results/seq-bench"),
    progress=True,
    **ham,
) -> dict:
    """Time one causal layer of each mixer at every N; ``ham``: the Ham's options as seq train's fields (``rank``,
    ``chunk``, ``ham_fit``, ``ham_width``... — every field of :data:`~hamburger.seq.config.HAM_OPTIONS`; R 16 and
    chunk 64 unless given), so the layer timed is the one a run trains."""
    mixers = require_distinct(mixers, "mixers")
    if "none" in mixers:
        raise ValueError("seq bench times token mixers; 'none' has no mixer (and nothing to back-propagate)")
    unknown = sorted(set(ham) - set(HAM_OPTIONS))
    if unknown:
        raise TypeError(f"seq bench takes the Ham's options {', '.join(HAM_OPTIONS)}; got {unknown}")
    config = SeqTrainConfig(dim=dim, heads=heads, seq_len=max(ns), **{**BENCH_HAM, **ham})  # checked as a run is
    dev, dev_info = bench_device(device)
    sync = synchronizer(dev)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in mixers:
        mixer = create_mixer(name, dim, heads=heads, causal=True, **mixer_kwargs(config, name)).to(dev)
        for n in ns:
            x = torch.randn(1, n, dim, device=dev)

            def forward(mixer=mixer, x=x):
                with torch.no_grad():
                    return mixer(x)

            def train_step(mixer=mixer, x=x):
                mixer.zero_grad(set_to_none=True)
                mixer(x).square().mean().backward()

            rows.append(
                {
                    "mixer": name,
                    "n": n,
                    "forward_ms": 1e3 * median_time(forward, repeats=repeats, sync=sync),
                    "train_ms": 1e3 * median_time(train_step, repeats=repeats, sync=sync),
                    "train_peak_mib": peak_memory(train_step, dev) / 2**20,
                }
            )
            if progress:
                print(rows[-1], flush=True)
    info = {**machine_info(), **dev_info}
    ham_layer = create_mixer("ham_nmf", dim, heads=heads, causal=True, **mixer_kwargs(config, "ham_nmf"))
    md = [f"# One causal mixer layer against N (C {dim}, {heads} heads, batch 1)", ""]
    md += [f"- Ham (ham_nmf; ham_vq alike where it applies): {ham_layer.extra_repr()}"]
    md += [f"- Ham options: {json.dumps({k: getattr(config, k) for k in HAM_OPTIONS})}"]
    md += [f"- {k}: {v}" for k, v in info.items()]
    md += ["", "| mixer | N | forward ms | train step ms | train peak MiB |", "|---|---:|---:|---:|---:|"]
    md += [
        f"| {r['mixer']} | {r['n']} | {r['forward_ms']:.1f} | {r['train_ms']:.1f} | {r['train_peak_mib']:.1f} |"
        for r in rows
    ]
    md += [
        "",
        "Power-law exponent over N >= 2048 (cost ∝ N^e) and the crossover against causal SDPA (the smallest N "
        "from which the mixer is faster at every longer N measured):",
        "",
        "| mixer | forward e | train e | memory e | faster forward from N | faster train step from N |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    for name in mixers:
        rs = [r for r in rows if r["mixer"] == name and r["n"] >= 2048]
        e = [
            power_law_exponent([r["n"] for r in rs], [r[k] for r in rs])
            for k in ("forward_ms", "train_ms", "train_peak_mib")
        ]
        cross = [crossover(rows, name, k) if name != "softmax" else None for k in ("forward_ms", "train_ms")]
        summary[name] = {"exponents": e, "crossover_forward": cross[0], "crossover_train": cross[1]}
        cells = [f"{v:.2f}" if v is not None else "-" for v in e] + [str(c) if c else "-" for c in cross]
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    atomic_write_text(out / "seq-bench.md", "\n".join(md) + "\n")
    atomic_write_text(out / "seq-bench.json", json.dumps({"machine": info, "rows": rows, "summary": summary}, indent=1))
    _plot(rows, mixers, out)
    if progress:
        print("\n".join(md))
    return {"rows": rows, "summary": summary}


def _plot(rows, mixers, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, title in zip(axes, ("forward_ms", "train_ms"), ("forward", "training step")):
        for name in mixers:
            rs = [r for r in rows if r["mixer"] == name]
            ax.plot([r["n"] for r in rs], [r[key] for r in rs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N")
        ax.set_ylabel("ms")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    save_figure(fig, out / "seq-bench.png")
