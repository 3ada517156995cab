"""`hamburger seq`: MQAR data, the sympy corpus and its baselines, the model's recurrent form, training on the
engine (resume), eval, compare and bench at a tiny size."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hamburger.cli import main
from hamburger.engine.checkpoint import load_weights
from hamburger.seq.config import SeqTrainConfig
from hamburger.seq.data import IGNORE, mqar, ngram_bits_per_char, sympy_corpus, tiles, windows
from hamburger.seq.model import SequenceModel
from hamburger.seq.train import train


def test_mqar_binds_every_query_to_its_value():
    inputs, targets = mqar(5, seq_len=40, pairs=6, vocab=64, seed=3)
    assert inputs.shape == targets.shape == (5, 40)
    for x, y in zip(inputs, targets):
        pairs = dict(zip(x[0:12:2].tolist(), x[1:12:2].tolist()))
        assert len(pairs) == 6 and all(1 <= k < 32 for k in pairs) and all(32 <= v < 64 for v in pairs.values())
        q = (y != IGNORE).nonzero()[:, 0]
        assert len(q) == 6 and q.min() >= 12
        for pos in q.tolist():
            assert y[pos] == pairs[x[pos].item()]  # the query's target is its key's value
        assert (x[12:][y[12:] == IGNORE] == 0).all()  # fillers elsewhere
    again = mqar(5, seq_len=40, pairs=6, vocab=64, seed=3)
    assert torch.equal(again[0], inputs) and not torch.equal(mqar(5, seq_len=40, pairs=6, vocab=64, seed=4)[0], inputs)
    with pytest.raises(ValueError, match="must hold 20 pairs"):
        mqar(1, seq_len=40, pairs=20)


def test_sympy_corpus_is_pinned_split_by_file_and_hashed():
    corpus = sympy_corpus()
    assert corpus["files"]["test"] > 20 and corpus["files"]["train"] > 10 * corpus["files"]["test"]
    assert len(corpus["train"]) > 10_000_000 and len(corpus["sha256"]) == 64
    assert b"def " in bytes(corpus["test"][:20000].tolist())
    uni = ngram_bits_per_char(corpus["train"], corpus["test"], order=1)
    bi = ngram_bits_per_char(corpus["train"], corpus["test"], order=2)
    assert 4.0 < uni < 5.5 and 3.0 < bi < uni - 0.5  # measured 4.64 and 3.55: below 8 bits, the bigram helps
    w = tiles(corpus["test"], length=100, limit=3)
    assert w.shape == (3, 101) and torch.equal(w[1, 0], w[0, 100])
    assert windows(corpus["val"], length=50, count=4, seed=0).shape == (4, 51)
    # machine-written data files are left out: bench_solvers.py alone was 39% of the test split
    from hamburger.seq.data import _generated

    assert _generated("sympy/polys/benchmarks/bench_solvers.py") and _generated("sympy/core/assumptions_generated.py")
    assert not _generated("sympy/core/function.py")
    assert 0.8 < len(corpus["test"]) / len(corpus["val"]) < 1.25  # 669 KB and 665 KB (1.16 MB of test with them)


def test_a_run_saved_before_a_field_existed_loads_with_what_it_trained_with(tmp_path):
    """A config.yaml without ``ham_norm`` (saved before it existed) is the earlier form, not today's default."""
    import yaml

    from hamburger.engine.config import load_run_config, save_config

    save_config(SeqTrainConfig(task="mqar", out=tmp_path), tmp_path / "config.yaml")
    assert load_run_config(tmp_path, SeqTrainConfig, "seq train").ham_norm == "unit"
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del data["ham_norm"], data["ham_grad"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    old = load_run_config(tmp_path, SeqTrainConfig, "seq train")
    assert (old.ham_norm, old.ham_grad) == ("none", "one-step")


def test_another_sympy_version_is_a_clear_error(monkeypatch):
    import importlib.metadata as md

    from hamburger.seq import data as seq_data

    real = md.distribution("sympy")

    class Other:
        version = "1.13.0"
        files = real.files

    monkeypatch.setattr(md, "distribution", lambda name: Other())
    with pytest.raises(ValueError, match="sympy 1.13.0 is installed"):
        seq_data._sympy_files()


def test_a_sympy_with_other_files_is_refused_by_the_corpus_hash(monkeypatch):
    """A sympy that reports 1.14.0 but holds other files (one file missing here) is another corpus: refused."""
    from hamburger.seq import data as seq_data

    dist, files = seq_data._sympy_files()
    monkeypatch.setattr(seq_data, "_sympy_files", lambda: (dist, files[1:]))
    with pytest.raises(ValueError, match=r"other files than the pinned corpus \(SHA-256 .*expected 80fa301894d484bb"):
        seq_data.sympy_corpus.__wrapped__()


@pytest.mark.parametrize(
    "mixer,conv",
    [("ham_nmf", 0), ("ham_nmf", 3), ("ham_vq", 0), ("softmax", 0), ("softmax", 4), ("linear", 0), ("none", 2)],
)
def test_generation_uses_the_recurrent_form_and_matches_teacher_forcing(mixer, conv):
    torch.manual_seed(0)
    kw = {"rank": 4, "chunk": 4} if mixer.startswith("ham_") else {}
    model = SequenceModel(32, dim=16, depth=2, mixer=mixer, heads=2, max_len=24, conv=conv, **kw).eval()
    if conv:  # a trained, non-zero short convolution
        with torch.no_grad():
            for block in model.decoder.blocks:
                block.conv.weight.normal_()
    tokens = torch.randint(0, 32, (2, 11))
    torch.testing.assert_close(model.step_logits(tokens), model(tokens), rtol=1e-4, atol=1e-4)
    out = model.generate(tokens[:, :3], 8)
    assert out.shape == (2, 11) and torch.equal(out[:, :3], tokens[:, :3])
    logits = model(out)  # greedy: each generated token is the argmax of teacher forcing on the generated prefix
    assert torch.equal(logits[:, 2:-1].argmax(-1), out[:, 3:])
    with pytest.raises(ValueError, match="exceeds max_len"):
        model.generate(tokens[:, :3], 30)


def _train_argv(out, *extra):
    return [
        "seq",
        "train",
        "--dim",
        "16",
        "--depth",
        "1",
        "--rank",
        "4",
        "--chunk",
        "8",
        "--batch-size",
        "4",
        "--no-tensorboard",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def test_mqar_train_eval_and_determinism(tmp_path, capsys):
    from hamburger.engine.checkpoint import load_weights

    def argv(out):
        return _train_argv(
            out,
            "--task",
            "mqar",
            "--seq-len",
            "32",
            "--pairs",
            "4",
            "--iters",
            "6",
            "--train-examples",
            "64",
            "--val-examples",
            "16",
            "--val-interval",
            "3",
        )

    main(argv(tmp_path / "run"))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7)) and 0 <= log[-1]["val_accuracy"] <= 1
    main(["seq", "eval", "--run", str(tmp_path / "run")])
    assert "test recall accuracy" in capsys.readouterr().out
    main(argv(tmp_path / "again"))
    a, b = load_weights(tmp_path / "run" / "last.safetensors"), load_weights(tmp_path / "again" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # deterministic given the seed
    with pytest.raises(SystemExit, match="seq_len >= 3 x pairs"):
        main(_train_argv(tmp_path / "bad", "--task", "mqar", "--seq-len", "8", "--pairs", "4"))


def test_lm_train_eval_generates_text(tmp_path, capsys):
    main(
        _train_argv(
            tmp_path / "lm",
            "--task",
            "lm",
            "--seq-len",
            "32",
            "--iters",
            "4",
            "--val-interval",
            "2",
            "--val-examples",
            "8",
            "--mixer",
            "ham_nmf",
            "--ham-width",
            "8",
            "--ham-keys",
            "4",
        )
    )
    from hamburger.engine.checkpoint import load_weights

    weights = load_weights(tmp_path / "lm" / "last.safetensors")
    in_proj = {tuple(v.shape) for k, v in weights.items() if k.endswith("mixer.in_proj.weight")}
    assert in_proj == {(8, 16)}  # C 16 -> W 8
    assert "ham_keys: 4" in (tmp_path / "lm" / "config.yaml").read_text()
    log = [json.loads(line) for line in (tmp_path / "lm" / "log.jsonl").read_text().splitlines()]
    assert 4 < log[-1]["val_bpc"] < 9
    main(["seq", "eval", "--run", str(tmp_path / "lm"), "--generate", "10"])
    text = capsys.readouterr().out
    assert "test bits per character" in text and "unigram" in text and "generated (recurrent form" in text
    report = json.loads((tmp_path / "lm" / "eval.json").read_text())
    assert report["sample"].startswith("def ") and len(report["corpus_sha256"]) == 64


def test_compare_and_bench_at_a_tiny_size(tmp_path, capsys):
    from hamburger.seq.experiments import bench as seq_bench
    from hamburger.seq.experiments import compare as seq_compare

    tiny = dict(
        dim=16,
        depth=1,
        rank=4,
        ham_width=8,
        ham_keys=4,
        ham_fit="ridge",
        ham_local="window",
        ham_decay=0.9,
        chunk=8,
        batch_size=4,
        train_examples=32,
        val_examples=8,
        val_interval=2,
    )
    part = seq_compare.run(
        task="mqar",
        mixers=("ham_nmf", "softmax", "none"),
        lengths=(24,),
        pairs=(4, 9),
        iters=2,
        out=tmp_path / "cmp",
        progress=False,
        shard=(1, 2),
        **tiny,
    )
    assert [r["mixer"] for r in part["runs"]] == ["softmax"] and not (tmp_path / "cmp" / "seq-compare-mqar.md").exists()
    # two processes read the comparison, the tiny sizes included, from the file it writes (no rebuilt command line)
    sharded = seq_compare.run(
        task="mqar",
        mixers=("ham_nmf", "none"),
        lengths=(24,),
        pairs=(4,),
        iters=2,
        out=tmp_path / "two",
        progress=False,
        jobs=2,
        **tiny,
    )
    call = json.loads((tmp_path / "two" / "shards.json").read_text())
    assert call["entry"] == "hamburger.seq.experiments.compare:run" and call["kwargs"]["ham_decay"] == 0.9
    assert call["kwargs"]["dim"] == 16 and call["kwargs"]["mixers"] == ["ham_nmf", "none"]
    assert sorted(r["mixer"] for r in sharded["runs"]) == ["ham_nmf", "none"]
    configs = [yaml.safe_load(p.read_text()) for p in (tmp_path / "two").glob("**/config.yaml")]
    assert len(configs) == 2 and all(c["dim"] == 16 and c["iters"] == 2 and c["ham_decay"] == 0.9 for c in configs)
    result = seq_compare.run(
        task="mqar",
        mixers=("ham_nmf", "softmax", "none"),
        lengths=(24,),
        pairs=(4, 9),
        iters=2,
        out=tmp_path / "cmp",
        progress=False,
        **tiny,
    )
    assert len(result["runs"]) == 3  # 3 x 9 > 24: that cell is skipped
    cells = seq_compare.plan(
        "mqar", ("ham_nmf", "none"), lengths=(24, 48), pairs=(4,), base=SeqTrainConfig(), out=tmp_path / "p"
    )
    assert [(c.mixer, c.seq_len) for c in cells] == [("ham_nmf", 24), ("none", 24), ("ham_nmf", 48)]
    listed = seq_compare.plan(
        "mqar", ("ham_nmf", "none"), cells=((48, 4), (24, 4), (24, 9)), base=SeqTrainConfig(), out=tmp_path / "p"
    )
    # only the listed cells, in their order, 3 x 9 > 24 skipped, the control at the shortest listed N
    assert [(c.mixer, c.seq_len, c.pairs) for c in listed] == [("ham_nmf", 48, 4), ("ham_nmf", 24, 4), ("none", 24, 4)]
    with pytest.raises(SystemExit):
        main(["seq", "compare", "--cells", "64x8", "--out", str(tmp_path / "x")])
    assert "expected N:PAIRS" in capsys.readouterr().err
    md = (tmp_path / "cmp" / "seq-compare-mqar.md").read_text()
    assert "| ham_nmf |" in md and "N 24, 4 pairs" in md and "spread" in md
    assert (tmp_path / "cmp" / "seq-compare-mqar.png").stat().st_size > 1000
    info = json.loads((tmp_path / "cmp" / "seq-compare-mqar.json").read_text())
    assert json.dumps(info).count('"ham_norm": "unit"') >= 1 and '"rank": 4' in json.dumps(info)
    assert '"ham_memory": "stats"' in json.dumps(info) and '"ham_width": 8' in json.dumps(info)
    assert '"ham_keys": 4' in json.dumps(info) and '"ham_fit": "ridge"' in json.dumps(info)
    assert '"ham_local": "window"' in json.dumps(info) and '"ham_decay": 0.9' in json.dumps(info)
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "cmp").glob("**/result.json")}
    seq_compare.run(
        task="mqar",
        mixers=("ham_nmf", "softmax", "none"),
        lengths=(24,),
        pairs=(4, 9),
        iters=2,
        out=tmp_path / "cmp",
        progress=False,
        **tiny,
    )
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cmp").glob("**/result.json")} == done
    with pytest.raises(SystemExit, match="unknown mixers"):
        main(["seq", "compare", "--mixers", "ham_nmf,mamba", "--out", str(tmp_path / "x")])
    # another recipe on the same --out: the stored results are refused, naming what differs (the probe of issue 25)
    with pytest.raises(ValueError, match=r"another recipe \(iters: 2 -> 3\)"):
        seq_compare.run(
            task="mqar",
            mixers=("ham_nmf",),
            lengths=(24,),
            pairs=(4,),
            iters=3,
            out=tmp_path / "cmp",
            progress=False,
            **tiny,
        )
    cli = [
        "seq",
        "compare",
        "--task",
        "mqar",
        "--lengths",
        "16",
        "--pairs",
        "4",
        "--mixers",
        "none",
        "--out",
        str(tmp_path / "sc"),
    ]
    main([*cli, "--iters", "2"])
    with pytest.raises(
        SystemExit,
        match=r"hamburger seq compare: .*result.json holds the result of another recipe "
        r"\(iters: 2 -> 5\)",
    ):
        main([*cli, "--iters", "5"])
    with pytest.raises(SystemExit, match=r"another recipe \(lr: 0.002 -> 0.001\)"):  # --lr reaches every run
        main([*cli, "--iters", "2", "--lr", "1e-3"])
    bench = seq_bench.run(
        ns=(64, 128),
        mixers=("ham_nmf", "softmax"),
        dim=16,
        heads=2,
        rank=4,
        ham_width=8,
        chunk=16,
        ham_fit="delta",
        repeats=1,
        out=tmp_path / "bench",
        progress=False,
    )
    assert len(bench["rows"]) == 4 and (tmp_path / "bench" / "seq-bench.png").is_file()
    md = (tmp_path / "bench" / "seq-bench.md").read_text()
    assert "faster forward from N" in md and "16, width=8, ham='nmf', rank=4" in md and "chunk=16" in md
    assert "fit='delta'" in md and '"ham_fit": "delta"' in md  # every Ham option reaches the layer timed
    with pytest.raises(TypeError, match="takes the Ham's options"):
        seq_bench.run(ns=(64,), mixers=("softmax",), lr=1e-3, out=tmp_path / "b2")
    rows = [{"mixer": "a", "n": n, "t": t} for n, t in ((1, 5), (2, 1), (4, 1))] + [
        {"mixer": "softmax", "n": n, "t": 2} for n in (1, 2, 4)
    ]
    assert seq_bench.crossover(rows, "a", "t") == 2


