import warnings

import numpy as np
import pytest
import torch

import hamburger as hb


@pytest.mark.parametrize("ham", ["nmf", "vq", "cd"])
def test_torch_compile_matches_eager_at_every_input_size(ham):
    """Three input sizes, so dynamo makes the size dynamic (the input check's messages must survive a symbolic bound),
    in eval and in training (the one-step gradient through the compiled graph)."""
    torch._dynamo.reset()
    block = hb.Hamburger(16, ham=ham, rank=4).eval()
    compiled = torch.compile(block, dynamic=True)  # symbolic sizes from the first call, as dynamo makes them later
    for h, w in ((6, 5), (8, 8), (12, 7)):
        x = torch.randn(2, 16, h, w)
        torch.testing.assert_close(compiled(x), block(x), rtol=1e-4, atol=1e-4)
    block.train()  # dynamo and AOT autograd trace the one-step backward (inductor compiles it in test_fastpath.py)
    compiled = torch.compile(block, dynamic=True, backend="aot_eager")
    for h, w in ((6, 5), (8, 8), (12, 7)):
        x = torch.randn(2, 16, h, w, requires_grad=True)
        block.ham.generator = torch.Generator().manual_seed(h)
        eager_out = block(x)
        (eager_grad,) = torch.autograd.grad(eager_out.square().sum(), x)
        block.ham.generator = torch.Generator().manual_seed(h)
        comp_out = compiled(x)
        (comp_grad,) = torch.autograd.grad(comp_out.square().sum(), x)
        torch.testing.assert_close(comp_out, eager_out, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(comp_grad, eager_grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("ham", ["nmf", "vq", "cd"])
def test_onnx_export_dynamic_shapes_runs_in_onnxruntime(ham, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    block = hb.Hamburger(16, ham=ham, rank=4).eval()
    x = torch.rand(2, 16, 12, 10)
    batch, height, width = (torch.export.Dim(n, min=1, max=4096) for n in ("batch", "height", "width"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            block,
            (x,),
            dynamo=True,
            opset_version=18,
            verbose=False,
            dynamic_shapes=({0: batch, 2: height, 3: width},),
        )
    path = tmp_path / f"{ham}.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((3, 16, 17, 9), (1, 16, 5, 31)):  # sizes other than the traced one
        x2 = torch.rand(*shape)
        got = session.run(None, {session.get_inputs()[0].name: x2.numpy()})[0]
        want = block(x2).detach().numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max())
