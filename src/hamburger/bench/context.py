"""`hamburger bench`: every context module side by side, over resolutions, on this machine.

Per module and size: parameters, FLOPs, forward and forward+backward latency (medians after warm-up), achieved
GFLOP/s, peak memory of both, and the power-law exponent of time against N = H·W. Writes a Markdown table in the
paper's cost-table layout, CSV and JSON with the machine in the header, and a log-log plot.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from ..context import create_context, list_contexts
from ..engine.common import atomic_write_text, header_lines, machine_info, progress_bar, save_figure
from ..engine.measure import bench_device, count_flops, median_time, peak_memory, power_law_exponent, synchronizer
from ..functional import SOLVE_GRADIENTS

FIELDS = (
    "module",
    "size",
    "n",
    "params",
    "gflop_fwd",
    "gflop_train",
    "fwd_ms",
    "train_ms",
    "fwd_gflops_per_s",
    "train_gflops_per_s",
    "fwd_peak_mib",
    "train_peak_mib",
)


def _build(name: str, channels: int, device, dtype):
    return create_context(name, channels).to(device=device, dtype=dtype)


def measure_one(name, *, channels, size, batch, repeats, device, dtype) -> dict:
    """All figures of one module at one size."""
    sync = synchronizer(device)
    module = _build(name, channels, device, dtype)
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
    params = sum(p.numel() for p in module.parameters())

    module.eval()

    def forward():
        with torch.no_grad():
            return module(x)

    module.train()

    def train_step():
        module.zero_grad(set_to_none=True)
        module(x).float().mean().backward()

    module.eval()
    fwd_ms = median_time(forward, repeats=repeats, sync=sync) * 1e3
    gflop_fwd = count_flops(forward) / 1e9
    fwd_peak = peak_memory(forward, device)
    module.train()
    train_ms = median_time(train_step, repeats=repeats, sync=sync) * 1e3
    gflop_train = count_flops(train_step) / 1e9
    train_peak = peak_memory(train_step, device)
    return {
        "module": name,
        "size": size,
        "n": size * size,
        "params": params,
        "gflop_fwd": gflop_fwd,
        "gflop_train": gflop_train,
        "fwd_ms": fwd_ms,
        "train_ms": train_ms,
        "fwd_gflops_per_s": gflop_fwd / fwd_ms * 1e3,
        "train_gflops_per_s": gflop_train / train_ms * 1e3,
        "fwd_peak_mib": fwd_peak / 2**20,
        "train_peak_mib": train_peak / 2**20,
    }


def _predicted_over(rows: list[dict], n: int, key: str, limit: float) -> bool:
    """Extrapolate a module's figure to N from its smaller sizes (power law; quadratic from one point)."""
    if not rows or limit <= 0:
        return False
    ns, values = [r["n"] for r in rows], [r[key] for r in rows]
    slope = power_law_exponent(ns, values) or 2.0
    return values[-1] * (n / ns[-1]) ** max(slope, 1.0) > limit


def training_memory_vs_steps(*, channels, size, steps, repeats, device, dtype) -> list[dict]:
    """The NMF Hamburger's forward+backward against K: one-step gradient vs BPTT."""
    sync = synchronizer(device)
    x = torch.randn(1, channels, size, size, device=device, dtype=dtype)
    rows = []
    for grad in SOLVE_GRADIENTS:
        for k in steps:
            block = create_context("ham_nmf", channels, train_steps=k, grad=grad).to(device=device, dtype=dtype)

            def step(block=block):
                block.zero_grad(set_to_none=True)
                block(x).float().mean().backward()

            ms = median_time(step, repeats=repeats, sync=sync) * 1e3
            rows.append({"grad": grad, "steps": k, "train_ms": ms, "train_peak_mib": peak_memory(step, device) / 2**20})
    return rows


