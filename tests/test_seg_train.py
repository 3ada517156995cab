import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hamburger.cli import main
from hamburger.recipes.checkpoint import load_weights
from hamburger.recipes.metrics import ConfusionMatrix
from hamburger.recipes.seg_eval import predict_logits
from hamburger.recipes.seg_train import param_groups, poly_lambda
from seg_fixtures import write_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("seg") / "data", n=12, h=40, w=40)


def _train_args(data, out, *extra):
    return [
        "seg", "train", "--dataset", "folder", "--data-root", str(data), "--num-classes", "3",
        "--model", "hamnet_r18_d8", "--crop-size", "32", "--batch-size", "2", "--workers", "1", "--rank", "8",
        "--out", str(out), "--no-tensorboard", *extra,
    ]  # fmt: skip


def test_train_eval_predict_from_the_command_line(data, tmp_path, capsys):
    out = tmp_path / "run"
    main(_train_args(data, out, "--iters", "4", "--val-interval", "2", "--ckpt-interval", "2", "--quiet"))
    for name in ("last.safetensors", "last_state.pt", "best.safetensors", "config.yaml", "log.jsonl"):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "val_miou" in log[1] and log[-1]["lr"] == 0.0
    weights = out / "best.safetensors"
    base = ["--dataset", "folder", "--data-root", str(data), "--num-classes", "3", "--model", "hamnet_r18_d8",
            "--rank", "8", "--weights", str(weights)]  # fmt: skip
    main(["seg", "eval", *base, "--scales", "0.5,0.75,1,1.25,1.5,1.75", "--flip", "true", "--out", str(tmp_path / "e")])
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and set(metrics["iou"]) == {"0", "1", "2"} and metrics["samples"] == 2
    assert "mIoU" in capsys.readouterr().out
    main(["seg", "predict", str(data / "images"), *base, "--crop", "24", "--out", str(tmp_path / "p")])
    from PIL import Image

    mask = Image.open(tmp_path / "p" / "sample_0.png")
    assert mask.mode == "P" and mask.size == (40, 40) and (tmp_path / "p" / "sample_0_overlay.jpg").is_file()


def test_flat_yaml_recipe(data, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"dataset: folder\ndata_root: {data}\nnum_classes: 3\nmodel: fcn_r18_d8\ncrop_size: 32\nbatch_size: 2\n"
        "iters: 1\nworkers: 0\nno_tensorboard: true\nquiet: true\n"
    )
    main(["seg", "train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--lr", "0.001"])
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "model: fcn_r18_d8" in saved and "lr: 0.001" in saved
    recipe.write_text("dataset: folder\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit, match="unknown key 'learning_rate'"):
        main(["seg", "train", "--config", str(recipe)])


def test_shipped_recipes_parse():
    from hamburger.cli import build_parser
    from hamburger.recipes.config import load_recipe
    from hamburger.seg_cli import SUBCOMMANDS

    build_parser()
    recipes = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(recipes) >= 4
    for path in recipes:
        assert load_recipe(path, SUBCOMMANDS["train"])["model"]


def test_killed_run_resumes_bitwise(data, tmp_path):
    args = _train_args(data, tmp_path / "killed", "--iters", "10", "--ckpt-interval", "2", "--lr", "0.02")
    cmd = [sys.executable, "-u", "-m", "hamburger.cli", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    for line in proc.stdout:
        if "checkpoint step 4" in line:  # mid-epoch: 10 training images, batch 2
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(tmp_path / "killed" / "last_state.pt", weights_only=False)
    assert 4 <= state["step"] < 10
    subprocess.run([*cmd, "--resume"], check=True, env=ENV, capture_output=True)
    ref = _train_args(data, tmp_path / "straight", "--iters", "10", "--ckpt-interval", "2", "--lr", "0.02")
    subprocess.run([sys.executable, "-m", "hamburger.cli", *ref], check=True, env=ENV, capture_output=True)
    resumed = load_weights(tmp_path / "killed" / "last.safetensors")
    straight = load_weights(tmp_path / "straight" / "last.safetensors")
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key


def test_two_process_ddp_equals_one_process(data, tmp_path):
    common = ["--dataset", "folder", "--data-root", str(data), "--num-classes", "3", "--model", "hamnet_r18_d8",
              "--rank", "8", "--crop-size", "32", "--batch-size", "4", "--iters", "3", "--workers", "1",
              "--norm", "group", "--backbone-norm", "group", "--ham-init", "online", "--dropout", "0",
              "--aux", "false", "--lr", "0.01",
              "--no-tensorboard", "--quiet"]  # fmt: skip
    worker = str(ROOT / "tests" / "ddp_worker.py")
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker]
    subprocess.run([*run, *common, "--out", str(tmp_path / "ddp")], check=True, env=ENV, capture_output=True)
    subprocess.run([sys.executable, worker, *common, "--out", str(tmp_path / "one")], check=True, env=ENV,
                   capture_output=True)  # fmt: skip
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "one" / "rank0.pt")
    for key in single:
        assert torch.equal(r0[key], r1[key]), key
        torch.testing.assert_close(r0[key], single[key], rtol=1e-3, atol=2e-4, msg=key)  # summation order
    initial = torch.load(tmp_path / "ddp" / "rank0.pt")["head.context.ham.bases"]
    assert torch.isfinite(initial).all()


