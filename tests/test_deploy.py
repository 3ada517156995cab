"""Deployment parity: the exported ONNX of every ham and of ``hamnet_tiny`` runs in ONNX Runtime and in OpenVINO
(CPU, f32 inference precision) with PyTorch's outputs, and gives the same bits on every run and in every process
(the exported LightHam head of other libraries draws random bases inside the graph: a new score each run)."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import hamburger as hb
from hamburger.seg.models import create_model

ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

RUNNER = r"""
import sys
import numpy as np
import onnxruntime as ort
import openvino as ov
path, x_path, out_path = sys.argv[1:]
x = np.load(x_path)
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
a = session.run(None, {session.get_inputs()[0].name: x})[0]
compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
b = compiled(x)[compiled.output(0)]
np.save(out_path, np.stack([a, b]))
"""


class _Logits(nn.Module):
    """A segmentation model's ``out`` logits as the graph's single output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def _export(module: nn.Module, x: torch.Tensor, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (x,), dynamo=True, opset_version=18, verbose=False)
    program.save(str(path))


def _run_both(path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a = session.run(None, {session.get_inputs()[0].name: x})[0]
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    b = compiled(x)[compiled.output(0)]
    return a, b


def _parity(module: nn.Module, x: torch.Tensor, tmp_path, *, rtol: float) -> None:
    module.eval()
    path = tmp_path / "model.onnx"
    _export(module, x, path)
    with torch.no_grad():
        want = module(x).numpy()
    xn = x.numpy()
    a, b = _run_both(path, xn)
    scale = max(1.0, float(np.abs(want).max()))
    for name, got in (("onnxruntime", a), ("openvino", b)):
        assert got.shape == want.shape, name
        assert np.abs(got - want).max() <= rtol * scale, (name, float(np.abs(got - want).max()))
    # repeated runs in this process: the same bits
    a2, b2 = _run_both(path, xn)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    # a fresh process: the same bits as this one
    np.save(tmp_path / "x.npy", xn)
    for k in range(1):
        out = tmp_path / f"out{k}.npy"
        subprocess.run([sys.executable, "-c", RUNNER, str(path), str(tmp_path / "x.npy"), str(out)], check=True)
        both = np.load(out)
        assert np.array_equal(both[0], a) and np.array_equal(both[1], b), k


@pytest.mark.parametrize("ham", ["nmf", "vq", "cd"])
def test_every_ham_block_matches_in_onnxruntime_and_openvino(ham, tmp_path):
    torch.manual_seed(0)
    block = hb.Hamburger(32, ham=ham, rank=8)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        block.train()
        for _ in range(3):
            block(torch.rand(4, 32, 12, 10))
    _parity(block, torch.rand(2, 32, 12, 10), tmp_path, rtol=1e-3)


@pytest.mark.parametrize("ham", ["nmf", "vq", "cd"])
def test_every_bare_ham_matches_in_onnxruntime_and_openvino(ham, tmp_path):
    cls = {"nmf": hb.NMF, "vq": hb.VQ, "cd": hb.CD}[ham]
    torch.manual_seed(0)
    _parity(cls(24, rank=6), torch.rand(2, 24, 9, 11), tmp_path, rtol=1e-3)


def test_hamnet_tiny_matches_in_onnxruntime_and_openvino(tmp_path):
    torch.manual_seed(0)
    model = create_model("hamnet_tiny", num_classes=11)
    with torch.no_grad():
        model.train()
        model(torch.randn(2, 3, 64, 64))  # BatchNorm statistics off their defaults
    _parity(_Logits(model), torch.randn(1, 3, 64, 64), tmp_path, rtol=1e-3)
