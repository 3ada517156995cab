"""Keep the finished runs of a long resumable plan in the repository, so that the next session resumes it: every run
folder under SRC holding a ``result.json`` is copied to the same place under DST with its ``config.yaml`` and the
validation records of its ``log.jsonl`` (no checkpoints: a finished run is read from its ``result.json`` alone).

    PYTHONPATH=src python3 benchmarks/keep_runs.py results/pretrained benchmarks/pretrained-runs
    cp -r benchmarks/pretrained-runs/. results/pretrained/   # the next session, before the plan's command

Prints what it kept and its size.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def _validation(record: dict) -> bool:
    return any(key.startswith("val_") for key in record)


def keep(src: Path, dst: Path) -> list[Path]:
    """Copy each finished run's small files from ``src`` to ``dst``; returns the run folders kept (relative)."""
    kept = []
    for result in sorted(Path(src).rglob("result.json")):
        run = result.parent
        rel = run.relative_to(src)
        target = Path(dst) / rel
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(result, target / "result.json")
        if (run / "config.yaml").is_file():
            shutil.copy2(run / "config.yaml", target / "config.yaml")
        log = run / "log.jsonl"
        if log.is_file():
            lines = [line for line in log.read_text().splitlines() if line.strip() and _validation(json.loads(line))]
            (target / "log.jsonl").write_text("".join(line + "\n" for line in lines))
        kept.append(rel)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="the plan's --out folder")
    parser.add_argument("dst", type=Path, help="a folder under benchmarks/")
    args = parser.parse_args()
    kept = keep(args.src, args.dst)
    size = sum(f.stat().st_size for f in args.dst.rglob("*") if f.is_file())
    for rel in kept:
        print(f"kept {rel}")
    print(f"{len(kept)} finished run(s) in {args.dst} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
