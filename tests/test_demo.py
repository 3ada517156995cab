import json

import pytest

from hamburger.cli import main


def test_demo_quick_runs_the_whole_path(tmp_path, monkeypatch, capsys):
    from hamburger.seg import scenes as animal_scenes

    monkeypatch.setattr(animal_scenes, "SPLITS", {"train": 64, "val": 16, "test": 16})
    out = tmp_path / "demo"
    main(["demo", "--quick", "--iters", "4", "--data-root", str(tmp_path / "data"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "test mIoU" in printed and "Hamburger (NMF)" in printed and "self-attention (SDPA)" in printed
    report = json.loads((out / "demo.json").read_text())
    assert report["machine"]["threads"] >= 1 and report["machine"]["seeds"] == [0]
    rows = {r["head"]: r for r in report["results"]["summary"]}
    assert set(rows) == {"hamnet", "nonlocal", "fcn"}
    for r in rows.values():
        for key in ("miou_mean", "params", "gflops", "train_ms_per_iter", "infer_ms_per_image", "infer_peak_mib"):
            assert r[key] >= 0 and r[key] == r[key], key
        assert r["params"] > 5e5
    # the same budget for every model
    runs = report["results"]["runs"]
    assert {(r["iters"], r["batch"], r["seed"]) for r in runs} == {(4, 16, 0)}
    for name in ("demo.md", "demo-curves.png", "demo-predictions.png"):
        assert (out / name).stat().st_size > 500, name
    # resumable: a second call reuses the finished runs
    (out / "fcn_tiny" / "seed0" / "log.jsonl").unlink()
    main(["demo", "--quick", "--iters", "4", "--data-root", str(tmp_path / "data"), "--out", str(out)])
    assert not (out / "fcn_tiny" / "seed0" / "log.jsonl").exists()
    # another budget on the same --out: refused, never the old runs' numbers under the new header
    with pytest.raises(SystemExit, match=r"hamburger demo: .*another recipe \(iters: 4 -> 5\)"):
        main(["demo", "--quick", "--iters", "5", "--data-root", str(tmp_path / "data"), "--out", str(out)])
    assert json.loads((out / "hamnet_tiny" / "seed0" / "result.json").read_text())["recipe"]["iters"] == 4


def test_compare_rejects_unknown_heads(tmp_path):
    with pytest.raises(SystemExit, match="unknown heads"):
        main(["seg", "compare", "--heads", "hamnet,transformer", "--out", str(tmp_path)])
