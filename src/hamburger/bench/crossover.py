"""`hamburger bench crossover`: the Hamburger block against what a user compares it with — the non-local block on
every SDPA backend that runs the dtype — in bf16 and fp32, eval and training, over sizes; and where the Hamburger
becomes faster.

The same code runs on CPU and CUDA: a backend that cannot run a configuration is found by trying it (torch raises
"No available kernel"), not from a table. CUDA times are CUDA-event medians, CPU times wall-clock medians, after
warm-up; every figure is measured in the run that writes it.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..burger import Hamburger
from ..context import NonLocal
from ..engine.common import machine_info, progress_bar, save_figure, write_results
from ..engine.measure import bench_device, peak_memory
from ..functional import PRECISIONS
from ..optimize import optimize

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
MODES = ("eval", "train")


def timer(fn, device: torch.device, *, repeats: int, warmup: int = 2) -> float:
    """Median milliseconds of fn: CUDA events on a GPU (no host time between kernels counted twice), wall clock on
    CPU."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(samples)


@contextlib.contextmanager
def precision_scope(precision: str, device: torch.device):
    """bf16: autocast (the breads and attention's projections in bf16); tf32: TF32 products everywhere (CUDA)."""
    saved = torch.get_float32_matmul_precision()
    if precision == "tf32":
        torch.set_float32_matmul_precision("high")
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.set_float32_matmul_precision(saved)


def _step_fn(module, x, mode: str, precision: str, device, backend=None):
    """One eval forward or one training step (forward + backward) of module on x, in the given precision."""

    def attend():
        return sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()

    if mode == "eval":

        def fn():
            with torch.no_grad(), precision_scope(precision, device), attend():
                return module(x)

    else:

        def fn():
            module.zero_grad(set_to_none=True)
            with precision_scope(precision, device), attend():
                out = module(x)
            out.float().mean().backward()

    return fn


def _variants(
    channels: int,
    rank: int,
    precision: str,
    device,
    compile: bool,
    backends,
    capture: bool = False,
    compile_attention: bool = False,
) -> dict:
    """name -> (module, SDPA backend or None). ``ham eager``: PyTorch's kernels; ``ham fused`` (CUDA): the steps
    without autograd in :mod:`hamburger.kernels`. ``capture``: the block through ``optimize(mode="reduce-overhead")``
    (compiled, CUDA graphs, one static graph per shape) and ``optimize(mode="graphs")`` (the eager kernels in one CUDA
    graph per shape, inference only: eval rows); ``compile_attention``: the non-local block compiled the same way, SDPA
    choosing its backend."""
    torch.manual_seed(0)
    ham_precision = "bf16" if precision == "bf16" else precision
    ham = Hamburger(channels, ham="nmf", version="v1", rank=rank, precision=ham_precision).to(device)
    out = {"ham eager": (optimize(ham, fused=False, compile=False), None)}
    if device.type == "cuda":  # the gradient-free steps in the Triton kernels (hamburger.kernels), eager otherwise
        out["ham fused"] = (optimize(copy.deepcopy(ham), fused=True, compile=False), None)
    if compile:
        out["ham compiled"] = (optimize(copy.deepcopy(ham)), None)
    if capture:
        out["ham captured"] = (optimize(copy.deepcopy(ham), mode="reduce-overhead"), None)
        out["ham graphed"] = (optimize(copy.deepcopy(ham), mode="graphs"), None)
    attention = NonLocal(channels).to(device)
    for name in backends:
        out[f"nonlocal {name}"] = (attention, BACKENDS[name])
    if compile_attention:
        out["nonlocal compiled"] = (
            torch.compile(copy.deepcopy(attention), mode="reduce-overhead", dynamic=False),
            None,
        )
    return out


