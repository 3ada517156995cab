"""`hamburger bench check`: the correctness checks a GPU run starts with — for every ham and precision, the block on
the device against the same block on the CPU, twice on the device (determinism, bit for bit), captured
(``optimize(mode="reduce-overhead")``, compiled into CUDA graphs) and graphed (``optimize(mode="graphs")``, the eager
kernels in a CUDA graph) against eager on the device, and for NMF the fused Triton steps
(the device's default) against PyTorch's. Exits non-zero when one fails, so
``benchmarks/gpu.sh`` stops before it times anything wrong — except the graphed row, a new mode whose fault is
reported in its column (``graphed_ok``) while the rest of the table is timed.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch

from ..burger import Hamburger
from ..engine.common import atomic_write_text, machine_info
from ..engine.measure import bench_device
from ..functional import PRECISIONS
from ..optimize import optimize

HAMS = ("nmf", "vq", "cd")
# relative error allowed between the device and the CPU: fp32 differs by summation order only; tf32 and bf16 round
# their products' inputs (to 10 and 7 mantissa bits), differently on each device
TOLERANCE = {"fp32": 1e-4, "tf32": 2e-2, "bf16": 3e-2}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def run(
    *,
    device: str = "cuda",
    hams=HAMS,
    precisions=PRECISIONS,
    channels: int = 64,
    rank: int = 8,
    size: int = 16,
    batch: int = 2,
    capture: bool = True,
    out: Path | None = Path("results/bench-check"),
    progress: bool = True,
) -> dict:
    """One row per (ham, precision): the relative errors and whether each check passed."""
    dev, dev_info = bench_device(device)
    # fp32 is fp32 on both sides: cuDNN runs the breads' 1x1 convolutions in TF32 by default (torch's
    # cudnn.allow_tf32), which moves fp32 rows 1e-4 to 1e-3 from the CPU's
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        rows = _rows(dev, hams, precisions, channels, rank, size, batch, capture)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    return _report(rows, dev_info, out, progress)


def _rows(dev, hams, precisions, channels, rank, size, batch, capture) -> list[dict]:
    """One row per (ham, precision): the relative errors and whether each check passed."""
    rows = []
    for ham in hams:
        for precision in precisions:
            torch.manual_seed(0)
            block = Hamburger(channels, ham=ham, rank=rank, precision=precision).eval()
            x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                ref = block(x)
                on_dev = block.to(dev)
                y1, y2 = on_dev(x.to(dev)), on_dev(x.to(dev))
                row = {
                    "ham": ham,
                    "precision": precision,
                    "device_vs_cpu": _rel(y1.cpu(), ref),
                    "deterministic": bool(torch.equal(y1, y2)),
                }
                if ham == "nmf" and dev.type == "cuda":  # y1 ran the fused Triton steps (auto): against PyTorch's
                    plain = optimize(copy.deepcopy(on_dev), fused=False, compile=False)
                    row["fused_vs_pytorch"] = _rel(y1, plain(x.to(dev)))
                if capture:
                    captured = optimize(copy.deepcopy(on_dev), mode="reduce-overhead")
                    y3 = captured(x.to(dev)).clone()  # a CUDA graph's output is overwritten by its next replay
                    row["captured_vs_eager"] = _rel(y3, y1)
                    try:
                        graphed = optimize(copy.deepcopy(on_dev), mode="graphs")
                        graphed(x.to(dev))  # the first call captures (and replays), the second only replays
                        row["graphed_vs_eager"] = _rel(graphed(x.to(dev)), y1)
                        row["graphs_held"] = len(graphed.forward.graphs)  # 0: the capture failed (warned)
                    except Exception as error:  # a new mode's fault is reported, not a stop of gpu.sh's table
                        row["graphed_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            tol = TOLERANCE[precision]
            row["ok"] = (
                row["device_vs_cpu"] <= tol
                and row["deterministic"]
                and max(row.get("captured_vs_eager", 0), row.get("fused_vs_pytorch", 0)) <= tol
            )
            if capture:  # reported on its own: a new mode's failure does not stop gpu.sh's table
                row["graphed_ok"] = row.get("graphed_vs_eager", math.inf) <= tol
            rows.append(row)
    return rows


def _report(rows: list[dict], dev_info: dict, out: Path | None, progress: bool) -> dict:
    if progress:
        for row in rows:
            print(row, flush=True)
    name = dev_info.get("gpu", dev_info.get("device", "the device"))
    md = [
        f"# Correctness on {name}",
        "",
        "| ham | precision | device vs CPU (rel.) | "
        "deterministic | captured vs eager (rel.) | graphed vs eager (rel.) | fused vs PyTorch (rel.) | ok |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        cap, gra, fus = (
            f"{r[k]:.1e}" if k in r else "-" for k in ("captured_vs_eager", "graphed_vs_eager", "fused_vs_pytorch")
        )
        if r.get("graphs_held") == 0 and str(dev_info.get("device", "")).startswith("cuda"):
            gra += " (no graph: eager)"
        if "graphed_error" in r:
            gra = f"failed: {r['graphed_error'][:80]}"
        elif r.get("graphed_ok") is False:
            gra += " **wrong**"
        md.append(
            f"| {r['ham']} | {r['precision']} | {r['device_vs_cpu']:.1e} | {r['deterministic']} | {cap} | "
            f"{gra} | {fus} | {'yes' if r['ok'] else '**no**'} |"
        )
    result = {"machine": {**machine_info(), **dev_info}, "rows": rows, "ok": all(r["ok"] for r in rows)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "check.md", "\n".join(md) + "\n")
        atomic_write_text(out / "check.json", json.dumps(result, indent=1))
    if progress:
        print("\n".join(md))
    return result
