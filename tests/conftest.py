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


def stepped(module, x):
    """A causal mixer's (or decoder's) recurrent form run one token at a time over x (B, N, C): (B, N, C)."""
    state, ys = module.init_state(x.shape[0], dtype=x.dtype), []
    for t in range(x.shape[1]):
        y, state = module.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1)


def assert_ignores_the_future(module, x):
    """Changing the tokens after position t changes none of ``module``'s outputs up to t, for every t, bit for bit."""
    y = module(x)
    for t in range(x.shape[1] - 1):
        later = x.clone()
        later[:, t + 1 :] += torch.randn_like(later[:, t + 1 :])
        torch.testing.assert_close(module(later)[:, : t + 1], y[:, : t + 1], rtol=0, atol=0)
