import os

# the fused Triton kernels (hamburger.kernels) run under Triton's CPU interpreter in the suite; it must be set before
# triton is first imported (``import triton`` reads it for triton.language), so here, before torch
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def nonneg(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype)


def gauss(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)