def test_short_conv_sees_only_the_last_k_tokens():
    from hamburger.sequence import ShortConv

    conv = ShortConv(3, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 10.0]], [[0.0, 1.0]], [[2.0, 0.0]]]))  # (C, 1, k)
    x = torch.arange(12.0).reshape(1, 4, 3)  # (B, N, C)
    y = conv(x)
    # channel 0: 1·x[t-1] + 10·x[t]; channel 1: x[t]; channel 2: 2·x[t-1] (zero before the first token)
    expected = torch.stack(
        [
            x[0, :, 0] * 10 + torch.cat([torch.zeros(1), x[0, :-1, 0]]),
            x[0, :, 1],
            2 * torch.cat([torch.zeros(1), x[0, :-1, 2]]),
        ],
        -1,
    )
    torch.testing.assert_close(y[0], expected)
    assert torch.equal(ShortConv(3, 2)(x), torch.zeros_like(x))  # zero at init: a block starts as without it
    with pytest.raises(ValueError, match="kernel"):
        ShortConv(3, 0)


@pytest.mark.parametrize("n,chunk", [(37, 8), (64, 16), (5, 64)])
def test_chunked_causal_linear_attention_equals_the_prefix_sums(n, chunk):
    import torch.nn.functional as F

    from hamburger.sequence import LinearMixer, _causal_linear

    torch.manual_seed(0)
    q, k, v = (F.elu(torch.randn(2, 3, n, 4, dtype=torch.float64)) + 1 for _ in range(3))  # (B, H, N, d)
    kv = torch.cumsum(k[..., :, None] * v[..., None, :], dim=2)  # the definition: prefix sums of φ(k)vᵀ
    num = (q[..., None, :] @ kv)[..., 0, :]
    den = (q * torch.cumsum(k, dim=2)).sum(-1, keepdim=True)
    got_num, got_den = _causal_linear(q, k, v, chunk)
    torch.testing.assert_close(got_num, num)
    torch.testing.assert_close(got_den, den)
    mixer = LinearMixer(8, heads=2, causal=True, chunk=chunk).double()
    x = torch.randn(2, n, 8, dtype=torch.float64)
    state, ys = mixer.init_state(2, dtype=torch.float64), []
    for t in range(n):  # the recurrent form agrees with the chunked parallel one
        y, state = mixer.step(x[:, t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), mixer(x))


