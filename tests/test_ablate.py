import json
from pathlib import Path

import pytest

from hamburger.cli import main
from hamburger.functional import DEFAULT_GRAD
from hamburger.seg.experiments import ablate
from hamburger.seg.experiments.ablate import ROWS, TEST_STEPS, findings, plan, run_tag, with_grad


def test_plan_shares_identical_configurations():
    runs = plan()
    # 3 seeds x 12 finding configs (the paper's one-step no longer the reference's), 1 x 15 sweeps
    assert len(runs) == len({(t, s) for t, _, _, s in runs}) == 36
    assert runs[0][:2] == ("hamnet-ref", "hamnet")
    assert run_tag("hamnet", {}) == "hamnet-ref" and run_tag("local", {}) == "local"
    refs = {label for _, label, head, over in ROWS if head == "hamnet" and not with_grad(head, over, None)}
    assert refs == {
        "Hamburger (NMF)",
        "both breads",
        "NMF",
        f"{DEFAULT_GRAD} (the default)",
        "v2",
        "random",
        "K=6",
        "R=16",
    }


def test_groups_train_and_report_their_rows_only(capsys):
    """``ablate --groups gradient``: the gradient row's 12 runs (3 seeds of one-step, the default, BPTT and none), its
    findings only."""
    runs = plan(groups=("gradient",))
    assert (
        sorted({t for t, *_ in runs}) == ["hamnet-grad=bptt", "hamnet-grad=none", "hamnet-grad=one-step", "hamnet-ref"]
        and len(runs) == 12
    )
    rows = {f"gradient/{label}": [50.0, 51.0, 52.0] for g, label, _, _ in ROWS if g == "gradient"}
    rows["gradient/BPTT"] = [60.0, 61.0, 62.0]
    rows[f"gradient/{DEFAULT_GRAD} (the default)"] = [59.0, 60.0, 61.0]
    lines = findings(rows, {})
    assert len(lines) == 2 and "*BPTT hurts where the one-step gradient does not*: **disagrees**" in lines[0]
    assert (
        f"the default {DEFAULT_GRAD} beats the paper's one-step*: **agrees** — +9.0 over one-step, -1.0 over BPTT"
        in lines[1]
    )
    with pytest.raises(SystemExit) as refused:  # a usage error naming the groups
        main(["ablate", "--groups", "gradient,nosuch"])
    assert refused.value.code == 2
    with pytest.raises(ValueError, match="unknown ablation group"):  # the Python API says so too
        ablate.run(out=Path("unused"), groups=("gradient", "nosuch"))


def test_ham_grad_sets_every_hamburger_row_but_the_gradient_rows():
    runs = plan(ham_grad="truncated:1")
    # 36 + the default's row's 3 seeds, which no longer share the reference's runs
    assert len(runs) == 39 and runs[0][:2] == ("hamnet-grad=truncated:1", "hamnet")
    tags = {t for t, *_ in runs}
    # the gradient rows keep their own; the rest (not the breads-only head) train with truncated:1
    assert {"hamnet-grad=bptt", "hamnet-grad=none", "hamnet-ref", "local"} <= tags
    assert "hamnet-grad=truncated:1-type=vq" in tags and "hamnet-rank=8" not in tags
    assert with_grad("hamnet", {"rank": 8}, "bptt") == {"rank": 8, "ham_grad": "bptt"}
    assert with_grad("hamnet", {"ham_grad": DEFAULT_GRAD}, None) == {}  # the default: shares the reference's folder
    assert with_grad("hamnet", {"ham_grad": "one-step"}, None) == {"ham_grad": "one-step"}
    assert with_grad("local", {}, "bptt") == {}
    assert with_grad("hamnet", {"ham_steps": 1}, "truncated:2") == {"ham_steps": 1, "ham_grad": "bptt"}  # k <= K
    assert with_grad("hamnet", {"ham_steps": 1}, "phantom:2:0.5") == {"ham_steps": 1, "ham_grad": "phantom:1:0.5"}
    assert plan(ham_grad=DEFAULT_GRAD) == plan()


