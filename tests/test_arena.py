"""`hamburger seq arena` at a tiny size: the mixture of cells, the learning-rate sweep, the seeds at the best rate,
both state counts, resumption and the sharded form."""

import json

import pytest
import torch

from hamburger.engine.common import machine_info
from hamburger.seq.config import SeqTrainConfig
from hamburger.seq.data import IGNORE, mqar_mixture, parse_cells
from hamburger.seq.experiments import arena

TINY = dict(depth=1, rank=4, chunk=4, batch_size=4, train_examples=8, val_examples=4, val_interval=2, iters=2)


def test_the_mixture_pads_each_cell_to_the_longest_and_interleaves_them():
    inputs, targets = mqar_mixture(3, ((8, 2), (12, 4)), seed=0)
    assert inputs.shape == targets.shape == (6, 12)
    assert (inputs[0::2, 8:] == 0).all() and (targets[0::2, 8:] == IGNORE).all()  # the 8-token cell, padded
    assert ((targets[0::2] != IGNORE).sum(1) == 2).all() and ((targets[1::2] != IGNORE).sum(1) == 4).all()
    with pytest.raises(ValueError, match="N >= 3 x pairs"):
        parse_cells("8:3")


def test_the_formula_counts_zoologys_state():
    config = SeqTrainConfig(dim=64, heads=2, depth=2, rank=8, chunk=16)
    assert arena.formula_state("softmax", 512, config) == 2 * 512 * 64
    assert arena.formula_state("deltanet", 512, config) == 2 * 32 * 32
    assert arena.formula_state("based", 512, config) == 2 * 153 * 33
    assert arena.formula_state("deltanet+swa", 512, config) == (2 * 32 * 32 + 2 * 64 * 64) / 2
    assert arena.formula_state("ham_nmf", 512, config) == 2 * (32 * 8 + 64 + 15 * 32)


