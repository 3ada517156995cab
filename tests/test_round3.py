"""Nothing silently wrong, round 3 (issue 43): run folders that only ever delete their own files, finite flags, every
plan checked before its first run. Each test reproduces a probe of the issue through ``hamburger.cli.main`` or the
public API and checks the one-line error (or the right result) and that nothing of the user's is lost."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import hamburger as hb
from hamburger import functional as HF
from hamburger.cli import main
from hamburger.engine.checkpoint import load_checkpoint, load_weights, save_weights

FIXTURE = Path(__file__).parent / "fixtures" / "seq-run-0.1"
T = [
    "--task",
    "mqar",
    "--seq-len",
    "16",
    "--pairs",
    "2",
    "--train-examples",
    "8",
    "--val-examples",
    "4",
    "--dim",
    "8",
    "--rank",
    "2",
    "--iters",
    "2",
    "--batch-size",
    "4",
    "--no-tensorboard",
    "--quiet",
    "--val-interval",
    "0",
]
T4 = [*T, "--chunk", "4"]  # T with a chunk shorter than the sequence


def _user_folder(root: Path) -> dict[Path, str]:
    files = {
        root / "config.yaml": "x",
        root / "last-minute-todo.txt": "x",
        root / "result.json": "x",
        root / "samples" / "cat.png": "x",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


def test_overwrite_removes_only_what_a_run_recorded_as_its_own(tmp_path):
    """Finding 1: a folder without a run record is refused by --overwrite, naming its files, and keeps them all; in a
    run's own folder --overwrite removes the run's files and leaves the user's (beside them and inside samples/)."""
    files = _user_folder(tmp_path / "O")
    with pytest.raises(
        SystemExit,
        match=r"is not a run folder \(.hamburger-run.json is missing\) but holds "
        r"config.yaml, result.json, samples.*--overwrite removes only",
    ):
        main(["seq", "train", *T4, "--out", str(tmp_path / "O"), "--overwrite"])
    assert all(path.read_text() == text for path, text in files.items())
    assert sorted(p.name for p in (tmp_path / "O").iterdir()) == [
        "config.yaml",
        "last-minute-todo.txt",
        "result.json",
        "samples",
    ]  # (not even a .lock left)
    run = tmp_path / "run"
    main(["seq", "train", *T4, "--out", str(run)])
    assert json.loads((run / ".hamburger-run.json").read_text())["files"][:2] == ["checkpoint.json", "config.yaml"]
    (run / "last-minute-todo.txt").write_text("mine")
    (run / "samples").mkdir()
    (run / "samples" / "cat.png").write_text("mine")
    (run / "samples" / "step0000002.png").write_text("a run's grid")
    first = load_weights(run / "last.safetensors")
    main(["seq", "train", *T4, "--seed", "3", "--out", str(run), "--overwrite"])
    assert (run / "last-minute-todo.txt").read_text() == "mine" and (run / "samples" / "cat.png").read_text() == "mine"
    assert not (run / "samples" / "step0000002.png").exists()
    assert any(not torch.equal(first[k], v) for k, v in load_weights(run / "last.safetensors").items())
    # a run folder written before records existed is never overwritten (it may be resumed: see test_layout)
    old = tmp_path / "old"
    shutil.copytree(FIXTURE, old)
    with pytest.raises(SystemExit, match=r"is not a run folder .* holds best.safetensors, checkpoint.json"):
        main(["seq", "train", "--config", str(old / "config.yaml"), "--out", str(old), "--overwrite"])
    assert load_checkpoint(old)[2]["step"] == 4


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path):
    """Finding 2: --resume into a folder holding a user's config.yaml is refused and the file kept; into a missing or
    empty folder it starts fresh (seq compare resumes every run)."""
    (tmp_path / "O3").mkdir()
    (tmp_path / "O3" / "config.yaml").write_text("my: project\n")
    with pytest.raises(SystemExit, match=r"O3 is not a run folder .* holds config.yaml: a run would write over"):
        main(["seq", "train", *T4, "--out", str(tmp_path / "O3"), "--resume"])
    assert (tmp_path / "O3" / "config.yaml").read_text() == "my: project\n"
    (tmp_path / "empty").mkdir()
    for name in ("missing", "empty"):
        main(["seq", "train", *T4, "--out", str(tmp_path / name), "--resume"])
        assert load_checkpoint(tmp_path / name)[2]["step"] == 2