def test_compare_reads_results_saved_before_a_ham_field_existed(tmp_path):
    """A new Ham option must not turn finished runs into "another recipe": the attention arms' results are read
    without the Ham's fields (they were saved with them), and a Ham result that lacks the new field reads as the
    field's earlier value (LEGACY_DEFAULTS) — accepted when the run asks for that value, refused otherwise."""
    from hamburger.engine.results import save_result
    from hamburger.seq.experiments import compare as seq_compare

    def stored(config):
        recipe = seq_compare.recipe_for(config)
        if not config.mixer.startswith("ham_"):
            recipe |= {"rank": 16, "ham_steps": 6, "chunk": 16, "ham_grad": "chunkwise", "ham_norm": "unit"}
        recipe.pop("ham_memory", None)  # saved before ham_memory and ham_width existed
        recipe.pop("ham_width", None)
        recipe.pop("ham_keys", None)
        recipe.pop("ham_fit", None)
        recipe.pop("ham_local", None)
        recipe.pop("ham_decay", None)
        config.out.mkdir(parents=True)
        save_result(config.out / "result.json", recipe, {"mixer": config.mixer, "accuracy": 0.5})

    soft = SeqTrainConfig(task="mqar", mixer="softmax", rank=24, ham_memory="stats", out=tmp_path / "soft")
    stored(soft)
    assert seq_compare._run_one(soft, progress=False)["accuracy"] == 0.5
    ham = SeqTrainConfig(task="mqar", mixer="ham_nmf", ham_memory="dict", out=tmp_path / "ham")
    stored(ham)
    assert seq_compare._run_one(ham, progress=False)["accuracy"] == 0.5  # ham_memory "dict", its earlier value
    with pytest.raises(ValueError, match=r"ham_memory: dict -> stats"):
        seq_compare._run_one(dataclasses.replace(ham, ham_memory="stats"), progress=False)
    with pytest.raises(ValueError, match=r"ham_width: 0 -> 32"):  # the full width, W = C, before the option
        seq_compare._run_one(dataclasses.replace(ham, ham_width=32), progress=False)
    with pytest.raises(ValueError, match=r"ham_keys: 0 -> 32"):  # every channel coded, before the option
        seq_compare._run_one(dataclasses.replace(ham, ham_keys=32), progress=False)
    with pytest.raises(ValueError, match=r"ham_fit: mult -> ridge"):  # K multiplicative updates, before the option
        seq_compare._run_one(dataclasses.replace(ham, ham_fit="ridge"), progress=False)
    with pytest.raises(ValueError, match=r"ham_local: none -> chunk"):  # no local read-out before the option
        seq_compare._run_one(dataclasses.replace(ham, ham_local="chunk", ham_memory="stats"), progress=False)
    with pytest.raises(ValueError, match=r"ham_decay: 0.0 -> 0.9"):  # equal weights before the option
        seq_compare._run_one(dataclasses.replace(ham, ham_decay=0.9, ham_memory="stats"), progress=False)


