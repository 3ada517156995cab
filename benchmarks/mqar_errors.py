"""Where a trained MQAR model misses: test recall by pair position and by query position, and how many wrong answers
are another value of the same sequence (a confusion between pairs) rather than a value absent from it.

    python benchmarks/mqar_errors.py results/seq-mqar-3000/N256-P32/ham_nmf/seed0 --count 500 --seed 12345
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hamburger.seq.data import mqar
from hamburger.seq.eval import load_run


@torch.no_grad()
def analyse(run: Path, *, count: int = 500, seed: int = 12345, batch: int = 50) -> dict:
    model, config = load_run(run)
    if config.task != "mqar":
        raise SystemExit(f"{run} is a {config.task} run, not MQAR")
    model.eval()
    x, y = mqar(count, seq_len=config.seq_len, pairs=config.pairs, seed=seed)  # (count, N) each
    pred = torch.cat([model(x[i : i + batch]).argmax(-1) for i in range(0, count, batch)])  # (count, N)
    pairs = config.pairs
    by_pair, by_query = torch.zeros(pairs, 2), {}
    confusions = wrong = 0
    for i in range(count):
        keys, values = x[i, 0 : 2 * pairs : 2].tolist(), set(x[i, 1 : 2 * pairs : 2].tolist())
        for t in (y[i] >= 0).nonzero().flatten().tolist():
            ok = int(pred[i, t] == y[i, t])
            by_pair[keys.index(x[i, t].item())] += torch.tensor([ok, 1])
            block = by_query.setdefault(t // 32 * 32, [0, 0])
            block[0], block[1] = block[0] + ok, block[1] + 1
            if not ok:
                wrong += 1
                confusions += pred[i, t].item() in values
    total = int(by_pair[:, 1].sum())
    return {
        "run": str(run),
        "queries": total,
        "recall": float(by_pair[:, 0].sum()) / total,
        "recall_by_pair_position": (by_pair[:, 0] / by_pair[:, 1]).tolist(),
        "recall_by_query_position": {f"{b}-{b + 31}": c / n for b, (c, n) in sorted(by_query.items())},
        "wrong": wrong,
        "wrong_that_name_another_value_of_the_sequence": confusions,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a seq train --task mqar run folder (its best weights are read)")
    p.add_argument("--count", type=int, default=500, help="test sequences to generate")
    p.add_argument("--seed", type=int, default=12345, help="seed of those sequences")
    args = p.parse_args(argv)
    report = analyse(args.run, count=args.count, seed=args.seed)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
