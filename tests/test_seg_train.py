import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hamburger.cli import main
from hamburger.engine.checkpoint import MANIFEST, load_checkpoint, load_weights
from hamburger.seg.eval import predict_logits
from hamburger.seg.metrics import ConfusionMatrix
from hamburger.seg.train import param_groups, poly_lambda
from seg_fixtures import write_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("seg") / "data", n=12, h=40, w=40)


def _train_args(data, out, *extra):
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
        "hamnet_r18_d8",
        "--crop-size",
        "32",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--rank",
        "8",
        "--out",
        str(out),
        "--no-tensorboard",
        *extra,
    ]


def test_train_eval_predict_from_the_command_line(data, tmp_path, capsys):
    out = tmp_path / "run"
    main(_train_args(data, out, "--iters", "4", "--val-interval", "2", "--ckpt-interval", "2", "--quiet"))
    for name in ("last.safetensors", MANIFEST, "best.safetensors", "config.yaml", "log.jsonl"):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "val_miou" in log[1] and log[-1]["lr"] == 0.0
    weights = out / "best.safetensors"
    base = [
        "--dataset",
        "folder",
        "--data-root",
        str(data),
        "--num-classes",
        "3",
        "--model",
        "hamnet_r18_d8",
        "--rank",
        "8",
        "--weights",
        str(weights),
    ]
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
    from hamburger.engine.config import load_recipe
    from hamburger.seg.cli import SUBCOMMANDS

    build_parser()
    recipes = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("hamgan_"))  # GAN: own test
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
    _, _, state = load_checkpoint(tmp_path / "killed")
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
    common = [
        "--dataset",
        "folder",
        "--data-root",
        str(data),
        "--num-classes",
        "3",
        "--model",
        "hamnet_r18_d8",
        "--rank",
        "8",
        "--crop-size",
        "32",
        "--batch-size",
        "4",
        "--iters",
        "3",
        "--workers",
        "1",
        "--norm",
        "group",
        "--backbone-norm",
        "group",
        "--ham-init",
        "online",
        "--dropout",
        "0",
        "--aux",
        "false",
        "--lr",
        "0.01",
        "--no-tensorboard",
        "--quiet",
    ]
    worker = str(ROOT / "tests" / "ddp_worker.py")
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker]
    subprocess.run([*run, *common, "--out", str(tmp_path / "ddp")], check=True, env=ENV, capture_output=True)
    subprocess.run(
        [sys.executable, worker, *common, "--out", str(tmp_path / "one")], check=True, env=ENV, capture_output=True
    )
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
    main(
        _train_args(
            data,
            out,
            "--iters",
            "2",
            "--amp",
            "bf16",
            "--accum-steps",
            "2",
            "--batch-size",
            "4",
            "--optimizer",
            "adamw",
            "--lr",
            "1e-4",
            "--head-lr-mult",
            "10",
            "--warmup-iters",
            "2",
            "--quiet",
        )
    )
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["loss"] == r["loss"] for r in log)
    assert log[0]["lr"] < 1e-4  # warm-up
    _, _, state = load_checkpoint(out)
    lrs = [g["initial_lr"] for g in state["optimizer"]["param_groups"]]
    assert min(lrs) == pytest.approx(1e-4) and max(lrs) == pytest.approx(2e-3)  # backbone 1x; head biases 10x2


# ----------------------------------------------------------------------------------------------------------------
# the checkpoint transaction under fault injection: killed inside every write, resumed, bit for bit


def _fault_args(data, out):
    return _train_args(
        data,
        out,
        "--iters",
        "6",
        "--ckpt-interval",
        "2",
        "--val-interval",
        "3",
        "--lr",
        "0.02",
        "--workers",
        "0",
        "--quiet",
    )


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(
        [sys.executable, "-m", "hamburger.cli", *_fault_args(data, out)], check=True, env=ENV, capture_output=True
    )
    return out