def test_parameter_groups_and_poly_schedule():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    groups = {g["name"]: g for g in param_groups(model, lr=0.01, weight_decay=1e-4)}
    assert groups["weight"]["weight_decay"] == 1e-4 and groups["weight"]["lr"] == 0.01
    assert groups["bias"]["lr"] == 0.02 and groups["bias"]["weight_decay"] == 0.0
    assert groups["norm"]["weight_decay"] == 0.0 and len(groups["norm"]["params"]) == 2
    assert poly_lambda(0, total=100, power=0.9, warmup=0, warmup_ratio=0) == 1.0
    assert abs(poly_lambda(50, total=100, power=0.9, warmup=0, warmup_ratio=0) - 0.5**0.9) < 1e-12
    assert poly_lambda(0, total=100, power=0.9, warmup=10, warmup_ratio=0.1) == pytest.approx(0.1)


def test_miou_is_dataset_level_and_skips_ignore():
    m = ConfusionMatrix(3)
    m.update(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 255]))
    m.update(torch.tensor([2, 2]), torch.tensor([2, 2]))
    # class 0: tp 1, fp 1 -> 1/2; class 1: tp 1, fn 1 -> 1/2; class 2: tp 2 -> 1
    torch.testing.assert_close(m.iou(), torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    assert m.miou() == pytest.approx(2 / 3) and m.pixel_accuracy() == pytest.approx(4 / 5)
    # a per-image average would differ: image 1 alone has mIoU (0.5 + 0.5 + nan)
    with pytest.raises(ValueError, match="differ in shape"):
        m.update(torch.zeros(2), torch.zeros(3))


def test_multiscale_flip_and_sliding_window_inference():
    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            return {"out": self.conv(x)}

    model = Conv().eval()
    x = torch.randn(1, 3, 20, 26)
    whole = predict_logits(model, x)
    flipped = model(x.flip(-1))["out"].flip(-1)
    torch.testing.assert_close(predict_logits(model, x, flip=True), whole + flipped)
    torch.testing.assert_close(predict_logits(model, x, crop=32), whole)  # one window covers the image
    slid = predict_logits(model, x, crop=12, stride=8)
    assert slid.shape == whole.shape
    torch.testing.assert_close(slid[..., 2:-2, 2:-2], whole[..., 2:-2, 2:-2], rtol=0.3, atol=0.5)
    ms = predict_logits(model, x, scales=(0.5, 1.0, 1.75), flip=True)
    assert ms.shape == (1, 2, 20, 26)


def test_bf16_autocast_accumulation_warmup_and_adamw_run(data, tmp_path):
    out = tmp_path / "amp"
    main(_train_args(data, out, "--iters", "2", "--amp", "bf16", "--accum-steps", "2", "--batch-size", "4",
                     "--optimizer", "adamw", "--lr", "1e-4", "--head-lr-mult", "10", "--warmup-iters", "2",
                     "--quiet"))  # fmt: skip
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["loss"] == r["loss"] for r in log)
    assert log[0]["lr"] < 1e-4  # warm-up
    state = torch.load(out / "last_state.pt", weights_only=False)
    lrs = [g["initial_lr"] for g in state["optimizer"]["param_groups"]]
    assert min(lrs) == pytest.approx(1e-4) and max(lrs) == pytest.approx(2e-3)  # backbone 1x; head biases 10x2
