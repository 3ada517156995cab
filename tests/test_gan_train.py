"""`hamburger gan train|sample` on the shared engine, at a tiny size: outputs, determinism, bitwise resume, DDP,
bf16 autocast, the YAML recipes and clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn

from hamburger.cli import main
from hamburger.engine.checkpoint import load_weights
from hamburger.gan.config import GANTrainConfig

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TINY = ["--dataset", "digits", "--ch", "8", "--z-dim", "16", "--batch-size", "4", "--no-tensorboard", "--quiet"]


def _train(out, *extra):
    return ["gan", "train", *TINY, "--out", str(out), *extra]


def test_train_writes_log_checkpoints_and_class_rows(tmp_path, capsys):
    out = tmp_path / "run"
    main(
        _train(
            out,
            "--iters",
            "4",
            "--val-interval",
            "2",
            "--ckpt-interval",
            "2",
            "--ema",
            "0.9",
            "--samples-per-class",
            "3",
        )
    )
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {"loss_d", "loss_g", "d_real", "d_fake", "lr"} <= set(log[0])
    for name in ("config.yaml", "last.safetensors", "checkpoint.json", "samples/step0000002.png", "samples/final.png"):
        assert (out / name).is_file(), name
    grid = Image.open(out / "samples" / "final.png")
    assert grid.size == (2 * (3 * 34 + 2), 2 * (10 * 34 + 2))  # 3 columns, one row per digit, 2 px gaps, x2
    weights = load_weights(out / "last.safetensors")
    assert any(k.startswith("generator_ema.") for k in weights)
    main(["gan", "sample", "--run", str(out), "--per-class", "2", "--seed", "3", "--out", str(tmp_path / "s.png")])
    assert Image.open(tmp_path / "s.png").size == (2 * (2 * 34 + 2), 2 * (10 * 34 + 2))
    assert "wrote" in capsys.readouterr().out


def test_training_is_deterministic_and_resumes_bitwise(tmp_path):
    """Per machine: the killed, resumed and straight runs are all made here, in this test."""
    cmd = [
        sys.executable,
        "-m",
        "hamburger.cli",
        "gan",
        "train",
        *TINY,
        "--iters",
        "8",
        "--ckpt-interval",
        "2",
        "--ema",
        "0.99",
    ]
    killed = subprocess.run(
        [*cmd, "--out", str(tmp_path / "killed")], env={**ENV, "HAMBURGER_KILL_AT": "logged:5"}, capture_output=True
    )
    assert killed.returncode < 0  # SIGKILLed after step 5 was logged: the checkpoint holds step 4
    subprocess.run([*cmd, "--out", str(tmp_path / "killed"), "--resume"], check=True, env=ENV, capture_output=True)
    for name in ("a", "b"):
        subprocess.run([*cmd, "--out", str(tmp_path / name)], check=True, env=ENV, capture_output=True)
    a, b, resumed = (load_weights(tmp_path / n / "last.safetensors") for n in ("a", "b", "killed"))
    assert a.keys() == resumed.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], resumed[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_two_process_ddp_keeps_the_ranks_identical(tmp_path):
    worker = str(ROOT / "tests" / "gan_ddp_worker.py")
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker]
    args = [*TINY, "--iters", "3", "--arm", "sagan", "--ch", "8", "--out", str(tmp_path / "ddp")]
    subprocess.run([*run, *args], check=True, env=ENV, capture_output=True)
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    for key in r0:  # gradients all-reduced, the same Adam steps: the same parameters on both ranks
        assert torch.equal(r0[key], r1[key]), key
    sigma = [k for k in r0 if k.endswith("sigma")]
    assert len(sigma) == 2 and all(r0[k].abs() > 0 for k in sigma)  # both gated blocks trained off the identity


def test_bf16_autocast_trains_with_finite_losses(tmp_path):
    out = tmp_path / "bf16"
    main(_train(out, "--iters", "3", "--amp", "bf16", "--val-interval", "0", "--arm", "ham_cd"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(abs(r["loss_d"]) < 1e3 for r in log)


def test_yaml_recipes_and_errors(tmp_path):
    from hamburger.cli import build_parser
    from hamburger.engine.config import config_from_args, load_recipe
    from hamburger.gan.cli import SUBCOMMANDS
    from hamburger.gan.config import GANTrainConfig

    build_parser()
    recipes = sorted((ROOT / "configs").glob("hamgan_*.yaml"))
    assert len(recipes) >= 2
    for path in recipes:
        values = load_recipe(path, SUBCOMMANDS["train"])
        assert values["model"] in ("gan32", "gan64", "gan128")
    paper = load_recipe(ROOT / "configs" / "hamgan_128_imagenet.yaml", SUBCOMMANDS["train"])
    assert (paper["ch"], paper["lr"], paper["lr_d"], paper["batch_size"]) == (64, 1e-4, 4e-4, 256)
    assert all(load_recipe(p, SUBCOMMANDS["train"])["lr_decay_from"] == 1.0 for p in recipes)  # the paper's: constant
    args = build_parser().parse_args(["gan", "train", "--arm", "sagan"])
    assert config_from_args(GANTrainConfig, args).arm == "sagan"
    with pytest.raises(SystemExit, match="--data-root is required"):
        main(["gan", "train", "--dataset", "cifar10", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="unknown GAN 'gan48'"):
        main(_train(tmp_path / "y", "--model", "gan48"))
    with pytest.raises(SystemExit, match="not a gan train run folder"):
        main(["gan", "sample", "--run", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["gan", "train", "--accum-steps", "2"])


def test_learning_rates_are_constant_then_fall_linearly_to_zero():
    from hamburger.gan.train import GANTask

    generator, discriminator = nn.Linear(2, 2), nn.Linear(2, 2)
    pair = SimpleNamespace(generator=generator, discriminator=discriminator)
    config = GANTrainConfig(iters=10, lr=2e-4, lr_d=4e-4, lr_decay_from=0.6)
    opt, schedule = GANTask().optimizer(pair, config)
    used = []
    for _ in range(config.iters):  # the rates each update uses, G's and D's
        used.append([group["lr"] for group in opt.param_groups])
        opt.step()
        schedule.step()
    factors = [1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]  # 6 constant updates, then (10 - step) / 4
    torch.testing.assert_close(torch.tensor(used), torch.tensor([[2e-4 * f, 4e-4 * f] for f in factors]))
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]  # zero after the last update
    constant = GANTrainConfig(iters=10, lr_decay_from=1.0)
    opt, schedule = GANTask().optimizer(pair, constant)
    for _ in range(constant.iters):
        opt.step()
        schedule.step()
    assert [g["lr"] for g in opt.param_groups] == [constant.lr, constant.lr_d]  # the log's last rate too
    opt, schedule = GANTask().optimizer(pair, config)
    for _ in range(7):
        opt.step()
        schedule.step()
    opt2, resumed = GANTask().optimizer(pair, config)
    resumed.load_state_dict(schedule.state_dict())  # a partial of a module function: the state dict round-trips
    opt2.step()
    resumed.step()
    assert [g["lr"] for g in opt2.param_groups] == [2e-4 * 0.5, 4e-4 * 0.5]  # update 8's rates
