"""Every fault and bad input of docs/robustness.md, one test each: a clear error naming what is wrong (an argparse
error naming the flag, a one-line exit naming the command, an exception naming the file or key), never a
traceback, a silent default or a wrong number."""

from pathlib import Path

import numpy as np
import pytest
import torch

import hamburger as hb
from hamburger.cli import main
from hamburger.engine.datacheck import check_dataset
from hamburger.seg.config import SegTrainConfig
from hamburger.seg.data import build_dataset
from hamburger.seg.models import create_model
from seg_fixtures import write_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("faults") / "data", n=8, h=24, w=24)


def _usage_error(argv, capsys, *needles):
    """argv must end in argparse's usage error (exit 2) whose message contains every needle."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (needle, err)


def _one_line_exit(argv, *needles):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = str(exc.value.code)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _train(data, out, *extra):
    return [
        "seg",
        "train",
        "--dataset",
        "folder",
        "--data-root",
        str(data),
        "--num-classes",
        "3",
        "--model",
        "fcn_tiny",
        "--crop-size",
        "16",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--out",
        str(out),
        "--no-tensorboard",
        "--quiet",
        *extra,
    ]


# -- arguments at the door -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scales", ["0", "-1", "1,0,2", "1,abc"])
def test_eval_scales_must_be_positive(scales, capsys):
    _usage_error(["seg", "eval", "--weights", "w.safetensors", "--scales", scales], capsys, "--scales")


@pytest.mark.parametrize("value", ["-1", "0"])
def test_eval_max_samples_must_be_positive(value, capsys):
    _usage_error(["seg", "eval", "--weights", "w.safetensors", "--max-samples", value], capsys, "--max-samples")


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--iters", "-5"),
        ("--iters", "0"),
        ("--batch-size", "0"),
        ("--crop-size", "0"),
        ("--lr", "0"),
        ("--workers", "-1"),
        ("--accum-steps", "0"),
        ("--device", "cuda:7"),
        ("--device", "nosuch"),
        ("--scale-range", "0,1"),
    ],
)
def test_train_flags_are_validated(flag, value, data, tmp_path, capsys):
    _usage_error(_train(data, tmp_path / "run", flag, value), capsys, flag)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_train_config_validates_in_python():
    with pytest.raises(ValueError, match="iters must be >= 1, got -5"):
        SegTrainConfig(iters=-5)
    with pytest.raises(ValueError, match="scale_range must be two numbers"):
        SegTrainConfig(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        SegTrainConfig(optimizer="lamb")


def test_unwritable_out_is_one_line(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_line_exit(_train(data, blocker / "run", "--iters", "1"), "hamburger seg train", str(blocker))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: folder\niters: [1, 2\nlr: 0.1\n")
    _one_line_exit(["seg", "train", "--config", str(recipe)], str(recipe), "YAML syntax error at line")


@pytest.mark.parametrize(
    "text, needle",
    [
        ('iters: "two"', "key 'iters' expected an integer"),
        ("iters: -5", "key 'iters' must be >= 1"),
        ("optimizer: lamb", "key 'optimizer' must be one of"),
    ],
)
def test_yaml_value_errors_name_the_key(text, needle, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"dataset: folder\n{text}\n")
    _one_line_exit(["seg", "train", "--config", str(recipe)], str(recipe), needle)


def test_decompose_bad_image_and_ranks(capsys, tmp_path):
    _one_line_exit(["decompose", "--image", "nosuch", "--out", str(tmp_path)], "hamburger decompose", "nosuch")
    _usage_error(["decompose", "--ranks", "0"], capsys, "--ranks")
    _usage_error(["decompose", "--hams", "nmf,svd"], capsys, "--hams")
    _usage_error(["decompose", "--steps", "-1"], capsys, "--steps")


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["bench", "--sizes", "0"], "--sizes"),
        (["bench", "--repeats", "0"], "--repeats"),
        (["bench", "crossover", "--precisions", "fp64"], "--precisions"),
        (["bench", "precision", "--steps", "-2"], "--steps"),
        (["bench", "seg", "--crops", "0"], "--crops"),
        (["demo", "--iters", "0"], "--iters"),
        (["demo", "--device", "cuda"], "--device"),
        (["seg", "compare", "--seeds", "a"], "--seeds"),
        (["seg", "compare", "--iters", "0"], "--iters"),
    ],
)
def test_bench_demo_compare_flags_are_validated(argv, flag, capsys):
    _usage_error(argv, capsys, flag)


def test_unknown_names_are_one_line(tmp_path):
    _one_line_exit(["seg", "compare", "--heads", "nosuch", "--out", str(tmp_path)], "unknown heads ['nosuch']")
    _one_line_exit(["bench", "--modules", "nosuch", "--out", str(tmp_path)], "hamburger bench")
    _one_line_exit(["bench", "seg", "--models", "nosuch", "--out", str(tmp_path)], "unknown model 'nosuch'")


# -- data checked before training ----------------------------------------------------------------------------------


def _broken(root: Path) -> Path:
    """The fixture with a label outside the classes in one mask and another mask missing."""
    from PIL import Image

    root = write_folder(root, n=8, h=24, w=24)
    mask = np.array(Image.open(root / "masks" / "sample_1.png"))
    mask[3, 3] = 7
    Image.fromarray(mask, mode="L").save(root / "masks" / "sample_1.png")
    (root / "masks" / "sample_4.png").unlink()
    return root


def test_data_check_lists_every_bad_file(tmp_path):
    root = _broken(tmp_path / "d")
    problems = check_dataset(build_dataset("folder", root, "train", num_classes=3))
    assert len(problems) == 2
    assert "sample_1.png" in problems[0] and "[7]" in problems[0] and "sample_4.png" in problems[1]
    assert check_dataset(build_dataset("folder", root, "val", num_classes=3)) == []


def test_train_stops_before_training_on_bad_data(tmp_path):
    root = _broken(tmp_path / "d")
    out = tmp_path / "run"
    message = _one_line_exit(_train(root, out, "--iters", "1"), "data check found 2 bad sample(s)", "sample_4.png")
    assert "--skip-data-check" in message
    assert not (out / "config.yaml").exists() and not (out / "log.jsonl").exists()


def test_skip_data_check_opts_out(tmp_path):
    root = _broken(tmp_path / "d")
    # without the check the broken samples are found only when drawn: here, inside the first batches
    message = _one_line_exit(_train(root, tmp_path / "run", "--iters", "4", "--skip-data-check"), "hamburger seg")
    assert "data check" not in message and "sample_" in message


def test_data_check_does_not_change_training(data, tmp_path):
    """The check reads no global RNG: a checked and an unchecked run end with the same weights."""
    from hamburger.engine.checkpoint import read_weights

    main(_train(data, tmp_path / "a", "--iters", "2"))
    main(_train(data, tmp_path / "b", "--iters", "2", "--skip-data-check"))
    wa, _ = read_weights(tmp_path / "a" / "last.safetensors")
    wb, _ = read_weights(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# -- API edge cases ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 8, 4, 4), (2, 8, 0, 4)])
def test_empty_tensors_are_clear_errors(shape):
    x = torch.rand(shape)
    with pytest.raises(ValueError, match="empty tensor"):
        hb.Hamburger(8, rank=2)(x)
    with pytest.raises(ValueError, match="empty tensor"):
        hb.NMF(8, rank=2)(x)
    with pytest.raises(ValueError, match="non-empty batch"):
        create_model("fcn_tiny", num_classes=3)(torch.rand(0, 3, 32, 32))


def test_integer_input_to_the_block_is_the_hams_message():
    with pytest.raises(TypeError, match="Hamburger expects a floating-point input, got torch.int64"):
        hb.Hamburger(8, rank=2)(torch.ones(1, 8, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating-point images"):
        create_model("fcn_tiny", num_classes=3)(torch.ones(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("ham", [hb.NMF, hb.VQ, hb.CD])
def test_float32_overflow_is_detected(ham):
    module = ham(16, rank=4).eval()
    x = torch.rand(2, 16, 8, 8)
    limit = module.magnitude_limit(x)
    big = x * 0.99 * limit
    y = module(big)  # just inside: finite, and a real low-rank approximation (not NaN, not zeros)
    assert torch.isfinite(y).all()
    assert (y - big).norm() / big.norm() < 0.5
    with pytest.raises(ValueError, match="can overflow"):
        module(x * 1e19)
    module.check_input = "async"  # the device-assert path (on CPU torch raises at once)
    with pytest.raises(RuntimeError, match="can overflow"):
        module(x * 1e19)


def test_block_overflow_is_detected_after_the_lower_bread():
    block = hb.Hamburger(16, ham="cd", rank=4).eval()
    with pytest.raises(ValueError, match="CD input magnitude exceeds"):
        block(torch.rand(1, 16, 8, 8) * 1e19)


def test_channels_last_with_c_equal_n_uses_the_last_axis():
    """Not detectable (both axes have the same size): channels_last=True always reads the last axis as C, as the
    docs say; (B, C, N) input must be passed with channels_last=False."""
    torch.manual_seed(0)
    x = torch.rand(2, 6, 6)
    last = hb.NMF(6, rank=2, channels_last=True).eval()
    first = hb.NMF(6, rank=2).eval()
    torch.testing.assert_close(last(x), first(x.mT).mT)
    assert "C == N" in hb.NMF.__doc__


# -- conventions ---------------------------------------------------------------------------------------------------


def test_segmentation_output_omits_a_missing_aux():
    model = create_model("fcn_tiny", num_classes=3).eval()
    out = model(torch.rand(1, 3, 32, 32))
    assert set(out) == {"out"}
    assert sum(out.values()).shape == (1, 3, 32, 32)  # torchvision's convention works
    out = create_model("fcn_r18_d8", num_classes=3).train()(torch.rand(2, 3, 32, 32))
    assert set(out) == {"out", "aux"}


def test_license_file_matches_the_package_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()


def test_precision_guarantees_hold_under_bf16_autocast():
    """NMF and CD are continuous in their input: bf16 autocast moves the block's output by rounding only. VQ's
    hard assignments may flip (docs/robustness.md says so); its output is still deterministic."""
    torch.manual_seed(0)
    x = torch.rand(2, 32, 12, 12)
    for ham in ("nmf", "cd", "vq"):
        block = hb.Hamburger(32, ham=ham, rank=8).eval()
        ref = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block(x).float()
            again = block(x).float()
        assert torch.equal(low, again)
        err = (low - ref).abs().max() / (ref.max() - ref.min())
        if ham != "vq":
            assert err < 0.05, (ham, float(err))


def test_memory_hungry_counts_are_bounded_before_anything_is_allocated(tmp_path, capsys):
    """Issue 25: `gan sample --per-class 100000` reached the OOM killer, `viz --photo-rank 100000` asked for 40 GB."""
    for argv, message in (
        (["gan", "sample", "--run", str(tmp_path), "--per-class", "100000"], "must be <= 256"),
        (["gan", "eval", "--run", str(tmp_path), "--samples", "1"], "must be >= 2"),
        (["gan", "eval", "--run", str(tmp_path), "--samples", "1000000"], "must be <= 50000"),
        (["gan", "compare", "--samples", "1"], "must be >= 2"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit, match=r"hamburger viz: rank 100000 exceeds min\(D, N\) = 512 of the 512x512 image"):
        main(["viz", "--photo", "camera", "--photo-rank", "100000", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"rank 600 exceeds min\(D, N\) = 512"):
        main(["decompose", "--ranks", "8,600", "--steps", "1", "--out", str(tmp_path)])
    from hamburger.gan.metrics import generate

    with pytest.raises(ValueError, match=r"samples must be in 2..50000"):
        generate(None, 1, num_classes=10, conditional=True, seed=0)


def test_user_errors_of_the_gan_and_seq_commands_are_one_line(tmp_path, capsys):
    """Issue 25, item 10: each of these was a raw traceback."""
    import shutil

    from hamburger.engine.checkpoint import load_checkpoint
    from hamburger.engine.cli import USER_ERRORS
    from hamburger.engine.common import ShardsFailed, run_shards
    from hamburger.engine.config import save_config
    from hamburger.gan.config import GANTrainConfig

    seq_run = tmp_path / "seq-run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "seq-run-0.1", seq_run)
    gan_run = tmp_path / "gan-run"
    gan_run.mkdir()
    save_config(GANTrainConfig(out=gan_run), gan_run / "config.yaml")
    bad = tmp_path / "bad"
    bad.mkdir()
    weights = tmp_path / "inception.pt"
    weights.write_bytes(b"not used")
    probes = [
        (["gan", "eval", "--run", str(seq_run)], r"has settings a gan train run does not have \(.*another command\?"),
        (["seq", "eval", "--run", str(gan_run)], r"has settings a seq train run does not have"),
        (["gan", "sample", "--run", str(tmp_path)], r"holds no config.yaml"),
        (
            ["gan", "eval", "--run", str(seq_run), "--inception-weights", str(tmp_path / "nope.pt")],
            r"--inception-weights .*nope.pt not found",
        ),
        (
            ["seq", "compare", "--task", "mqar", "--lengths", "8", "--pairs", "32", "--out", str(tmp_path / "c")],
            r"no \(N, pairs\) cell fits 3 x pairs <= N",
        ),
        (["seq", "bench", "--mixers", "none", "--out", str(tmp_path / "b")], r"'none' has no mixer"),
        (
            [
                "seq",
                "train",
                "--task",
                "mqar",
                "--seq-len",
                "16",
                "--pairs",
                "2",
                "--chunk",
                "4",
                "--iters",
                "1",
                "--out",
                "/proc/x/run",
            ],
            r"hamburger seq train: \[Errno \d+\] .*'/proc/x",
        ),
        (["decompose", "--ranks", "4", "--steps", "1", "--out", "/proc/x/d"], r"hamburger decompose: \[Errno \d+\]"),
    ]
    for text, name in (("a: [1\n", "syntax"), ("", "empty"), ("- 1\n- 2\n", "list"), ("extra_key: 1\n", "extra")):
        (bad / "config.yaml").write_text(text)
        message = (
            r"YAML syntax error at line 2"
            if name == "syntax"
            else r"not a mapping"
            if name != "extra"
            else r"settings a gan train run does not have \(extra_key\)"
        )
        with pytest.raises(SystemExit, match=message):
            main(["gan", "sample", "--run", str(bad)])
    for argv, message in probes:
        with pytest.raises(SystemExit, match=message):
            main(argv)
    (seq_run / "checkpoint.json").write_text('{"step": 4, "weights": "a", "state": "b", "sha256": ["x"]}')
    with pytest.raises(ValueError, match=r"checkpoint manifest .*unreadable \(TypeError\)"):
        load_checkpoint(seq_run)
    with pytest.raises(ShardsFailed, match=r"compare:run shard\(s\) \[0\] of 1 failed: see"):  # its call is refused
        run_shards("hamburger.seq.experiments.compare:run", {"mixers": ["mamba"]}, jobs=1, out=tmp_path)
    assert "unknown mixers ['mamba']" in (tmp_path / "shard0of1.log").read_text()
    with pytest.raises(ValueError, match="hamburger.<module>:<function>"):
        run_shards("os:system", {}, jobs=1, out=tmp_path)
    assert issubclass(ShardsFailed, USER_ERRORS)


def test_the_smaller_gan_and_seq_faults(tmp_path, capsys):
    """Issue 25, item 12: --context-resolution 0, eval.json's weights, gan sample --out <folder>, a failed start."""
    import json
    import shutil

    from hamburger.gan.config import GANTrainConfig

    with pytest.raises(ValueError, match="context_resolution must be >= 4, got 0"):
        GANTrainConfig(context_resolution=0)
    run = tmp_path / "seq-run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "seq-run-0.1", run)
    main(["seq", "eval", "--run", str(run)])
    report = json.loads((run / "eval.json").read_text())
    assert report["weights"].endswith("best.safetensors") and len(report["weights_sha256"]) == 64
    # a start that fails at the loader (a batch larger than the data) leaves no config.yaml behind
    with pytest.raises(SystemExit, match="fewer than one batch"):
        main(
            [
                "seq",
                "train",
                "--task",
                "mqar",
                "--seq-len",
                "16",
                "--pairs",
                "2",
                "--chunk",
                "4",
                "--train-examples",
                "4",
                "--batch-size",
                "8",
                "--iters",
                "1",
                "--no-tensorboard",
                "--quiet",
                "--out",
                str(tmp_path / "failed"),
            ]
        )
    assert not (tmp_path / "failed" / "config.yaml").exists()
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
    (tmp_path / "grids").mkdir()
    main(["gan", "sample", "--run", str(gan), "--per-class", "1", "--out", str(tmp_path / "grids")])
    assert (tmp_path / "grids" / "sample-seed0.png").is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
