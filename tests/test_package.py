import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hamburger import cli
from hamburger.bench import ham as bench_ham
from hamburger.viz import decompose

ROOT = Path(__file__).resolve().parents[1]


def test_import_loads_torch_only():
    code = (
        "import sys, torch;"
        "before = set(sys.modules);"
        "import hamburger;"
        "new = {m.split('.')[0] for m in set(sys.modules) - before};"
        "print(','.join(sorted(new)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = set(filter(None, out.stdout.strip().split(",")))
    heavy = {"torchvision", "timm", "yaml", "matplotlib", "skimage", "onnx", "onnxruntime", "tqdm", "numpy"}
    assert not (added & heavy), added
    assert added <= {"hamburger", "torch"}, added


def test_public_api_is_explicit_and_documented():
    import hamburger

    for name in hamburger.__all__:
        obj = getattr(hamburger, name)
        assert obj.__doc__, name


def test_readme_is_the_front_door():
    """A screen, not a manual: the README's examples run in tests/test_docs.py with every page's."""
    text = (ROOT / "README.md").read_text()
    assert re.search(r"```python\n", text), "README must contain a python example"
    assert len(text.splitlines()) <= 200


def test_readme_starts_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head


def test_decompose_errors_decrease_and_png_written(tmp_path):
    res = decompose.run(image="camera", ranks=(8, 32), steps=4, out=tmp_path, progress=False)
    for key, errors in res["errors"].items():
        assert len(errors) == 5 and all(0 < e < 1.01 for e in errors), key
        assert errors[-1] < errors[0], key
    # a larger rank explains more of the photo (VQ and CD, after the same steps)
    assert res["errors"]["vq-32"][-1] < res["errors"]["vq-8"][-1]
    assert res["errors"]["cd-32"][-1] < res["errors"]["cd-8"][-1]
    png = Path(res["png"])
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_decompose_cli_and_bad_arguments(tmp_path, capsys):
    assert cli.main(["decompose", "--ranks", "4", "--steps", "1", "--hams", "cd", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "relative error" in printed and "cd " in printed
    with pytest.raises(SystemExit):
        cli.main(["decompose", "--ranks", "four"])
    with pytest.raises(ValueError, match="image must be one of"):
        decompose.run(image="chelsea_cat", out=None, progress=False)
    with pytest.raises(ValueError, match="ham must be one of"):
        decompose.run(hams=("pca",), out=None, progress=False)


def test_bench_ham_tiny_every_field_present_and_positive(tmp_path):
    res = bench_ham.run(
        channels=16,
        size=8,
        rank=4,
        steps=2,
        repeats=2,
        train_size=8,
        train_steps=(1, 3),
        denormal_size=8,
        denormal_steps=3,
        out=tmp_path,
        progress=False,
    )["results"]
    assert res["matmul_gflops"] > 0
    speed = res["speed"]
    for key in ("ms", "gflop", "gflops_per_s"):
        assert set(speed[key]) == {"ours", "reference"} and all(v > 0 for v in speed[key].values())
    assert speed["max_abs_diff"] < 1e-4 and 0.85 < speed["flop_ratio"] <= 1.0
    assert set(res["training"]) == {"one-step K=1", "one-step K=3", "bptt K=1", "bptt K=3"}
    assert res["training"]["one-step K=1"]["saved_MiB"] == res["training"]["one-step K=3"]["saved_MiB"]
    assert res["training"]["bptt K=3"]["saved_MiB"] > res["training"]["bptt K=1"]["saved_MiB"]
    assert all(v["ms"] > 0 for v in res["denormals"].values())
    md = (tmp_path / "bench-ham.md").read_text()
    assert "threads:" in md and "torch:" in md and "| ours |" in md
    assert (tmp_path / "bench-ham.json").exists()


def test_reference_nmf_matches_library():
    x = torch.rand(2, 12, 30)
    bases = torch.nn.functional.normalize(torch.rand(2, 12, 5), dim=1)
    from hamburger.functional import nmf

    torch.testing.assert_close(bench_ham.reference_nmf(x, bases, 4), nmf(x, bases, 4).recon, rtol=1e-5, atol=1e-6)


def test_bench_context_tiny_every_field_present_and_positive(tmp_path):
    from hamburger.bench import context as bench_context

    res = bench_context.run(
        modules=("ham_nmf", "nonlocal", "nonlocal_naive", "ccnet"),
        channels=16,
        sizes=(6, 10),
        repeats=2,
        train_size=6,
        train_steps=(1, 4),
        out=tmp_path,
        progress=False,
    )
    assert len(res["rows"]) == 8 and not res["skipped"]
    for row in res["rows"]:
        for field in bench_context.FIELDS[3:]:
            assert row[field] > 0, (row["module"], field)
    # the fused CPU attention kernel is counted: the SDPA and the explicit non-local agree on FLOPs
    flops = {r["module"]: r["gflop_fwd"] for r in res["rows"] if r["size"] == 10}
    assert abs(flops["nonlocal"] - flops["nonlocal_naive"]) < 0.05 * flops["nonlocal_naive"]
    assert all(res["exponents"][m]["fwd_time"] is not None for m in ("ham_nmf", "nonlocal"))
    steps = {(r["grad"], r["steps"]): r["train_peak_mib"] for r in res["steps"]}
    assert steps["bptt", 4] > steps["bptt", 1]
    for name in ("bench.md", "bench.csv", "bench.json", "bench.png"):
        assert (tmp_path / name).stat().st_size > 100, name
    assert "threads" in (tmp_path / "bench.csv").read_text().splitlines()[0]


def test_bench_context_skips_instead_of_crashing(tmp_path):
    from hamburger.bench import context as bench_context

    res = bench_context.run(
        modules=("nonlocal_naive",),
        channels=8,
        sizes=(4, 8, 64),
        repeats=1,
        memory_limit_gib=1e-4,
        train_size=4,
        train_steps=(1,),
        out=None,
        progress=False,
    )
    assert [s["size"] for s in res["skipped"]] == [64]
    assert "predicted peak memory" in res["skipped"][0]["reason"]
    with pytest.raises(ValueError, match="unknown modules"):
        bench_context.run(modules=("transformer",), out=None, progress=False)


def test_peak_memory_is_measured_on_cpu():
    from hamburger.engine.measure import peak_memory

    x = torch.randn(256, 256)

    def two_live_buffers():
        a = x @ x  # 256 KiB
        b = a + 1  # 256 KiB more while a is alive
        return b.sum()

    peak = peak_memory(two_live_buffers, torch.device("cpu"))
    assert 2 * 256 * 256 * 4 <= peak < 4 * 256 * 256 * 4


def test_bench_seg_tiny(tmp_path):
    from hamburger.bench import seg as bench_seg

    res = bench_seg.run(models=("fcn_r18_d8", "hamnet_r18_d8"), crops=(32,), repeats=1, out=tmp_path, progress=False)
    assert len(res["rows"]) == 2
    for row in res["rows"]:
        assert row["train_images_per_s"] > 0 and row["eval_images_per_s"] > 0 and row["params_m"] > 1
    assert "| hamnet_r18_d8 | 32 |" in (tmp_path / "bench-seg.md").read_text()