def test_the_lock_does_not_follow_a_symlink(tmp_path):
    """Finding 3: a .lock that is a symlink is refused; the file it points to is untouched."""
    (tmp_path / "L").mkdir()
    (tmp_path / "v.txt").write_text("precious\n")
    (tmp_path / "L" / ".lock").symlink_to(tmp_path / "v.txt")
    with pytest.raises(SystemExit, match=r"\.lock is a symlink, not a run's lock file"):
        main(["seq", "train", *T4, "--out", str(tmp_path / "L")])
    assert (tmp_path / "v.txt").read_text() == "precious\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["seg", "train", "--momentum", "nan"],
        ["seg", "train", "--poly-power", "nan"],
        ["seg", "train", "--lr", "inf"],
        ["seg", "train", "--weight-decay", "nan"],
        ["seg", "train", "--head-lr-mult", "nan"],
        ["seg", "eval", "--scales", "inf"],
        ["seg", "eval", "--scales", "1,nan"],
        ["gan", "train", "--ema", "nan"],
        ["gan", "compare", "--ema", "inf"],
        ["seq", "train", "--lr", "inf"],
        ["seq", "train", "--ham-decay", "nan"],
    ],
)
def test_a_float_flag_refuses_nan_and_inf(argv, tmp_path, capsys):
    """Finding 4: every float flag is finite: a usage error (exit 2) naming the flag, nothing written."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "o")] if argv[1] != "eval" else argv)
    assert e.value.code == 2
    flag = argv[2]
    assert f"argument {flag}: expected" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_recipe_or_a_config_refuses_nan(tmp_path):
    """Finding 4 through the other two edges: a YAML key and a config built in Python."""
    from hamburger.gan.config import GANTrainConfig
    from hamburger.seq.config import SeqTrainConfig

    (tmp_path / "r.yaml").write_text("ema: .nan\n")
    with pytest.raises(SystemExit, match=r"key 'ema' expected a finite number"):
        main(["gan", "train", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="ema must be a finite number, got nan"):
        GANTrainConfig(ema=float("nan"))
    with pytest.raises(ValueError, match="lr must be a finite number, got inf"):
        SeqTrainConfig(lr=float("inf"))


def test_a_chunk_as_long_as_the_sequence_is_refused(tmp_path):
    """Finding 5: with no local read-out, a chunk >= N mixes nothing: refused by seq train and by seq compare before
    any run; with a local read-out it is allowed."""
    for chunk in ("16", "64"):
        with pytest.raises(SystemExit, match=rf"chunk {chunk} >= seq_len 16: .* mixes nothing"):
            main(["seq", "train", *T, "--chunk", chunk, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit, match=r"chunk 16 >= seq_len 16"):
        main(
            [
                "seq",
                "compare",
                "--task",
                "mqar",
                "--cells",
                "16:2",
                "--mixers",
                "none,ham_nmf",
                "--iters",
                "2",
                "--out",
                str(tmp_path / "c"),
            ]
        )
    assert not (tmp_path / "c" / "none").exists()
    main(["seq", "train", *T, "--ham-local", "window", "--out", str(tmp_path / "local")])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))


def test_eval_refuses_damaged_or_non_finite_weights(tmp_path, capsys):
    """Finding 6: the loop records best.safetensors' SHA-256 (sha256sum format) and seq / gan evaluations verify it;
    non-finite weights are refused."""
    run = tmp_path / "run"
    main(["seq", "train", *T4, "--out", str(run)])
    digest = (run / "best.safetensors.sha256").read_text().split()
    assert digest == [hashlib.sha256((run / "best.safetensors").read_bytes()).hexdigest(), "best.safetensors"]
    main(["seq", "eval", "--run", str(run)])
    assert "test recall accuracy" in capsys.readouterr().out
    _flip_last_byte(run / "best.safetensors")
    with pytest.raises(SystemExit, match=r"does not match the SHA-256 its run recorded in best.safetensors.sha256"):
        main(["seq", "eval", "--run", str(run)])
    tensors = load_weights(run / "last.safetensors")
    tensors["embed.weight"][0, 0] = float("nan")
    save_weights(tensors, run / "best.safetensors", metadata=load_checkpoint(run)[1], digest=True)
    with pytest.raises(SystemExit, match=r"holds non-finite values \(NaN or inf\) in embed.weight"):
        main(["seq", "eval", "--run", str(run)])
    gan = tmp_path / "gan"
    main(
        [
            "gan",
            "train",
            "--dataset",
            "digits",
            "--ch",
            "4",
            "--batch-size",
            "4",
            "--iters",
            "1",
            "--val-interval",
            "0",
            "--no-tensorboard",
            "--quiet",
            "--out",
            str(gan),
        ]
    )
    _flip_last_byte(gan / "last.safetensors")  # what gan eval and gan sample read
    with pytest.raises(SystemExit, match=r"does not match the SHA-256 its run recorded in last.safetensors.sha256"):
        main(["gan", "sample", "--run", str(gan), "--per-class", "1", "--out", str(tmp_path / "g.png")])


@pytest.mark.parametrize(
    "argv",
    [
        ["seq", "train", *T4, "--rank", "100000000"],
        ["seg", "train", "--rank", "100000000"],
        ["bench", "solve", "--rank", "100000", "--sizes", "4", "--channels", "8", "--batches", "1", "--repeats", "1"],
        ["seq", "compare", "--rank", "100000"],
        ["seq", "bench", "--rank", "100000"],
    ],
)
def test_rank_has_an_upper_bound(argv, tmp_path, capsys):
    """Finding 7: a rank past MAX_RANK is a usage error before anything is allocated or written."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "argument --rank: must be <= 4096" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_multi_run_commands_check_their_whole_plan_first(tmp_path):
    """Findings 8, 9, 12, 13: estimators' --long, ablate's groups, a gradient or a Ham option that one arm cannot
    take: refused before the first run trains (no run folder is made)."""
    probes = [
        (["estimators", "--long", "truncated:2", "--iters", "2"], r"--long needs 'bptt'"),
        (
            ["seg", "compare", "--heads", "fcn,ham_vq", "--ham-grad", "implicit", "--iters", "2"],
            r"ham_vq with \{'ham_grad': 'implicit'\}: VQ has no implicit gradient.*nothing was trained",
        ),
        (["ablate", "--ham-grad", "implicit", "--iters", "2"], r"VQ has no implicit gradient.*nothing was trained"),
        (
            ["gan", "compare", "--arms", "none,ham_vq", "--ham-grad", "implicit", "--iters", "2"],
            r"arm ham_vq: VQ has no implicit gradient",
        ),
        (
            ["seq", "compare", "--mixers", "none,ham_nmf", "--ham-local", "chunk", "--ham-memory", "dict"],
            r"ham_nmf: local is the causal stats form's read-out",
        ),
        (["seq", "compare", "--mixers", "none,ham_nmf", "--ham-decay", "1"], r"decay must be None or a float in"),
        (["seq", "compare", "--mixers", "none,ham_nmf", "--ham-keys", "999"], r"keys must be an integer in"),
        (["seq", "compare", "--mixers", "none,ham_vq", "--ham-fit", "ridge"], r"ham_vq: fit='ridge'"),
    ]
    for i, (argv, message) in enumerate(probes):
        with pytest.raises(SystemExit, match=message):
            main([*argv, "--out", str(tmp_path / str(i))])
        assert not (tmp_path / str(i)).exists(), argv
    with pytest.raises(SystemExit) as e:
        main(["ablate", "--groups", "", "--iters", "2", "--out", str(tmp_path / "ab")])
    assert e.value.code == 2 and not (tmp_path / "ab").exists()


