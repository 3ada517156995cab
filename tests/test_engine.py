"""The engine with a task that is not segmentation: the extension contract is enough to train, checkpoint, resume
bit for bit, evaluate and refuse a changed recipe."""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from hamburger.engine.checkpoint import load_checkpoint, load_weights, model_identity
from hamburger.engine.config import option
from hamburger.engine.loop import fit
from hamburger.engine.task import Task


@dataclass
class ToyConfig:
    out: Path = option(Path("toy"), "run folder")
    iters: int = option(6, "steps")
    lr: float = option(0.1, "LR")
    seed: int = option(0, "seed")
    device: str = option("cpu", "device")
    accum_steps: int = option(1, "micro-steps")
    amp: str = option("none", "autocast")
    val_interval: int = option(3, "validate every N steps")
    ckpt_interval: int = option(2, "checkpoint every N steps")
    resume: bool = option(False, "resume")
    overwrite: bool = option(False, "replace a run in out")
    allow_changed_config: bool = option(False, "allow a changed recipe")
    init_weights: Path | None = option(None, "initial weights")
    quiet: bool = option(True, "no bar")
    no_tensorboard: bool = option(True, "no events")


class ToyTask(Task):
    """Least squares on a fixed random problem, with a Hamburger-free linear model."""

    score = "neg_mse"
    free_fields = frozenset({"out", "resume", "quiet"})

    def build(self, config, device):
        g = torch.Generator().manual_seed(123)
        x = torch.randn(64, 5, generator=g)
        y = x @ torch.randn(5, 1, generator=g)
        model = nn.Linear(5, 1).to(device)
        return model, torch.utils.data.TensorDataset(x, y), (x, y), model_identity(model, name="toy", num_classes=1)

    def optimizer(self, model, config):
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, partial(lambda step, total: 1 - step / total, total=config.iters)
        )

    def batches(self, train_set, config, *, world, rank, start):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed)).tolist()
        steps = [order[(s * 8) % 64 : (s * 8) % 64 + 8] for s in range(start, config.iters)]
        return torch.utils.data.DataLoader(train_set, batch_sampler=steps)

    def loss(self, net, batch, config, device):
        x, y = batch
        return nn.functional.mse_loss(net(x + 0.01 * torch.randn_like(x)), y)  # uses the RNG: resume must restore it

    def evaluate(self, model, val_set, config, device, step):
        x, y = val_set
        with torch.no_grad():
            return {"neg_mse": -nn.functional.mse_loss(model(x), y).item()}


def test_a_new_task_trains_resumes_and_is_checked_through_the_engine(tmp_path):
    straight = fit(ToyTask(), ToyConfig(out=tmp_path / "straight"))
    losses = [r["loss"] for r in straight["history"]]
    assert losses[-1] < losses[0] and straight["best_score"] > -losses[0]
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and "val_neg_mse" in log[2]
    # a crash in step 5 (after the step-4 checkpoint), then a resume: the same weights, bit for bit
    part = ToyConfig(out=tmp_path / "resumed")
    with pytest.raises(RuntimeError, match="crash"):
        fit(CrashingTask(at_call=5), part)
    assert load_checkpoint(tmp_path / "resumed")[2]["step"] == 4
    with pytest.raises(ValueError, match=r"changed recipe \(lr: 0.1 -> 0.2\)"):
        fit(ToyTask(), replace(part, resume=True, lr=0.2))
    fit(ToyTask(), replace(part, resume=True))
    a = load_weights(tmp_path / "resumed" / "last.safetensors")
    b = load_weights(tmp_path / "straight" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


class CrashingTask(ToyTask):
    def __init__(self, at_call: int) -> None:
        self.calls, self.at_call = 0, at_call

    def loss(self, net, batch, config, device):
        self.calls += 1
        if self.calls == self.at_call:
            raise RuntimeError("crash")
        return super().loss(net, batch, config, device)


def test_a_resume_without_a_checkpoint_cuts_the_log_back(tmp_path, capsys):
    """Killed before the first commit, then --resume: the run starts over and the log holds each step once."""
    config = ToyConfig(out=tmp_path / "run")
    with pytest.raises(RuntimeError, match="crash"):
        fit(CrashingTask(at_call=2), config)  # step 1 logged, no checkpoint yet (ckpt_interval 2)
    assert load_checkpoint(tmp_path / "run") is None and (tmp_path / "run" / "log.jsonl").read_text().count("\n") == 1
    fit(ToyTask(), replace(config, resume=True))
    assert "no checkpoint" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_half_written_last_log_line_is_dropped_and_a_damaged_log_named(tmp_path):
    config = ToyConfig(out=tmp_path / "run")
    with pytest.raises(RuntimeError, match="crash"):
        fit(CrashingTask(at_call=5), config)  # checkpoint at step 4, step 4 logged
    log = tmp_path / "run" / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 5, "lo')  # the kill landed inside the write of step 5
    fit(ToyTask(), replace(config, resume=True))
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    log.write_text('{"step": 1}\n{"loss": 2.0}\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"log.jsonl, line 2: a record without an integer 'step'"):
        fit(ToyTask(), replace(config, resume=True))
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"log.jsonl, line 2: not a JSON record"):
        fit(ToyTask(), replace(config, resume=True))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + os.environ["EVIL_MARK"],))