def test_resume_of_an_attention_run_ignores_the_hams_fields(tmp_path):
    """A softmax run checkpointed under other Ham defaults (rank, memory) resumes: those fields do not change it. A
    Ham run with a changed Ham field is still refused."""
    tiny = dict(
        task="mqar",
        dim=16,
        depth=1,
        seq_len=24,
        pairs=4,
        batch_size=4,
        train_examples=32,
        val_examples=8,
        val_interval=2,
        no_tensorboard=True,
        quiet=True,
    )
    train(SeqTrainConfig(mixer="softmax", rank=16, ham_memory="dict", iters=2, out=tmp_path / "s", **tiny))
    train(
        SeqTrainConfig(mixer="softmax", rank=24, ham_memory="stats", iters=2, resume=True, out=tmp_path / "s", **tiny)
    )  # (no "changed recipe")
    assert json.loads((tmp_path / "s" / "checkpoint.json").read_text())["step"] == 2
    train(SeqTrainConfig(mixer="ham_nmf", rank=4, chunk=8, iters=2, out=tmp_path / "h", **tiny))
    with pytest.raises(ValueError, match=r"changed recipe \(rank: 4 -> 5\)"):
        train(SeqTrainConfig(mixer="ham_nmf", rank=5, chunk=8, iters=2, resume=True, out=tmp_path / "h", **tiny))