def run(
    *,
    device: str = "cuda",
    sizes: tuple[int, ...] = (32, 64, 96, 128, 192, 256),
    batches: tuple[int, ...] = (1, 8),
    precisions: tuple[str, ...] = ("bf16", "fp32"),
    modes: tuple[str, ...] = MODES,
    backends: tuple[str, ...] = tuple(BACKENDS),
    channels: int = 512,
    rank: int = 64,
    repeats: int = 20,
    compile: bool = True,
    capture: bool = False,
    compile_attention: bool = False,
    math_limit_gib: float = 8.0,
    out: Path | None = Path("results/bench-crossover"),
    progress: bool = True,
) -> dict:
    dev, device_info = bench_device(device)
    for name, values, allowed in (
        ("precisions", precisions, PRECISIONS),
        ("modes", modes, MODES),
        ("backends", backends, tuple(BACKENDS)),
    ):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {tuple(values)}")
    if not sizes or min(sizes) < 1 or not batches or min(batches) < 1 or repeats < 1:
        raise ValueError(f"sizes, batches and repeats must be positive, got {sizes}, {batches}, {repeats}")
    info = {
        **machine_info(),
        **device_info,
        "channels": channels,
        "rank": rank,
        "eval_steps": 7,
        "train_steps": 6,
        "repeats": repeats,
    }
    jobs = [(p, b, m, s) for p in precisions for b in batches for m in modes for s in sorted(sizes)]
    bar = progress_bar(len(jobs), progress, unit="cell")
    rows = []
    with _recompile_room(len(sizes) * len(batches) * len(modes) * 4), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backends that cannot run a configuration warn before they raise
        for precision in precisions:
            variants = _variants(channels, rank, precision, dev, compile, backends, capture, compile_attention)
            for batch in batches:
                for mode in modes:
                    for size in sorted(sizes):
                        bar.set_description(f"{precision} B={batch} {mode} {size}x{size}")
                        rows.append(
                            _measure(variants, precision, batch, mode, size, channels, dev, repeats, math_limit_gib)
                        )
                        bar.update(1)
                        if out is not None:  # every finished cell on disk: a run stopped by a timeout keeps them
                            partial = {"machine": info, "rows": rows, "crossover": crossover(rows)}
                            _write(Path(out), partial, markdown(partial), plot=False)
    bar.close()
    result = {"machine": info, "rows": rows, "crossover": crossover(rows)}
    md = markdown(result)
    if out is not None:
        _write(Path(out), result, md)
        if progress:
            print(f"wrote {out}/crossover.md, crossover.json, crossover.png")
    if progress:
        print("\n".join(md))
    return result


def _measure(variants, precision, batch, mode, size, channels, dev, repeats, math_limit_gib) -> dict:
    x = torch.randn(batch, channels, size, size, device=dev)
    n = size * size
    row = {"precision": precision, "batch": batch, "mode": mode, "size": size, "ms": {}, "peak_mib": {}, "skipped": {}}
    for name, (module, backend) in variants.items():
        if name == "ham graphed" and mode == "train":
            row["skipped"][name] = "inference only (a training step runs eagerly)"
            continue
        module.train(mode == "train")
        score_bytes = batch * n * n * (2 if precision == "bf16" else 4) * (3 if mode == "train" else 1)
        if backend == SDPBackend.MATH and score_bytes > math_limit_gib * 2**30:
            row["skipped"][name] = f"N² scores need {score_bytes / 2**30:.1f} GiB > {math_limit_gib} GiB"
            continue
        fn = _step_fn(module, x, mode, precision, dev, backend)
        try:
            ms, peak = timer(fn, dev, repeats=repeats), peak_memory(fn, dev) / 2**20
            if name == "ham graphed" and dev.type == "cuda" and not module.forward.graphs:
                raise RuntimeError("no CUDA graph held (its capture failed): the block ran eagerly")
            row["ms"][name], row["peak_mib"][name] = ms, peak
        except (RuntimeError, torch.OutOfMemoryError) as e:  # "No available kernel", out of memory
            row["skipped"][name] = str(e).strip().splitlines()[0][:160]
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return row


def crossover(rows: list[dict]) -> list[dict]:
    """Per (precision, batch, mode): the smallest size from which the fastest Hamburger beats the fastest attention
    backend at every larger measured size (None: it never does), and the speed-up at each size."""
    out = []
    keys = sorted({(r["precision"], r["batch"], r["mode"]) for r in rows})
    for precision, batch, mode in keys:
        mine = sorted(
            (r for r in rows if (r["precision"], r["batch"], r["mode"]) == (precision, batch, mode)),
            key=lambda r: r["size"],
        )
        speedups, first = {}, None
        for r in mine:
            ham = [v for k, v in r["ms"].items() if k.startswith("ham")]
            att = [v for k, v in r["ms"].items() if k.startswith("nonlocal")]
            if not ham:
                continue
            # attention that could not run at all (memory) loses by default
            speedups[r["size"]] = min(att) / min(ham) if att else float("inf")
        for size in sorted(speedups, reverse=True):
            if speedups[size] <= 1.0:
                break
            first = size
        out.append({"precision": precision, "batch": batch, "mode": mode, "crossover_size": first, "speedup": speedups})
    return out


