"""The solves of this checkout against those of an earlier commit, timed interleaved in one process (issue 29's
target: the bf16 NMF solve at most 0.4x the fp32 solve of commit c38adf9, and the fp32 solve no slower than it).

    PYTHONPATH=src python3 benchmarks/solve_vs_commit.py [--commit c38adf9] [--threads 2] [--out results/solve-vs]
    PYTHONPATH=src python3 benchmarks/solve_vs_commit.py --old-file old_functional.py   # no git at hand

The earlier commit's ``src/hamburger/functional.py`` (self-contained: torch only) is read with ``git show`` (or from
``--old-file``) and imported under another name beside today's. Writes OUT/solve-vs-commit.md and .json, the machine
named in both. X is uniform in [0, 1) (the solve's cost does not depend on the values), the bases the NMF ham's fixed
start; both solves start from the same bases and their reconstructions are compared.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hamburger import functional as HF
from hamburger.engine.common import interleaved_samples, machine_info, paired_ratio
from hamburger.ham import NMF

HAMS = ("nmf", "vq", "cd")


def load_old(commit: str | None, old_file: Path | None):
    """The earlier ``hamburger.functional`` as a module of its own."""
    if old_file is None:
        text = subprocess.run(
            ["git", "show", f"{commit}:src/hamburger/functional.py"], check=True, capture_output=True, text=True
        ).stdout
        old_file = Path(tempfile.mkdtemp()) / "functional_old.py"
        old_file.write_text(text)
    spec = importlib.util.spec_from_file_location("hamburger_functional_old", old_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass in the module looks its module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commit", default="c38adf9")
    p.add_argument("--old-file", type=Path, default=None, help="the earlier functional.py, instead of git show")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--size", type=int, default=128, help="H = W")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--hams", default="nmf", help=f"comma-separated, of {HAMS}")
    p.add_argument("--out", type=Path, default=Path("results/solve-vs-commit"))
    args = p.parse_args(argv)
    hams = [h for h in args.hams.split(",") if h]
    if any(h not in HAMS for h in hams) or args.threads < 1 or args.repeats < 1:
        p.error(f"--hams must be among {HAMS}; --threads and --repeats >= 1")
    torch.set_num_threads(args.threads)
    old = load_old(args.commit, args.old_file)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, args.channels, args.size * args.size, generator=g)  # (B, D, N)
    bases = NMF(args.channels, rank=args.rank).eval_bases  # (1, D, R)
    rows = []
    with torch.no_grad():
        for ham in hams:
            xin = x if ham == "nmf" else x - 0.5  # VQ / CD take signed features
            fns, errors = {}, {}
            new_kw = {"fused": False} if ham == "nmf" else {}
            old_kw = new_kw if "fused" in inspect.signature(getattr(old, ham)).parameters else {}
            ref = getattr(old, ham)(xin, bases, args.steps, grad="none", **old_kw).recon
            for precision in ("fp32", "bf16"):
                for who, module, kw in (("old", old, old_kw), ("new", HF, new_kw), ("new plain", HF, new_kw)):

                    def solve(module=module, precision=precision, kw=kw, ham=ham, xin=xin, plain=who == "new plain"):
                        # "new plain": XᵀD as the bmm of Xᵀ's view, as on GPUs: not (DᵀX)ᵀ (fp32), not Xᵀ's copy (bf16)
                        with HF.cpu_settings(**({"wide_xtd": False, "xt_band": 0} if plain else {})):
                            return getattr(module, ham)(xin, bases, args.steps, grad="none", precision=precision, **kw)

                    fns[f"{who} {precision}"] = solve
                    recon = solve().recon
                    errors[f"{who} {precision}"] = float((recon - ref).norm() / ref.norm())
            samples = interleaved_samples(fns, repeats=args.repeats)
            ms = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
            paired = {k: paired_ratio(samples, k, "old fp32") for k in samples}
            rows.append(
                {
                    "ham": ham,
                    "ms": ms,
                    "error_vs_old_fp32": errors,
                    "paired_over_old_fp32": paired,
                    "new_bf16_over_old_fp32": ms["new bf16"] / ms["old fp32"],
                    "new_fp32_over_old_fp32": ms["new fp32"] / ms["old fp32"],
                }
            )
            print(f"{ham}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()), flush=True)
    info = {
        **machine_info(),
        "commit_old": args.commit if args.old_file is None else str(args.old_file),
        "channels": args.channels,
        "size": args.size,
        "rank": args.rank,
        "steps": args.steps,
        "repeats": args.repeats,
    }
    md = [
        f"# The solve against commit {info['commit_old']} (1 x {args.channels} x {args.size}², R {args.rank}, "
        f"K {args.steps}, {args.threads} thread(s), no autograd)",
        "",
        f"Machine: {info['cpu']} ({info['cpu_capability']}; bf16 units: {info['bf16_units']}), "
        f"torch {info['torch']}. Interleaved medians of "
        f"{args.repeats}, in one process.",
        "",
        "'new plain' is today's code with XᵀD as the product of Xᵀ's view (as on GPUs): neither as (DᵀX)ᵀ (CPU fp32) "
        "nor from Xᵀ's contiguous copy (CPU bf16). 'paired' is the median over rounds of the ratio to the old fp32 "
        "solve timed beside it (a shared machine's slow spells hit both); errors are the reconstruction's relative "
        "error against the old fp32 solve.",
        "",
        "| ham | precision | old ms | new ms | new plain ms | new / old fp32 | paired | new plain / old fp32 | "
        "new error | new plain error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms, err, paired = r["ms"], r["error_vs_old_fp32"], r["paired_over_old_fp32"]
        for p in ("fp32", "bf16"):
            md.append(
                f"| {r['ham']} | {p} | {ms[f'old {p}']:.1f} | {ms[f'new {p}']:.1f} | {ms[f'new plain {p}']:.1f} "
                f"| {ms[f'new {p}'] / ms['old fp32']:.2f} | {paired[f'new {p}']:.2f} "
                f"| {ms[f'new plain {p}'] / ms['old fp32']:.2f} | {err[f'new {p}']:.1e} "
                f"| {err[f'new plain {p}']:.1e} |"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "solve-vs-commit.md").write_text("\n".join(md) + "\n")
    result = {"machine": info, "rows": rows}
    (args.out / "solve-vs-commit.json").write_text(json.dumps(result, indent=1))
    print("\n".join(md))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