SEQ_RUN = [
    "--task",
    "mqar",
    "--seq-len",
    "16",
    "--pairs",
    "2",
    "--train-examples",
    "64",
    "--val-examples",
    "8",
    "--dim",
    "4",
    "--depth",
    "1",
    "--rank",
    "2",
    "--chunk",
    "4",
    "--batch-size",
    "8",
    "--iters",
    "6",
    "--ckpt-interval",
    "2",
    "--val-interval",
    "2",
    "--warmup",
    "2",
    "--no-tensorboard",
    "--quiet",
]


def test_a_killed_sequence_run_resumes_bitwise_on_this_machine(tmp_path):
    """A sequence run SIGKILLed after step 5 (its checkpoint at step 4) and resumed equals a straight run bit for bit,
    and two straight runs are equal. Per machine: all three runs are made here, in this test; bits computed on
    another CPU are never compared (its kernels round differently)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "hamburger.cli", "seq", "train", *SEQ_RUN]
    killed = subprocess.run(
        [*cmd, "--out", str(tmp_path / "killed")], env={**env, "HAMBURGER_KILL_AT": "logged:5"}, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert json.loads((tmp_path / "killed" / "checkpoint.json").read_text())["step"] == 4
    resumed = subprocess.run([*cmd, "--out", str(tmp_path / "killed"), "--resume"], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("a", "b"):
        subprocess.run([*cmd, "--out", str(tmp_path / name)], check=True, env=env, capture_output=True)
    a, b, again = (load_weights(tmp_path / n / "last.safetensors") for n in ("a", "b", "killed"))
    assert a.keys() == again.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], again[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_seq_curves_plots_and_tabulates_the_runs_validation_points(tmp_path):
    """benchmarks/seq_curves.py (the capacity plot of the sequence results) at a tiny size, on written logs."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "seq_curves.py"
    spec = importlib.util.spec_from_file_location("seq_curves", path)
    curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curves)

    def run(name, points, test=None, metric="val_accuracy"):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"step": s, "loss": 1.0} for s in range(1, points[-1][0] + 1)]
        for step, value in points:
            rows[step - 1][metric] = value
        (folder / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        if test is not None:
            (folder / "result.json").write_text(json.dumps({"accuracy": test}))
        return folder

    a, b = run("a", [(2, 0.1), (4, 0.5)], test=0.55), run("b", [(2, 0.2)])
    out = tmp_path / "plot.png"
    got = curves.main([f"R 24={a}", f"R 32={b}", "--out", str(out)])
    assert got["R 24"]["points"] == [(2, 10.0), (4, 50.0)] and got["R 24"]["test"] == pytest.approx(55.0)
    table = out.with_suffix(".md").read_text()
    assert "| R 24 | 4 | 55.00 | 10.00 | 50.00 |" in table and "| R 32 | 2 | – | 20.00 | – |" in table
    assert out.stat().st_size > 1000
    lm = run("lm", [(2, 3.5)], metric="val_bpc")
    with pytest.raises(SystemExit, match="different metrics"):
        curves.main([f"a={a}", f"lm={lm}", "--out", str(out)])
    with pytest.raises(SystemExit, match="LABEL=RUN_FOLDER"):
        curves.main([str(a), "--out", str(out)])
    with pytest.raises(SystemExit, match="no log.jsonl"):
        curves.main([f"x={tmp_path}", "--out", str(out)])


def test_mqar_errors_counts_every_query_once(tmp_path):
    """benchmarks/mqar_errors.py (the sequence results' diagnosis of the misses) on a tiny trained run."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mqar_errors.py"
    spec = importlib.util.spec_from_file_location("mqar_errors", path)
    errors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(errors)
    main(
        _train_argv(
            tmp_path / "run",
            "--task",
            "mqar",
            "--seq-len",
            "40",
            "--pairs",
            "4",
            "--iters",
            "2",
            "--train-examples",
            "16",
            "--val-examples",
            "8",
            "--val-interval",
            "2",
        )
    )
    report = errors.main([str(tmp_path / "run"), "--count", "6", "--seed", "1"])
    assert report["queries"] == 6 * 4 and len(report["recall_by_pair_position"]) == 4
    assert set(report["recall_by_query_position"]) <= {"0-31", "32-63"}  # queries sit at 8 … 39 (after 2P tokens)
    assert report["wrong"] == round(report["queries"] * (1 - report["recall"]))
    assert 0 <= report["wrong_that_name_another_value_of_the_sequence"] <= report["wrong"]
