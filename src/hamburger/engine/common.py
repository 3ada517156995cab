"""Shared helpers of the recipes: machine description, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")  # the CPU flags that decide whether bf16 is fast there


def machine_info() -> dict:
    """The machine a figure was measured on; ``bf16_units``: its bf16 matrix and vector flags (Linux; "none" without
    them, "unknown" where /proc/cpuinfo cannot be read), which decide whether bf16 beats fp32 on this CPU."""
    cpu = platform.processor() or platform.machine()
    units = "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = None
    if text is not None:
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = set(text.split())
        units = ", ".join(f for f in BF16_FLAGS if f in flags) or "none"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_units": units,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def header_lines(info: dict) -> list[str]:
    return [f"- {k}: {v}" for k, v in info.items()]


def time_once(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Seconds one call of fn takes (synchronising the device when a sync function is given)."""
    if sync:
        sync()
    start = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - start


def interleaved_samples(
    fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Seconds of each call, per function, with the functions' repeats interleaved so drift hits all of them alike
    (``sync``: the device's synchronise, called around each timed call); round i of every list ran side by side."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(time_once(fn, sync))
    return samples


def interleaved_medians(
    fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, float]:
    """Median seconds per function of :func:`interleaved_samples`."""
    samples = interleaved_samples(fns, repeats=repeats, warmup=warmup, sync=sync)
    return {name: statistics.median(s) for name, s in samples.items()}


def paired_ratio(samples: dict[str, list[float]], name: str, base: str) -> float:
    """Median over rounds of name's time / base's time in the same round: steadier than a ratio of medians on a
    shared machine, whose slow spells hit both calls of a round alike."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[base], strict=True))


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matrix-multiply throughput (GFLOP/s), measured now."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    seconds = interleaved_medians({"mm": lambda: a @ b}, repeats=repeats)["mm"]
    return 2 * size**3 / seconds / 1e9


def atomic_write_bytes(path: Path, data: bytes, *, midway: Callable[[], None] | None = None) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename it over ``path``: never a half-written file.

    ``midway``, if given, is called with half of the data written (the checkpoints' fault injection)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file to write")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if midway is not None:
                f.flush()
                midway()
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind (a SIGKILL leaves it to remove_stale)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) atomically, see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def save_figure(fig, path: Path, *, dpi: int = 90) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of a list of seed results."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_results(out: Path, name: str, info: dict, rows: dict, markdown: list[str]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    md_path = out / f"{name}.md"
    atomic_write_text(json_path, json.dumps({"machine": info, "results": rows}, indent=2))
    atomic_write_text(md_path, "\n".join([f"# {name}", "", *header_lines(info), "", *markdown, ""]))
    return json_path, md_path


class _NoBar:
    def update(self, n=1):
        pass

    def set_description(self, text):
        pass

    def close(self):
        pass


def progress_bar(total: int, enabled: bool, unit: str = "run"):
    """A tqdm bar over ``total`` units, or a silent stand-in with the same methods."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True)


class ShardsFailed(RuntimeError):
    """Some ``--shard`` processes of a ``--jobs`` run exited with an error (their logs say why)."""


SHARDS_FILE = "shards.json"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _tuples(value):
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def run_shards(entry: str, kwargs: dict, *, jobs: int, out: Path) -> None:
    """Write the experiment's call — ``entry`` (``"hamburger.<module>:<function>"``) and its keyword arguments — to
    ``out/shards.json``, then run ``<function>(**kwargs, shard=(i, jobs), jobs=1)`` for i < jobs in as many
    processes at once, each reading that file, the torch threads split between them (logs in
    ``out/shard<i>of<jobs>.log``); raise if any fails. Paths travel as strings and tuples as lists (read back as
    tuples)."""
    if not entry.startswith("hamburger.") or ":" not in entry:
        raise ValueError(f"entry must be 'hamburger.<module>:<function>', got {entry!r}")
    path = Path(out) / SHARDS_FILE
    atomic_write_text(path, json.dumps({"entry": entry, "kwargs": _jsonable(kwargs)}, indent=1) + "\n")
    threads = max(1, torch.get_num_threads() // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = []
    for i in range(jobs):
        code = f"from hamburger.engine.common import run_shard; run_shard({str(path)!r}, {i}, {jobs})"
        log = open(Path(out) / f"shard{i}of{jobs}.log", "a")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
    failed = []
    for i, (proc, log) in enumerate(procs):
        if proc.wait() != 0:
            failed.append(i)
        log.close()
    if failed:
        raise ShardsFailed(f"{entry} shard(s) {failed} of {jobs} failed: see {out}/shard<i>of{jobs}.log")


def run_shard(path: str | Path, index: int, count: int):
    """One shard process of :func:`run_shards`: call the experiment written in ``path`` with ``shard=(index,
    count)``."""
    import importlib

    call = json.loads(Path(path).read_text())
    module, function = call["entry"].split(":")
    return getattr(importlib.import_module(module), function)(**_tuples(call["kwargs"]), shard=(index, count), jobs=1)