def run(
    *,
    modules: tuple[str, ...] | None = None,
    channels: int = 512,
    batch: int = 1,
    sizes: tuple[int, ...] = (32, 64, 96, 128),
    repeats: int = 5,
    device: str = "cpu",
    dtype: str = "float32",
    memory_limit_gib: float = 8.0,
    time_limit_s: float = 60.0,
    train_size: int = 64,
    train_steps: tuple[int, ...] = (1, 6, 30),
    out: Path | None = Path("results/bench"),
    progress: bool = True,
) -> dict:
    modules = tuple(modules or list_contexts())
    unknown = [m for m in modules if m not in list_contexts()]
    if unknown:
        raise ValueError(f"unknown modules {unknown}; available: {', '.join(list_contexts())}")
    if repeats < 1 or not sizes or min(sizes) < 1:
        raise ValueError(f"repeats must be >= 1 and sizes positive, got repeats={repeats}, sizes={sizes}")
    dev, device_info = bench_device(device)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype name, got {dtype!r}")
    info = {**machine_info(), **device_info, "dtype": dtype, "channels": channels, "batch": batch}

    rows, skipped = [], []
    jobs = [(m, s) for m in modules for s in sorted(sizes)]
    bar = progress_bar(len(jobs) + len(train_steps) * 2, progress)
    for name in modules:
        done: list[dict] = []
        for size in sorted(sizes):
            bar.set_description(f"{name} {size}x{size}")
            n = size * size
            reason = None
            if _predicted_over(done, n, "train_peak_mib", memory_limit_gib * 1024):
                reason = f"predicted peak memory over {memory_limit_gib} GiB"
            elif _predicted_over(done, n, "train_ms", time_limit_s * 1e3):
                reason = f"predicted step time over {time_limit_s} s"
            if reason is None:
                try:
                    row = measure_one(
                        name,
                        channels=channels,
                        size=size,
                        batch=batch,
                        repeats=repeats,
                        device=dev,
                        dtype=torch_dtype,
                    )
                    done.append(row)
                    rows.append(row)
                except (RuntimeError, MemoryError) as e:  # out of memory on the device
                    reason = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            if reason is not None:
                skipped.append({"module": name, "size": size, "reason": reason})
            bar.update(1)
    bar.set_description(f"training memory vs K at {train_size}x{train_size}")
    steps_rows = training_memory_vs_steps(
        channels=channels, size=train_size, steps=train_steps, repeats=repeats, device=dev, dtype=torch_dtype
    )
    bar.update(len(train_steps) * 2)
    bar.close()

    exponents = {}
    for name in modules:
        mine = [r for r in rows if r["module"] == name]
        exponents[name] = {
            "fwd_time": power_law_exponent([r["n"] for r in mine], [r["fwd_ms"] for r in mine]),
            "train_time": power_law_exponent([r["n"] for r in mine], [r["train_ms"] for r in mine]),
            "fwd_memory": power_law_exponent([r["n"] for r in mine], [r["fwd_peak_mib"] for r in mine]),
        }
    result = {"machine": info, "rows": rows, "skipped": skipped, "exponents": exponents, "steps": steps_rows}
    md = markdown(result, max(sizes))
    if out is not None:
        _write(Path(out), result, md)
        if progress:
            print(f"wrote {out}/bench.md, bench.csv, bench.json, bench.png")
    if progress:
        print("\n".join(md))
    return result


def markdown(result: dict, size: int) -> list[str]:
    info, rows, exps = result["machine"], result["rows"], result["exponents"]
    at = [r for r in rows if r["size"] == size]
    md = [
        f"## Cost at {size}x{size}, C={info['channels']}, batch {info['batch']} ({info['device']}, {info['dtype']})",
        "",
        "| module | params (M) | GFLOPs fwd | fwd ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB | GFLOP/s fwd "
        "| time ∝ N^k (fwd) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(at, key=lambda r: r["fwd_ms"]):
        k = exps[r["module"]]["fwd_time"]
        md.append(
            f"| {r['module']} | {r['params'] / 1e6:.3f} | {r['gflop_fwd']:.2f} | {r['fwd_ms']:.1f} | "
            f"{r['train_ms']:.1f} | {r['fwd_peak_mib']:.1f} | {r['train_peak_mib']:.1f} | "
            f"{r['fwd_gflops_per_s']:.0f} | {'-' if k is None else f'{k:.2f}'} |"
        )
    for s in result["skipped"]:
        if s["size"] == size:
            md.append(f"| {s['module']} | skipped: {s['reason']} | | | | | | | |")
    md += [
        "",
        "## NMF Hamburger training step against K: one-step gradient vs BPTT",
        "",
        "| gradient | K | fwd+bwd ms | peak MiB |",
        "|---|---:|---:|---:|",
    ]
    md += [f"| {r['grad']} | {r['steps']} | {r['train_ms']:.1f} | {r['train_peak_mib']:.1f} |" for r in result["steps"]]
    return md


def _write(out: Path, result: dict, md: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    header = header_lines(result["machine"])
    atomic_write_text(out / "bench.md", "\n".join(["# hamburger bench", "", *header, "", *md, ""]))
    atomic_write_text(out / "bench.json", json.dumps(result, indent=2))
    table = io.StringIO(newline="")
    table.write("# " + json.dumps(result["machine"]) + "\n")  # the machine in the header line
    writer = csv.DictWriter(table, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(result["rows"])
    atomic_write_text(out / "bench.csv", table.getvalue())
    _plot(result, out / "bench.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    names = sorted({r["module"] for r in result["rows"]})
    colours = plt.cm.tab20(range(len(names)))
    for name, colour in zip(names, colours):
        mine = sorted((r for r in result["rows"] if r["module"] == name), key=lambda r: r["n"])
        ns = [r["n"] for r in mine]
        style = "-o" if name.startswith("ham") else "--s"
        kw = {"label": name, "markersize": 4, "color": colour}
        axes[0].plot(ns, [r["fwd_ms"] for r in mine], style, **kw)
        axes[1].plot(ns, [r["train_ms"] for r in mine], style, **kw)
        axes[2].plot(ns, [max(r["fwd_peak_mib"], 1e-3) for r in mine], style, **kw)
    titles = ("forward time (ms)", "forward+backward time (ms)", "forward peak memory (MiB)")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N = H·W")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=8, loc="upper left")
    info = result["machine"]
    fig.suptitle(f"Context modules, C={info['channels']}, {info['device']} {info['dtype']}, {info['cpu']}")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