@pytest.mark.parametrize(
    "point",
    ["weights:2", "between:2", "state:2", "manifest:2", "committed:1", "best:1", "logged:5"],
)
def test_killed_inside_any_write_resumes_to_the_same_weights(data, tmp_path, straight_run, point):
    """Bit for bit, per machine: the straight run it is compared with is made on this machine by this module."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hamburger.cli", *_fault_args(data, out)]
    killed = subprocess.run(cmd, env={**ENV, "HAMBURGER_KILL_AT": point}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = subprocess.run([*cmd, "--resume"], env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_weights(out / name), load_weights(straight_run / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in b), (name, point)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6], steps  # no repeated steps after the resume
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if ".tmp" in n], names
    assert sorted(n for n in names if n.startswith("last-")) == ["last-00000006.pt", "last-00000006.safetensors"]


def test_corrupt_or_truncated_checkpoint_is_an_error_naming_the_file(data, tmp_path, straight_run):
    import shutil

    for damage in ("flip", "truncate", "manifest"):
        out = tmp_path / damage
        shutil.copytree(straight_run, out)
        weights = next(out.glob("last-*.safetensors"))
        if damage == "flip":
            raw = bytearray(weights.read_bytes())
            for i in range(200):
                raw[-(i * 7 + 1)] ^= 0xFF
            weights.write_bytes(bytes(raw))
            match = f"{weights.name} is corrupt or incomplete"
        elif damage == "truncate":
            weights.write_bytes(weights.read_bytes()[:100])
            match = f"{weights.name} is corrupt or incomplete"
        else:
            (out / MANIFEST).write_text("{not json")
            match = "checkpoint.json is unreadable"
        with pytest.raises(SystemExit, match=match):
            main([*_fault_args(data, out), "--resume"])
    (tmp_path / "text.safetensors").write_text("this is not a weights file")
    base = [
        "--dataset",
        "folder",
        "--data-root",
        str(data),
        "--num-classes",
        "3",
        "--model",
        "hamnet_r18_d8",
        "--rank",
        "8",
    ]
    with pytest.raises(SystemExit, match="text.safetensors is not a readable safetensors file"):
        main(["seg", "eval", *base, "--weights", str(tmp_path / "text.safetensors")])


def test_weights_know_their_model(data, straight_run):
    base = [
        "seg",
        "eval",
        "--dataset",
        "folder",
        "--data-root",
        str(data),
        "--num-classes",
        "3",
        "--weights",
        str(straight_run / "best.safetensors"),
    ]
    with pytest.raises(SystemExit, match="rank = 8, but this model has 4"):
        main([*base, "--model", "hamnet_r18_d8", "--rank", "4"])
    from hamburger.engine import checkpoint

    tensors, meta = checkpoint.read_weights(straight_run / "best.safetensors")
    ident = json.loads(meta[checkpoint.IDENTITY_KEY])
    assert ident["head.context.ham.rank"] == 8 and ident["num_classes"] == 3
    ident["head.context.ham.seed"] = 5  # the eval start's seed changes the outputs, not the keys
    reseeded = straight_run.parent / "reseeded.safetensors"
    checkpoint.save_weights(tensors, reseeded, metadata={checkpoint.IDENTITY_KEY: json.dumps(ident)})
    with pytest.raises(SystemExit, match="head.context.ham.seed = 5, but this model has 0"):
        main([*base[:-1], str(reseeded), "--model", "hamnet_r18_d8", "--rank", "8"])
    with pytest.raises(SystemExit, match="model = 'hamnet_r18_d8', but this model has 'fcn_r18_d8'"):
        main([*base, "--model", "fcn_r18_d8"])


# ----------------------------------------------------------------------------------------------------------------
# the typed config: round trip, resume refuses a changed recipe


def test_config_names_the_gradient_it_trains_with(monkeypatch):
    """``ham_grad`` is resolved at construction for a model with a Hamburger (so config.yaml and a cached result's
    recipe name it); a run saved with ``ham_grad: null`` reads as the one-step default it was trained with."""
    from hamburger.engine.config import changed_fields, config_dict
    from hamburger.functional import DEFAULT_GRAD
    from hamburger.seg import config as seg_config
    from hamburger.seg.config import RESUME_FREE, SegTrainConfig

    assert SegTrainConfig(model="hamnet_tiny").ham_grad == DEFAULT_GRAD
    assert SegTrainConfig(model="ham_vq_tiny").ham_grad == DEFAULT_GRAD
    assert SegTrainConfig(model="lightham_r18").ham_grad == DEFAULT_GRAD
    assert SegTrainConfig(model="fcn_tiny").ham_grad is None and SegTrainConfig(model="nonlocal_tiny").ham_grad is None
    assert SegTrainConfig(model="hamnet_tiny", ham_grad="bptt").ham_grad == "bptt"
    # a later default: the old run (null, or no key at all) trained with one-step and is refused unless asked for
    monkeypatch.setattr(seg_config, "DEFAULT_GRAD", "truncated:1")
    now = SegTrainConfig(model="hamnet_tiny")
    assert now.ham_grad == "truncated:1"
    old = config_dict(now) | {"ham_grad": None}
    assert changed_fields(old, now, RESUME_FREE) == {"ham_grad": ("one-step", "truncated:1")}
    assert changed_fields({k: v for k, v in old.items() if k != "ham_grad"}, now, RESUME_FREE) == {
        "ham_grad": ("one-step", "truncated:1")
    }
    assert changed_fields(old, SegTrainConfig(model="hamnet_tiny", ham_grad="one-step"), RESUME_FREE) == {}
    fcn = SegTrainConfig(model="fcn_tiny")
    assert changed_fields(config_dict(fcn), fcn, RESUME_FREE) == {}


def test_config_round_trips_and_resume_refuses_a_changed_recipe(data, tmp_path):
    from hamburger.engine.config import config_dict
    from hamburger.seg.config import SegTrainConfig
    from hamburger.seg.train import train

    out = tmp_path / "run"
    config = SegTrainConfig(
        dataset="folder",
        data_root=data,
        num_classes=3,
        model="fcn_r18_d8",
        crop_size=32,
        batch_size=2,
        iters=2,
        workers=0,
        out=out,
        no_tensorboard=True,
        quiet=True,
        scale_range=(0.75, 1.25),
    )
    train(config)
    # the run's own config.yaml is a valid --config: the same run again, field for field
    again = tmp_path / "again"
    main(["seg", "train", "--config", str(out / "config.yaml"), "--out", str(again)])
    saved = {k: v for k, v in config_dict(config).items() if k != "out"}
    import yaml

    reread = yaml.safe_load((again / "config.yaml").read_text())
    assert {k: v for k, v in reread.items() if k != "out"} == saved
    assert torch.equal(
        load_weights(out / "last.safetensors")["head.classifier.weight"],
        load_weights(again / "last.safetensors")["head.classifier.weight"],
    )
    # --resume with another LR is refused before anything is written; allowed with the flag, and logged
    before = (out / "config.yaml").read_text()
    with pytest.raises(SystemExit, match=r"changed recipe \(lr: 0.009 -> 0.5\).*--allow-changed-config"):
        main(["seg", "train", "--config", str(out / "config.yaml"), "--resume", "--lr", "0.5", "--iters", "2"])
    assert (out / "config.yaml").read_text() == before
    main(["seg", "train", "--config", str(out / "config.yaml"), "--resume", "--workers", "1"])  # free to change
    main(["seg", "train", "--config", str(out / "config.yaml"), "--resume", "--lr", "0.5", "--allow-changed-config"])
    assert "lr" in (out / "config_changes.jsonl").read_text()
    # a failed start leaves no config.yaml behind; a bad YAML value names its key
    with pytest.raises(SystemExit):
        main(
            [
                "seg",
                "train",
                "--dataset",
                "folder",
                "--data-root",
                str(tmp_path / "nowhere"),
                "--num-classes",
                "3",
                "--out",
                str(tmp_path / "failed"),
            ]
        )
    assert not (tmp_path / "failed" / "config.yaml").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: folder\niters: two\n")
    with pytest.raises(SystemExit, match="key 'iters' expected an integer, got 'two'"):
        main(["seg", "train", "--config", str(bad)])
    bad.write_text("dataset: folder\noptimizer: lamb\n")
    with pytest.raises(SystemExit, match="key 'optimizer' must be one of"):
        main(["seg", "train", "--config", str(bad)])
    with pytest.raises(TypeError, match="SegTrainConfig"):
        train({"iters": 1})


def test_ham_flags_reach_the_block():
    from hamburger.seg.config import SegTrainConfig
    from hamburger.seg.train import build_model

    config = SegTrainConfig(
        model="hamnet_tiny",
        ham_version="v2+",
        ham_steps=3,
        ham_eval_steps=9,
        ham_grad="bptt",
        rank=8,
        ham_init="online",
    )
    block = build_model(config, 4, torch.device("cpu")).head.context
    assert block.version == "v2+" and hasattr(block, "coef_ham")
    ham = block.ham
    assert (ham.train_steps, ham.eval_steps, ham.grad, ham.rank, ham.init) == (3, 9, "bptt", 8, "online")
    model = build_model(SegTrainConfig(model="hamnet_tiny", context_norm="group"), 4, torch.device("cpu"))
    assert isinstance(model.head.context.cheese.norm, torch.nn.GroupNorm)
    assert isinstance(model.head.squeeze.norm, torch.nn.BatchNorm2d)  # the head's own norms are unchanged


def test_batchnorm_recalibration_is_the_plain_average_in_eval_mode():
    from hamburger.seg.train import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5))
    model[1].running_mean.fill_(7.0)  # stale statistics
    batches = [(torch.randn(2, 3, 5, 5) + k, None) for k in range(3)]
    model.train()
    recalibrate_batchnorm(model, batches, torch.device("cpu"))
    assert model.training and model[1].momentum == 0.1  # modes and momentum restored
    feats = torch.cat([model[0](x) for x, _ in batches]).detach()
    torch.testing.assert_close(model[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
    # the unbiased per-batch variances, averaged over batches of equal size
    var = torch.stack([model[0](x).detach().var((0, 2, 3), unbiased=True) for x, _ in batches]).mean(0)
    torch.testing.assert_close(model[1].running_var, var, rtol=1e-4, atol=1e-5)


def test_train_with_bn_recalibration(data, tmp_path):
    out = tmp_path / "run"
    main(_train_args(data, out, "--iters", "2", "--val-interval", "2", "--bn-recalib", "2", "--quiet"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert "val_miou" in log[-1]
    assert "bn_recalib: 2" in (out / "config.yaml").read_text()


def test_viz_writes_figure_2_for_a_checkpoint_and_a_photo(data, tmp_path):
    from hamburger.seg.data import build_dataset
    from hamburger.seg.models import create_model
    from hamburger.seg.transforms import SegTransform
    from hamburger.viz.figure2 import ham_views, pca_rgb

    out = tmp_path / "run"
    main(_train_args(data, out, "--iters", "1", "--quiet"))
    base = [
        "--dataset",
        "folder",
        "--data-root",
        str(data),
        "--num-classes",
        "3",
        "--model",
        "hamnet_r18_d8",
        "--rank",
        "8",
        "--weights",
        str(out / "last.safetensors"),
        "--split",
        "val",
    ]
    main(["viz", *base, "--images", "0,1", "--out", str(tmp_path / "v")])
    for name in ("viz-0.png", "viz-1.png", "contact-sheet.png"):
        assert (tmp_path / "v" / name).stat().st_size > 5000, name
    with pytest.raises(SystemExit, match="outside the split's 2 images"):
        main(["viz", *base, "--images", "5", "--out", str(tmp_path / "v")])
    main(["viz", "--photo", "coins", "--photo-rank", "4", "--steps", "3", "--out", str(tmp_path / "p")])
    assert (tmp_path / "p" / "viz-coins-nmf.png").stat().st_size > 5000
    # the numbers behind the figure: the error falls from the start, the codes are the solver's
    model = create_model("hamnet_tiny", num_classes=3)
    image = build_dataset("folder", data, "val", num_classes=3, transform=SegTransform(train=False))[0][0]
    views = ham_views(model, image)
    assert views["errors"][-1] < views["errors"][0] and len(views["errors"]) == 7  # eval K = 6, plus the start
    assert views["codes"].shape == (16, views["x"].shape[1]) and views["size"] == (5, 5)
    feat, recon = pca_rgb(views["x"], views["recon"])
    assert feat.shape == recon.shape == (3, 25) and 0 <= feat.min() and feat.max() <= 1


def test_pilot_budget_finds_where_validation_settled(tmp_path, capsys):
    """benchmarks/pilot_budget.py (issue 44's pilot): the first budget whose last quarter moved < 0.5 mIoU."""
    import runpy

    records = [{"step": s, "loss": 1.0} for s in range(1, 1601)]
    values = {100: 10, 200: 30, 300: 40, 400: 45, 500: 47, 600: 48, 700: 48.2, 800: 48.3, 900: 48.4, 1000: 48.4}
    for r in records:
        if r["step"] in values:
            r["val_miou"] = values[r["step"]] / 100  # the log holds fractions
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    script = ROOT / "benchmarks" / "pilot_budget.py"
    module = runpy.run_path(str(script))
    points = module["curve"](tmp_path)
    assert points[0] == (100, 10) and len(points) == 10 and abs(points[-1][1] - 48.4) < 1e-9
    assert module["settled_budget"](points, 0.5) == 800  # [600, 800]: 48.0 .. 48.3
    assert module["settled_budget"](points, 0.1) is None
    sys.argv = ["pilot_budget.py", str(tmp_path)]
    module["main"]()
    assert "Budget: settled at 800 steps" in capsys.readouterr().out


def test_keep_runs_copies_what_a_finished_run_is_read_from(tmp_path):
    """benchmarks/keep_runs.py: a finished run's result.json, config.yaml and validation records are kept; an
    unfinished run and the checkpoints are not."""
    import runpy

    done, running = tmp_path / "plan" / "fcn-scratch" / "seed0", tmp_path / "plan" / "fcn-pretrained" / "seed0"
    for run in (done, running):
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("iters: 4\n")
        (run / "best.safetensors").write_bytes(b"\0" * 64)
        records = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0, "val_miou": 0.25}]
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (done / "result.json").write_text('{"test_miou": 0.5}')
    module = runpy.run_path(str(ROOT / "benchmarks" / "keep_runs.py"))
    kept = module["keep"](tmp_path / "plan", tmp_path / "kept")
    assert [str(k) for k in kept] == ["fcn-scratch/seed0"]
    target = tmp_path / "kept" / "fcn-scratch" / "seed0"
    assert sorted(p.name for p in target.iterdir()) == ["config.yaml", "log.jsonl", "result.json"]
    assert [json.loads(line)["step"] for line in (target / "log.jsonl").read_text().splitlines()] == [2]
    assert json.loads((target / "result.json").read_text()) == {"test_miou": 0.5}
    assert not (tmp_path / "kept" / "fcn-pretrained").exists()