def test_the_arena_at_a_tiny_size(tmp_path):
    torch.manual_seed(0)
    kw = dict(mixers=("deltanet", "ham_nmf+swa"), dims=(8, 16), lrs=(1e-3, 3e-3), seeds=(0, 1))
    kw |= dict(train_cells="16:2,24:4", test_cells="16:2,32:4", out=tmp_path / "arena", progress=False, **TINY)
    result = arena.run(**kw)
    assert len(result["runs"]) == 2 * 2 * (2 + 1)  # every LR at seed 0, then seed 1 at the best one
    rows = {(r["mixer"], r["dim"]): r for r in result["rows"]}
    assert set(rows) == {(m, d) for m in kw["mixers"] for d in kw["dims"]} and all(
        r["seeds"] == 2 for r in rows.values()
    )
    assert set(rows["deltanet", 8]["recall"]) == {"16:2", "32:4"}
    assert rows["deltanet", 16]["state_formula"] == rows["deltanet", 16]["state_stepped"] == 16 * 16
    assert rows["ham_nmf+swa", 8]["state_stepped"] > 0 and rows["ham_nmf+swa", 8]["state_at"] == 32
    runs = json.loads((tmp_path / "arena" / "seq-arena.json").read_text())["results"]["runs"]
    config = (tmp_path / "arena" / "deltanet" / "d8" / "lr0.001" / "seed0" / "config.yaml").read_text()
    assert len(runs) == 12 and "train_cells: 16:2,24:4" in config and "seq_len: 32" in config
    md = (tmp_path / "arena" / "seq-arena.md").read_text()
    cpu = machine_info()["cpu"]  # every run records its machine's CPU; the report counts the runs by CPU
    assert "| deltanet | 8 |" in md and all(r["cpu"] == cpu for r in runs) and f"Runs by CPU: {cpu} (12)." in md
    assert (tmp_path / "arena" / "seq-arena.png").stat().st_size > 1000
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "arena").glob("**/result.json")}
    arena.run(**kw, jobs=2)  # two shard processes per phase read the call; every run is done: nothing retrains
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "arena").glob("**/result.json")} == done
    call = json.loads((tmp_path / "arena" / "shards.json").read_text())
    assert call["kwargs"]["phase"] == 1 and call["kwargs"]["dims"] == [8, 16] and call["kwargs"]["rank"] == 4
    with pytest.raises(ValueError, match="more than max_hours"):
        arena.run(**{**kw, "out": tmp_path / "other"}, max_hours=1e-9)
    # a partial plan's report: one (mixer, width) without runs is left out, the missing runs counted, nothing trained
    partial = {**kw, "mixers": ("deltanet", "ham_nmf+swa", "linear")}
    report = arena.run(**partial, report_only=True)
    assert {(r["mixer"], r["dim"]) for r in report["rows"]} == set(rows) and len(report["runs"]) == 12
    assert "12 of the plan's 18 runs are finished" in (tmp_path / "arena" / "seq-arena.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "arena").glob("**/result.json")} == done


def test_the_command_line_builds_the_plan_and_refuses_one_over_its_hours(tmp_path, capsys):
    from hamburger.cli import main

    argv = ["seq", "arena", "--mixers", "none,swa", "--dim", "8,16", "--lr", "1e-3", "--test-cells", "64:4,512:8"]
    with pytest.raises(SystemExit, match="more than max_hours=1e-09"):
        main([*argv, "--iters", "10", "--max-hours", "1e-9", "--out", str(tmp_path / "a")])
    assert "plan: 4 runs of 10 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv, "--dim", "8,0"])
    assert "--dim" in capsys.readouterr().err


def test_report_only_from_the_command_line_trains_nothing(tmp_path, capsys):
    from hamburger.cli import main

    main(["seq", "arena", "--mixers", "none,swa", "--dim", "8,16", "--lr", "1e-3", "--report-only", "--out",
          str(tmp_path / "a")])  # fmt: skip
    assert "0 of the plan's 4 runs are finished" in capsys.readouterr().out
    assert not list((tmp_path / "a").glob("**/result.json")) and (tmp_path / "a" / "seq-arena.md").is_file()


def test_a_ham_variants_arena_joins_the_report_under_its_label(tmp_path, capsys):
    """--also LABEL=DIR: another arena's rows (the Ham with other options, in another folder) join the table and the
    plot as '<mixer> (LABEL)', their runs counted by CPU; a folder without a report or with other test cells is
    refused, a malformed flag is a usage error."""
    from hamburger.cli import main

    torch.manual_seed(0)
    kw = dict(mixers=("ham_nmf",), dims=(8,), lrs=(1e-3,), seeds=(0,), train_cells="16:2", test_cells="16:2,32:4")
    kw |= dict(progress=False, **{**TINY, "ham_fit": "delta"})
    variant = arena.run(**kw, out=tmp_path / "delta")
    assert variant["runs"][0]["state_stepped"] == 2 * 8 * 4  # the delta Ham's 2·D·R, D 8, R 4
    common = ["seq", "arena", "--mixers", "swa", "--dim", "8", "--lr", "1e-3", "--test-cells", "16:2,32:4"]
    main([*common, "--report-only", "--also", f"fit=delta, R 4={tmp_path / 'delta'}", "--out", str(tmp_path / "a")])
    md = (tmp_path / "a" / "seq-arena.md").read_text()
    assert "| ham_nmf (fit=delta, R 4) | 8 | 0.001 | 1 | 64 | 64 |" in md and "(1)." in md
    joined = json.loads((tmp_path / "a" / "seq-arena.json").read_text())
    assert [r["mixer"] for r in joined["results"]["rows"]] == ["ham_nmf (fit=delta, R 4)"]
    capsys.readouterr()
    with pytest.raises(SystemExit, match="does not exist"):
        main([*common, "--report-only", "--also", f"x={tmp_path / 'none'}", "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="tests other cells"):
        main(["seq", "arena", "--mixers", "swa", "--dim", "8", "--report-only", "--also", f"x={tmp_path / 'delta'}",
              "--out", str(tmp_path / "c")])  # fmt: skip
    with pytest.raises(SystemExit):
        main([*common, "--also", "no-folder"])
    assert "expected LABEL=DIR" in capsys.readouterr().err


def test_the_best_learning_rate_breaks_a_tie_at_full_validation_recall_by_the_training_loss():
    """Two rates at 100% on the validation mixture (softmax attention at C 32 here): the lower training loss at the
    last validation wins, whatever the order; a higher validation recall still wins over a lower loss."""
    runs = [
        {"mixer": "softmax", "dim": 32, "seed": 0, "lr": 2e-3, "val_accuracy": 1.0, "final_loss": 2e-4},
        {"mixer": "softmax", "dim": 32, "seed": 0, "lr": 8e-3, "val_accuracy": 1.0, "final_loss": 2e-7},
        {"mixer": "softmax", "dim": 32, "seed": 0, "lr": 5e-4, "val_accuracy": 0.07, "final_loss": 1e-9},
    ]
    assert arena.best_lrs(runs, ["softmax"], [32], 0) == {("softmax", 32): 8e-3}
    assert arena.best_lrs(runs[::-1], ["softmax"], [32], 0) == {("softmax", 32): 8e-3}
    runs[0]["val_accuracy"] = 1.0 + 1e-9
    assert arena.best_lrs(runs, ["softmax"], [32], 0) == {("softmax", 32): 2e-3}
