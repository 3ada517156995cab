"""Does the causal Ham train without NaN at long N? 1,000 MQAR steps at N 1024 (64 pairs), 3 seeds, per gradient
and scale form (``--norms unit,none``: the mixer's ``norm``).

Each run is `hamburger seq train` with its defaults otherwise (the Ham's rank, width, K, chunk, memory: whatever
`hamburger seq train --help` says today; each run's config.yaml records them) in
``OUT/<grad>[-<norm>]/seed<s>`` (no suffix for the default norm), resumable; a run that hits a non-finite loss is
recorded with the step (the training loop raises at the first one) and the sweep goes on. Writes
``OUT/long-sequences.md`` / ``.json``.

    PYTHONPATH=src python3 benchmarks/long_sequences.py --grads chunkwise --norms unit,none --out results/long-sequences
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from hamburger.engine.common import atomic_write_text, machine_info
from hamburger.mixer import DEFAULT_MIXER_NORM
from hamburger.seq.config import SeqTrainConfig
from hamburger.seq.train import train


def run_one(grad: str, seed: int, *, out: Path, seq_len: int, pairs: int, iters: int, norm: str = "unit") -> dict:
    run_dir = out / (grad.replace(":", "_") + ("" if norm == DEFAULT_MIXER_NORM else f"-{norm}")) / f"seed{seed}"
    done = run_dir / "outcome.json"
    if done.exists():
        return json.loads(done.read_text())
    config = SeqTrainConfig(
        task="mqar",
        seq_len=seq_len,
        pairs=pairs,
        iters=iters,
        ham_grad=grad,
        seed=seed,
        ham_norm=norm,
        out=run_dir,
        resume=True,
        quiet=True,
        no_tensorboard=True,
    )
    failed_at = None
    try:
        train(config)
    except FloatingPointError as e:  # the loop names the step of the first non-finite loss
        found = re.search(r"at step (\d+)", str(e))
        failed_at = int(found.group(1)) if found else -1
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    vals = [r["val_accuracy"] for r in log if "val_accuracy" in r]
    outcome = {
        "grad": grad,
        "norm": norm,
        "seed": seed,
        "steps": log[-1]["step"] if log else 0,
        "nan_at": failed_at,
        "final_val_recall": vals[-1] if vals else None,
        "max_loss": max(r["loss"] for r in log),
    }
    atomic_write_text(done, json.dumps(outcome))
    return outcome


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grads", default="chunkwise", help="comma-separated HamMixer gradients")
    p.add_argument("--norms", default="unit", help="comma-separated HamMixer scale forms (unit, none)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("results/long-sequences"))
    args = p.parse_args()
    rows = [
        run_one(g, int(s), out=args.out, seq_len=args.seq_len, pairs=args.pairs, iters=args.iters, norm=nm)
        for g in args.grads.split(",")
        for nm in args.norms.split(",")
        for s in args.seeds.split(",")
    ]
    md = [f"# Causal Ham, MQAR N {args.seq_len}, {args.pairs} pairs, {args.iters} steps", ""]
    md += [f"- {k}: {v}" for k, v in machine_info().items()]
    md += [
        "",
        "| gradient | norm | seed | steps done | first non-finite loss at step | last validation recall |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        recall = f"{100 * r['final_val_recall']:.1f}%" if r["final_val_recall"] is not None else "-"
        cells = [r["grad"], r.get("norm", "none"), r["seed"], r["steps"], r["nan_at"] or "none", recall]
        md.append("| " + " | ".join(map(str, cells)) + " |")
    atomic_write_text(args.out / "long-sequences.md", "\n".join(md) + "\n")
    atomic_write_text(args.out / "long-sequences.json", json.dumps(rows, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