def test_a_state_file_that_would_run_code_is_refused_even_with_its_hash_recomputed(tmp_path, monkeypatch):
    config = ToyConfig(out=tmp_path / "run")
    fit(ToyTask(), config)
    manifest = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    state_path = tmp_path / "run" / manifest["state"]
    state = torch.load(state_path, weights_only=True)
    assert state["rng"]["numpy"]["keys"].dtype == torch.int64  # the NumPy RNG state is a tensor since 0.2
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    torch.save({**state, "extra": _Evil()}, state_path)
    manifest["sha256"][manifest["state"]] = hashlib.sha256(state_path.read_bytes()).hexdigest()
    (tmp_path / "run" / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"holds more than tensors and plain data .*refused because loading it could"):
        fit(ToyTask(), replace(config, resume=True))
    assert not mark.exists()


def test_the_fp16_loss_scale_is_checkpointed_and_restored(tmp_path):
    config = ToyConfig(out=tmp_path / "run", amp="fp16")
    with pytest.raises(RuntimeError, match="crash"):
        fit(CrashingTask(at_call=5), config)  # checkpoint at step 4
    manifest = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    state_path = tmp_path / "run" / manifest["state"]
    state = torch.load(state_path, weights_only=True)
    assert 0 < state["scaler"]["scale"] < 65536.0  # backed off from torch's initial scale after overflows, and saved
    state["scaler"]["scale"] = 32.0  # a scale the two remaining steps neither overflow nor grow (interval 2000)
    torch.save(state, state_path)
    manifest["sha256"][manifest["state"]] = hashlib.sha256(state_path.read_bytes()).hexdigest()
    (tmp_path / "run" / "checkpoint.json").write_text(json.dumps(manifest))
    fit(ToyTask(), replace(config, resume=True))
    assert load_checkpoint(tmp_path / "run")[2]["scaler"]["scale"] == 32.0  # restored, not restarted at 65536


HOLD = """
import sys, time
from hamburger.engine.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_run_folder_holds_one_run(tmp_path):
    """Without --resume a used folder is refused; --overwrite replaces the old run's files (and only those); a second
    process on a folder in use is refused by the lock, naming the holder."""
    config = ToyConfig(out=tmp_path / "run", iters=4)
    fit(ToyTask(), config)
    (tmp_path / "run" / "eval.json").write_text("{}")  # what an evaluation of the old run left beside it
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(
        ValueError,
        match=r"already holds a run \(best.safetensors, best.safetensors.sha256, checkpoint.json, .*--overwrite",
    ):
        fit(ToyTask(), replace(config, iters=3, seed=5))
    fit(ToyTask(), replace(config, iters=3, seed=5, overwrite=True))
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and not (tmp_path / "run" / "eval.json").exists()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"is in use by another run \(PID {holder.pid}\)"):
            fit(ToyTask(), replace(config, resume=True))
    finally:
        holder.kill()
        holder.wait()
    fit(ToyTask(), replace(config, resume=True, iters=3, seed=5))  # released: the same run continues (no steps left)
