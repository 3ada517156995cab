"""`hamburger seg pretrained` (issue 44's table): the plan of arms x initialisations x seeds, its learning rates and
folders, the answers it draws from finished runs, and one small plan trained and read back."""

import json
import math

import pytest

from hamburger.cli import main
from hamburger.seg.experiments import pretrained as P

pytest.importorskip("timm")


def test_the_plan_is_seed_major_with_one_recipe_for_every_head():
    runs = P.run_plan(("hamnet", "hamnet@one-step"), P.INITS, (0, 1), lr=5e-4, head_lr_mult=4, pretrained="x.pt")
    assert [(t, s) for t, _, _, s in runs][:4] == [
        ("hamnet-pretrained", 0),
        ("hamnet-grad=one-step-pretrained", 0),
        ("hamnet-scratch", 0),
        ("hamnet-grad=one-step-scratch", 0),
    ]
    assert len(runs) == 8
    by = {(t, s): o for t, _, o, s in runs}
    # pretrained: the backbone at lr, the heads at lr x 4; from scratch everything at the heads' rate
    assert by["hamnet-pretrained", 0] == {
        "model": "hamnet_efflite0",
        "lr": 5e-4,
        "pretrained": "x.pt",
        "head_lr_mult": 4,
    }
    assert by["hamnet-scratch", 1] == {"model": "hamnet_efflite0", "lr": 2e-3}
    assert by["hamnet-grad=one-step-scratch", 0]["ham_grad"] == "one-step"


@pytest.mark.parametrize(
    ("arm", "message"), [("nonlocal@bptt", "holds no Hamburger"), ("transformer", "unknown head 'transformer'")]
)
def test_a_bad_arm_is_named(arm, message):
    with pytest.raises(ValueError, match=message):
        P.parse_arm(arm)


def _stat(values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "seeds": len(values), "mious": values}


def test_answers_state_the_three_questions_in_numbers():
    none = {"mean": float("nan"), "std": float("nan"), "seeds": 0, "mious": []}
    rows = [
        {"arm": "hamnet", "pretrained": _stat([70.0, 71.0, 72.0]), "scratch": none},
        {"arm": "nonlocal", "pretrained": _stat([66.0, 67.0, 68.0]), "scratch": none},
        {"arm": "hamnet@one-step", "pretrained": _stat([60.0]), "scratch": none},
        {"arm": "hamnet@bptt", "pretrained": _stat([72.5, 73.5]), "scratch": none},
    ]
    lines = P.answers(rows)
    assert "- pretrained: Hamburger − self-attention = +4.0 (71.0 vs 67.0, seeds 3 / 3)" in lines
    assert "- pretrained: one-step − default gradient = -11.0 (60.0 vs 71.0, seeds 1 / 3)" in lines
    # |71 - 73| = 2 > max(1, std 0.71) = 1
    assert "- pretrained: default − BPTT = -2.0 (71.0 vs 73.0, seeds 3 / 2), outside max(1, std) = 1.0" in lines
    assert not any(line.startswith("- scratch") for line in lines)


def test_a_small_plan_trains_reports_and_is_read_back(tmp_path, capsys):
    """Two runs (fcn pretrained and from scratch, 2 steps): the plan's hours, each run's folder and recipe, the table,
    and a second call that trains nothing; a --report-only call on a wider plan lists what is missing."""
    out = tmp_path / "p"
    argv = ["seg", "pretrained", "--arms", "fcn", "--seeds", "0", "--iters", "2", "--batch-size", "2",
            "--val-interval", "1", "--max-val-samples", "2", "--out", str(out)]  # fmt: skip
    main(argv)
    printed = capsys.readouterr().out
    assert "plan: 2 runs of 2 steps, 0 finished; the other 2 take about" in printed
    pre = (out / "fcn-pretrained" / "seed0" / "config.yaml").read_text()
    scratch = (out / "fcn-scratch" / "seed0" / "config.yaml").read_text()
    assert "pretrained: package:efficientnet-lite0" in pre and "head_lr_mult: 4.0" in pre and "lr: 0.0005" in pre
    assert "pretrained: null" in scratch and "head_lr_mult: 1.0" in scratch and "lr: 0.002" in scratch
    table = json.loads((out / "pretrained.json").read_text())
    row = table["results"]["rows"][0]
    assert row["arm"] == "fcn" and row["pretrained"]["seeds"] == 1 and row["scratch"]["seeds"] == 1
    stored = json.loads((out / "fcn-scratch" / "seed0" / "result.json").read_text())
    assert row["scratch"]["mean"] == pytest.approx(100 * stored["test_miou"])
    assert (out / "pretrained-curves.png").stat().st_size > 0
    main(argv)
    assert "plan: 2 runs of 2 steps, 2 finished; the other 0 take about 0.0 hours" in capsys.readouterr().out
    main([*argv[:3], "fcn,nonlocal", *argv[4:], "--report-only"])
    report = (out / "pretrained.md").read_text()
    assert "Not yet run (2): nonlocal-pretrained seed 0, nonlocal-scratch seed 0" in report
    assert "| no context (matched convs) | " in report