def markdown(result: dict) -> list[str]:
    info, rows = result["machine"], result["rows"]
    names = sorted({k for r in rows for k in (*r["ms"], *r["skipped"])}, key=lambda k: (not k.startswith("ham"), k))
    md = [
        f"## Hamburger (v1 NMF, R={info['rank']}) against non-local attention per SDPA backend, C={info['channels']}"
        f" ({info.get('gpu', info['cpu'])})",
        "",
        "Milliseconds (median); `-` = the backend cannot run this configuration or was skipped (see the JSON).",
        "",
        "| precision | B | mode | H=W | " + " | ".join(names) + " | Ham speed-up vs best attention |",
        "|---|---:|---|---:|" + "---:|" * len(names) + "---:|",
    ]
    speed = {(c["precision"], c["batch"], c["mode"]): c["speedup"] for c in result["crossover"]}
    for r in rows:
        cells = [f"{r['ms'][k]:.2f}" if k in r["ms"] else "-" for k in names]
        s = speed[(r["precision"], r["batch"], r["mode"])].get(r["size"])
        md.append(
            f"| {r['precision']} | {r['batch']} | {r['mode']} | {r['size']} | "
            + " | ".join(cells)
            + f" | {'-' if s is None else f'{s:.2f}x'} |"
        )
    md += [
        "",
        "## Crossover: the Hamburger is faster from this size on",
        "",
        "| precision | B | mode | crossover H=W |",
        "|---|---:|---|---:|",
    ]
    for c in result["crossover"]:
        size = c["crossover_size"]
        md.append(f"| {c['precision']} | {c['batch']} | {c['mode']} | {'never (in range)' if size is None else size} |")
    md += [
        "",
        "## Peak memory (MiB) at the largest size",
        "",
        "| precision | B | mode | " + " | ".join(names) + " |",
        "|---|---:|---|" + "---:|" * len(names),
    ]
    top = max(r["size"] for r in rows)
    for r in rows:
        if r["size"] == top:
            cells = [f"{r['peak_mib'][k]:.0f}" if k in r["peak_mib"] else "-" for k in names]
            md.append(f"| {r['precision']} | {r['batch']} | {r['mode']} | " + " | ".join(cells) + " |")
    return md


def _write(out: Path, result: dict, md: list[str], *, plot: bool = True) -> None:
    rows = {k: v for k, v in result.items() if k != "machine"}
    write_results(out, "crossover", result["machine"], rows, md)
    if plot:
        _plot(result, out / "crossover.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    panels = sorted({(r["precision"], r["batch"], r["mode"]) for r in rows})
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    names = sorted({k for r in rows for k in r["ms"]})
    colours = dict(zip(names, plt.cm.tab10(range(len(names)))))
    for ax, key in zip(axes.flat, panels):
        mine = sorted((r for r in rows if (r["precision"], r["batch"], r["mode"]) == key), key=lambda r: r["size"])
        for name in names:
            pts = [(r["size"] ** 2, r["ms"][name]) for r in mine if name in r["ms"]]
            if pts:
                style = "-o" if name.startswith("ham") else "--s"
                ax.plot(*zip(*pts), style, label=name, color=colours[name], markersize=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{key[0]}, B={key[1]}, {key[2]}", fontsize=9)
        ax.set_xlabel("N = H·W")
        ax.set_ylabel("ms")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    info = result["machine"]
    fig.suptitle(f"Hamburger vs non-local attention, C={info['channels']}, {info.get('gpu', info['cpu'])}")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


@contextlib.contextmanager
def _recompile_room(graphs: int):
    """Compiled variants specialise on each (batch, size, mode): give dynamo room for that many graphs."""
    import torch._dynamo.config as config

    name = next((n for n in ("recompile_limit", "cache_size_limit") if hasattr(config, n)), None)
    if name is None:
        yield
        return
    with config.patch({name: max(getattr(config, name), graphs + 8)}):
        yield
