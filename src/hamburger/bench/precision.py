"""`hamburger bench precision`: what each ``precision`` costs in accuracy and buys in speed, for the three hams and
for the Hamburger block against the SDPA non-local block.

Accuracy: relative Frobenius error of the reconstruction against the fp32 solve, beside the error that a 0.2% (one
bf16 rounding) perturbation of the input causes in the fp32 solve itself — the conditioning of the problem, which
no precision can beat. Speed: interleaved medians in one run. Every figure is measured in the run that writes it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import functional as HF
from ..burger import Hamburger
from ..context import NonLocal
from ..engine.common import interleaved_medians, machine_info, write_results
from ..engine.measure import bench_device, synchronizer
from ..ham import CD, NMF, VQ
from .ham import clustered_input

HAMS = {"nmf": NMF, "vq": VQ, "cd": CD}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _inputs(name: str, channels: int, n: int, device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, channels, n, generator=g)
    return {
        "clustered features": clustered_input(channels, n).to(device),  # the structure real feature maps have
        "noise": (noise.abs() if name == "nmf" else noise).to(device),  # no structure: the worst case
    }


def run(
    *,
    channels: int = 512,
    sizes: tuple[int, ...] = (64, 128),
    rank: int = 64,
    steps: int = 7,
    repeats: int = 7,
    precisions: tuple[str, ...] = HF.PRECISIONS,
    device: str = "cpu",
    block_size: int = 128,
    out: Path | None = Path("results/bench-precision"),
    progress: bool = True,
) -> dict:
    dev, device_info = bench_device(device)
    bad = [p for p in precisions if p not in HF.PRECISIONS]
    if bad or "fp32" not in precisions:
        raise ValueError(f"precisions must include fp32 (the reference) and be among {HF.PRECISIONS}, got {precisions}")
    if not sizes or min(sizes) < 1 or repeats < 1 or steps < 0:
        raise ValueError(f"sizes and repeats must be >= 1 and steps >= 0, got {sizes}, {repeats}, {steps}")
    say = print if progress else (lambda *a, **k: None)
    sync = synchronizer(dev)
    info = {**machine_info(), **device_info, "channels": channels, "rank": rank, "steps": steps, "repeats": repeats}
    solver_rows = []
    for name, cls in HAMS.items():
        fn = getattr(HF, name)
        bases = cls(channels, rank=rank).eval_bases.to(dev)  # (1, D, R): the ham's own fixed start
        for size in sizes:
            say(f"{name} 1x{channels}x{size}x{size} ...")
            n = size * size
            row = {"ham": name, "size": size, "error": {}, "ms": {}}
            with torch.no_grad():
                for kind, x in _inputs(name, channels, n, dev).items():
                    ref = fn(x, bases, steps, grad="none").recon
                    g = torch.Generator().manual_seed(1)
                    wiggle = (1 + 2**-9 * torch.randn(x.shape, generator=g)).to(dev)
                    errors = {
                        "0.2% input perturbation, fp32": _rel(fn(x * wiggle, bases, steps, grad="none").recon, ref)
                    }
                    for p in precisions:
                        if p != "fp32":
                            errors[p] = _rel(fn(x, bases, steps, grad="none", precision=p).recon, ref)
                    row["error"][kind] = errors
                x = _inputs(name, channels, n, dev)["clustered features"]
                calls = {
                    p: (lambda p=p, fn=fn, x=x, bases=bases: fn(x, bases, steps, grad="none", precision=p))
                    for p in precisions
                }
                row["ms"] = {p: 1e3 * t for p, t in interleaved_medians(calls, repeats=repeats, sync=sync).items()}
            solver_rows.append(row)
    say(f"Hamburger block vs SDPA non-local, eval, 1x{channels}x{block_size}x{block_size} ...")
    block = _block_speed(channels, rank, block_size, precisions, repeats, dev, sync)
    result = {"machine": info, "solvers": solver_rows, "block": block}
    md = markdown(result)
    if out is not None:
        json_path, md_path = write_results(Path(out), "precision", info, {"solvers": solver_rows, "block": block}, md)
        say(f"wrote {md_path} and {json_path}")
    say("\n".join(md))
    return result


def _block_speed(channels, rank, size, precisions, repeats, dev, sync) -> dict:
    """Eval forward of the v1 NMF block (same weights) in each precision, and with bf16 autocast on top (the breads
    in bf16 too), and of the non-local block (SDPA) in fp32 and under bf16 autocast. Errors: against fp32."""
    torch.manual_seed(0)
    x = torch.randn(1, channels, size, size, device=dev)
    reference = Hamburger(channels, rank=rank).to(dev).eval()
    calls = {}
    variants = [(p, False) for p in precisions] + [("bf16", True)]  # bf16 ham products, then also bf16 breads
    for p, autocast in variants:
        block = Hamburger(channels, rank=rank, precision=p).to(dev).eval()
        block.load_state_dict(reference.state_dict())

        def ham(block=block, autocast=autocast):
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                return block(x)

        calls[f"Hamburger {p}" + (" + autocast" if autocast else "")] = ham
    attention = NonLocal(channels).to(dev).eval()
    for p in ("fp32", "bf16"):

        def att(p=p):
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=p == "bf16"):
                return attention(x)

        calls[f"non-local SDPA {p}"] = att
    with torch.no_grad():
        ref = reference(x)
        errors = {k: _rel(f().float(), ref) for k, f in calls.items() if k.startswith("Hamburger")}
    ms = {k: 1e3 * t for k, t in interleaved_medians(calls, repeats=repeats, sync=sync).items()}
    return {"size": size, "ms": ms, "error": errors}


def markdown(result: dict) -> list[str]:
    info = result["machine"]
    precisions = [p for p in result["solvers"][0]["ms"]]
    others = [p for p in precisions if p != "fp32"]
    md = [
        f"## Solvers, eval, 1x{info['channels']}xHxW, R={info['rank']}, K={info['steps']} "
        f"({info.get('gpu', info['cpu'])}, {info['threads']} threads)",
        "",
        "Relative reconstruction error against the fp32 solve; the perturbation column is the fp32 solve's own "
        "sensitivity to a 0.2% change of its input (one bf16 rounding).",
        "",
        "| ham | H=W | input | 0.2% perturbation | "
        + " | ".join(f"{p} error" for p in others)
        + " | "
        + " | ".join(f"{p} ms" for p in precisions)
        + " | fp32 / fastest |",
        "|---|---:|---|---:|" + "---:|" * (len(others) + len(precisions) + 1),
    ]
    for r in result["solvers"]:
        for i, (kind, errors) in enumerate(r["error"].items()):
            pert = errors["0.2% input perturbation, fp32"]
            cells = [f"{errors[p]:.2%}" for p in others]
            times = [f"{r['ms'][p]:.1f}" if i == 0 else "" for p in precisions]
            speed = f"{r['ms']['fp32'] / min(r['ms'].values()):.2f}x" if i == 0 else ""
            md.append(
                f"| {r['ham']} | {r['size']} | {kind} | {pert:.2%} | " + " | ".join(cells + times) + f" | {speed} |"
            )
    b = result["block"]
    att = min(b["ms"]["non-local SDPA fp32"], b["ms"]["non-local SDPA bf16"])
    md += [
        "",
        f"## Block, eval, 1x{info['channels']}x{b['size']}x{b['size']}: Hamburger (v1 NMF) vs non-local (SDPA)",
        "",
        "| block | ms | error vs fp32 | non-local fp32 / this | fastest non-local / this |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in b["ms"].items():
        err = f"{b['error'][k]:.2%}" if k in b["error"] else "-"
        md.append(f"| {k} | {v:.1f} | {err} | {b['ms']['non-local SDPA fp32'] / v:.2f}x | {att / v:.2f}x |")
    return md
