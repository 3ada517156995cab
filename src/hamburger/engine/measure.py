"""Measurements shared by the benchmarks: FLOPs (with the fused CPU attention kernel counted), peak memory, time."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import torch
from torch.utils import flop_counter

from .common import time_once

_aten = torch.ops.aten
_REGISTERED = False


def register_cpu_attention_flops() -> None:
    """torch's FLOP counter has formulas for the CUDA attention kernels only; the fused CPU (flash) kernel counts 0.
    Register the same formulas for it: 4·B·H·Lq·Lk·d forward (QKᵀ and AV) and the matching backward count."""
    global _REGISTERED
    if _REGISTERED:
        return
    forward_op = _aten._scaled_dot_product_flash_attention_for_cpu
    backward_op = _aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward_op not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(forward_op)
        def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    if backward_op not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(backward_op)
        def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw):
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    _REGISTERED = True


def count_flops(fn: Callable[[], object]) -> int:
    register_cpu_attention_flops()
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_device(device: str) -> tuple[torch.device, dict]:
    """The benchmark's device and its description for the results header; a clear error for missing CUDA."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch.cuda.is_available() is False")
    info = {"device": str(dev)}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return dev, info


def synchronizer(device: torch.device) -> Callable[[], None] | None:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by fn beyond what was allocated when it started (a real measurement).

    CUDA: the caching allocator's ``max_memory_allocated``. CPU: the PyTorch profiler's memory events (every
    allocation and free the CPU allocator reports), summed in time order.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def median_time(fn: Callable[[], object], *, repeats: int, warmup: int = 1, sync=None) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` calls, synchronising the device around each."""
    for _ in range(warmup):
        fn()
    return statistics.median(time_once(fn, sync) for _ in range(repeats))


def power_law_exponent(ns: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(N): value ∝ N^slope."""
    points = [(math.log(n), math.log(v)) for n, v in zip(ns, values) if v and v > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else None