def test_seq_train_refuses_a_bad_gradient_as_a_usage_error(capsys, tmp_path):
    """Finding 14: exit 2 naming the flag, as seq compare and seg compare do."""
    with pytest.raises(SystemExit) as e:
        main(["seq", "train", *T4, "--ham-grad", "truncated:x", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "argument --ham-grad: grad of a token mixer must be one of" in capsys.readouterr().err


def test_shapes_on_the_meta_device():
    """Finding 10: a Hamburger built on the meta device and the functional solvers infer shapes; CPU weights with a
    meta input are refused with a message saying what to do."""
    x = torch.empty(2, 16, 5, 3, device="meta")
    for ham in ("nmf", "vq", "cd"):
        with torch.device("meta"):
            block = hb.Hamburger(16, ham=ham, rank=4)
        for mode in (True, False):
            y = block.train(mode)(x)
            assert y.shape == x.shape and y.device.type == "meta"
    for solve in (HF.nmf, HF.vq, HF.cd):
        out = solve(torch.empty(2, 8, 12, device="meta"), torch.empty(2, 8, 3, device="meta"), steps=3)
        assert out.recon.shape == (2, 8, 12) and out.codes.shape == (2, 3, 12) and out.recon.device.type == "meta"
    with pytest.raises(ValueError, match=r"meta-device input but its weights are on cpu: build it under"):
        hb.Hamburger(16)(x)


def test_export_after_graphs_and_optimize_flags():
    """Finding 11 (export) and the minor ones: torch.export of a graphs-optimized block equals eager; fused=1 and
    non-ASCII or underscored digits in a gradient are refused."""
    block = hb.Hamburger(16, rank=4).eval()
    x = torch.rand(1, 16, 8, 8)
    ref = block(x)
    hb.optimize(block, mode="graphs")
    exported = torch.export.export(block, (x,))
    torch.testing.assert_close(exported.module()(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fused must be None"):
        hb.optimize(hb.Hamburger(8, rank=2), fused=1, compile=False)
    with pytest.raises(ValueError, match="fused must be None"):
        hb.NMF(8, rank=2, fused=1)
    for grad in ("truncated:\u0661", "truncated:2_0", "phantom:1:0_5"):
        with pytest.raises(ValueError, match="grad must be one of"):
            HF.parse_grad(grad)
    assert HF.parse_grad("phantom:2:0.5") == HF.GradSpec("phantom", 2, 0.5)


def _edit_state(run: Path, edit) -> None:
    manifest = json.loads((run / "checkpoint.json").read_text())
    path = run / manifest["state"]
    torch.save(edit(torch.load(path, weights_only=True)), path)
    manifest["sha256"][manifest["state"]] = hashlib.sha256(path.read_bytes()).hexdigest()
    (run / "checkpoint.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "name,edit,message",
    [
        ("list", lambda s: {**s, "optimizer": [1, 2]}, r"state's 'optimizer' is list"),
        ("empty", lambda s: {**s, "optimizer": {}}, r"optimizer or scheduler is empty"),
        ("two", lambda s: {**s, "step": "two"}, r"state's 'step' is str"),
        ("negative", lambda s: {**s, "step": -5}, r"state's step is -5"),
        ("rng", lambda s: {**s, "rng": {**s["rng"], "torch": s["rng"]["torch"][:10]}}, r"its RNG state does not fit"),
        ("scheduler", lambda s: {**s, "scheduler": {"x": 1}}, r"its scheduler state does not fit|scheduler"),
    ],
)
def test_a_hand_edited_state_is_refused_before_use(tmp_path, name, edit, message):
    """Finding 11 (state): a state file whose hash was recomputed after an edit is checked before it is used."""
    run = tmp_path / "run"
    main(["seq", "train", *T4, "--iters", "1", "--ckpt-interval", "1", "--out", str(run)])
    _edit_state(run, edit)
    with pytest.raises(SystemExit, match=message):
        main(["seq", "train", *T4, "--out", str(run), "--resume", "--allow-changed-config"])


def test_a_head_without_a_ham_ignores_the_hams_fields_in_its_recipe(tmp_path):
    """Minor: a stored fcn result is reused when only a Hamburger field (--ham-precision) changes."""
    from hamburger.engine.results import recipe_of, save_result
    from hamburger.seg.config import RESUME_FREE
    from hamburger.seg.experiments import compare

    kw = dict(data_root=None, iters=2, batch=2, lr=1e-3, val_interval=1, max_val=None, workers=0)
    run_dir = tmp_path / "fcn_tiny" / "seed0"
    (tmp_path / "ham_nmf_tiny" / "seed0").mkdir(parents=True)
    run_dir.mkdir(parents=True)
    args = compare.train_args("fcn", 0, out=run_dir, quiet=True, **kw)
    save_result(run_dir / "result.json", recipe_of(args, RESUME_FREE, test_split="test"), {"miou": 0.5})
    got = compare.run_one("fcn", 0, out=tmp_path, progress=False, ham_precision="bf16", **kw)
    assert got["miou"] == 0.5
    args = compare.train_args("ham_nmf", 0, out=tmp_path / "ham_nmf_tiny" / "seed0", quiet=True, **kw)
    save_result(
        tmp_path / "ham_nmf_tiny" / "seed0" / "result.json",
        recipe_of(args, RESUME_FREE, test_split="test"),
        {"miou": 0.5},
    )
    with pytest.raises(ValueError, match=r"another recipe \(ham_precision: \(none\) -> bf16\)"):
        compare.run_one("ham_nmf", 0, out=tmp_path, progress=False, ham_precision="bf16", **kw)
