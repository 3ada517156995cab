"""Shared helpers of the recipes: machine description, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
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


def interleaved_medians(fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per function, with the functions' repeats interleaved so drift hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(time_once(fn))
    return {name: statistics.median(s) for name, s in samples.items()}


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matrix-multiply throughput (GFLOP/s), measured now."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    seconds = interleaved_medians({"mm": lambda: a @ b}, repeats=repeats)["mm"]
    return 2 * size**3 / seconds / 1e9


def write_results(out: Path, name: str, info: dict, rows: dict, markdown: list[str]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    md_path = out / f"{name}.md"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": info, "results": rows}, indent=2))
    tmp.replace(json_path)
    tmp = md_path.with_suffix(".md.tmp")
    tmp.write_text("\n".join([f"# {name}", "", *header_lines(info), "", *markdown, ""]))
    tmp.replace(md_path)
    return json_path, md_path