def test_findings_read_the_numbers():
    rows = {f"{g}/{label}": [50.0, 51.0, 52.0] for g, label, _, _ in ROWS}
    rows["ham/no ham: breads only"] = [40.0, 41.0, 42.0]  # far below: agrees
    rows["ham type/VQ"] = [55.0, 56.0, 57.0]  # NMF loses to VQ: disagrees
    rows["gradient/BPTT"] = [50.5, 50.5, 50.5]  # ahead in the mean only
    rows["breads/no upper bread"] = [50.5, 51.5, 52.5]  # behind by less than the spread: not shown
    rows["K train/K=3"] = [53.0]
    text = "\n".join(findings(rows, {k: [50.0 + (k == 4)] for k in TEST_STEPS}))
    assert "*The ham is essential*: **agrees** — +10.0" in text
    assert "*NMF beats VQ and CD*: **disagrees** (the opposite holds beyond the seed spread)" in text
    assert "*BPTT hurts where the one-step gradient does not*: agrees in the means, within the seed spread" in text
    assert "*Both breads help*: not shown (differences within the seed spread)" in text
    assert "*K of 3–6 for training and testing*: **agrees** — best K in training 3 (53.0; K 3 53.0, K 6 51.0)" in text
    rows["K train/K=10"] = [53.5]  # outside 3-6 but within one std (1.0) of K 3
    text = "\n".join(findings(rows, {k: [50.0 + (k == 4)] for k in TEST_STEPS}))
    assert "K of 3–6 for training and testing*: agrees within the seed spread" in text
    rows["K train/K=10"] = [60.0]
    assert "K of 3–6 for training and testing*: **disagrees**" in "\n".join(findings(rows, {6: [50.0]}))
    # one seed has no spread: no verdict, whatever the means (issue 25: `ablate --seeds 0` said "agrees")
    single = {k: v[:1] for k, v in rows.items()}
    lines = findings(single, {k: [50.0] for k in TEST_STEPS})
    assert all("one seed: no verdict" in line for line in lines), lines


def test_repeated_seeds_and_names_are_refused(capsys):
    for argv in (
        ["ablate", "--seeds", "0,0"],
        ["gan", "compare", "--seeds", "0,0"],
        ["seq", "compare", "--seeds", "1,2,1"],
        ["seg", "compare", "--seeds", "3,3"],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "must be distinct" in capsys.readouterr().err, argv
    with pytest.raises(SystemExit, match="names must be distinct, got none more than once"):
        main(["seq", "compare", "--mixers", "none,none"])
    with pytest.raises(SystemExit, match="heads must be distinct|names must be distinct"):
        main(["seg", "compare", "--heads", "fcn,fcn"])


def test_ablate_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    from hamburger.seg import scenes as animal_scenes
    from hamburger.seg.experiments import ablate

    monkeypatch.setattr(animal_scenes, "SPLITS", {"train": 32, "val": 8, "test": 8})
    monkeypatch.setattr(ablate, "TEST_STEPS", (1, 6))
    out = tmp_path / "ablate"
    argv = [
        "ablate",
        "--seeds",
        "0",
        "--sweep-seeds",
        "0",
        "--iters",
        "2",
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        str(out),
    ]
    main(argv)
    report = json.loads((out / "ablate.json").read_text())
    assert set(report["k_test"]) == {"1", "6"} and len(report["rows"]) == len(ROWS)
    md = (out / "ablate.md").read_text()
    assert "*Both breads help*" in md and "| no upper bread |" in md
    for name in ("ablate-k-train.png", "ablate-r.png", "ablate-k-test.png", "ablate-rows.png"):
        assert (out / name).stat().st_size > 1000
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/result.json")}
    assert len(done) == 18
    main(argv)  # resumable: every finished run is reused, none retrained
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/result.json")} == done
    main([*argv, "--jobs", "2"])  # two shard processes read the call from shards.json: the same plan, all done
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/result.json")} == done
    call = json.loads((out / "shards.json").read_text())
    assert call["entry"] == "hamburger.seg.experiments.ablate:run" and call["kwargs"]["iters"] == 2
    assert call["kwargs"]["data_root"] == str(tmp_path / "data") and "seed 0" in (out / "shard1of2.log").read_text()


def test_shards_partition_the_plan_and_bad_shards_are_refused(capsys):
    import pytest

    runs = plan()
    halves = [runs[i::2] for i in range(2)]
    assert sorted(halves[0] + halves[1], key=runs.index) == runs and not set(map(str, halves[0])) & set(
        map(str, halves[1])
    )
    for bad in ("2/2", "a/b", "1"):
        with pytest.raises(SystemExit):
            main(["ablate", "--shard", bad])
        assert "--shard" in capsys.readouterr().err
