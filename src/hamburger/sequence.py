"""Sequence models with a choice of token mixer in one architecture: causal or not, the Ham (NMF, VQ), softmax
attention (SDPA), linear attention, or none — so benchmarks compare mixers, not architectures.

Every mixer maps (B, N, C) tokens and an optional padding mask (B, N) bool (True = a real token) to (B, N, C), and a
causal mixer has a recurrent form (``init_state`` / ``step``) for generation one token at a time.
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mixer import HamMixer
from .recurrent import (  # (B, N, C) <-> (B, H, N, C/H)
    BasedMixer,
    DeltaNetMixer,
    GatedDeltaNetMixer,
    Mamba2Mixer,
    SlidingWindowMixer,
    _heads,
    _merge,
)

__all__ = [
    "SoftmaxMixer",
    "LinearMixer",
    "NoMixer",
    "ShortConv",
    "create_mixer",
    "MIXERS",
    "RECURRENT",
    "HYBRIDS",
    "block_mixers",
    "model_state_floats",
    "HamTransformerBlock",
    "HamEncoder",
    "HamDecoder",
    "state_floats",
]


class Mixer(Protocol):
    """What every token mixer of :func:`create_mixer` is: ``(B, N, C) -> (B, N, C)`` (an optional mask of the
    padding), and its recurrent form — ``init_state(batch)`` and ``step(x_t (B, C), state) -> (y_t, state)``."""

    dim: int

    def __call__(self, x: Tensor, mask: Tensor | None = None) -> Tensor: ...

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict: ...

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]: ...


class SoftmaxMixer(nn.Module):
    """Multi-head softmax attention through ``scaled_dot_product_attention`` (``is_causal`` when causal and
    unmasked); recurrent form: a key/value cache."""

    def __init__(self, dim: int, *, heads: int = 1, causal: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.causal = dim, heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # 3 x (B, H, N, C/H)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            n = x.shape[1]
            allowed = mask[:, None, None, :]  # (B, 1, 1, N): real keys only
            if self.causal:
                allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            allowed = allowed | torch.eye(n, dtype=torch.bool, device=x.device)  # no empty row (padded queries)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out_proj(_merge(y))

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict:
        empty = torch.zeros(batch, self.heads, 0, self.dim // self.heads, device=device, dtype=dtype)
        return {"k": empty, "v": empty}

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x[:, None]).chunk(3, dim=-1))  # (B, H, 1, C/H)
        k, v = torch.cat([state["k"], k], 2), torch.cat([state["v"], v], 2)
        y = F.scaled_dot_product_attention(q, k, v)  # the new token attends to every cached one
        return self.out_proj(_merge(y))[:, 0], {"k": k, "v": v}


def _causal_linear(q: Tensor, k: Tensor, v: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Σ_{s<=t} (q_t·k_s) v_s and Σ_{s<=t} q_t·k_s for features q, k (B, H, N, d) and values v (B, H, N, e), in
    chunks of L tokens: masked (L×L) products inside a chunk plus the running Σ k vᵀ (d×e) of the chunks before —
    O(N·L·d + N·d·e) time and O(N·L + (N/L)·d·e) memory instead of N prefix sums of d×e matrices."""
    b, h, n, d = q.shape
    pad = -n % chunk
    if pad:  # zero keys and values add nothing; the padded queries are cut off below
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    m = (n + pad) // chunk
    q, k, v = (t.reshape(b, h, m, chunk, t.shape[-1]) for t in (q, k, v))  # (B, H, M, L, ·)
    scores = (q @ k.mT).tril()  # (B, H, M, L, L): s <= t inside the chunk
    kv = k.mT @ v  # (B, H, M, d, e): each chunk's Σ k vᵀ
    before = torch.cumsum(kv, 2) - kv  # (B, H, M, d, e): the chunks before, exclusive
    z = k.sum(3)  # (B, H, M, d)
    z_before = torch.cumsum(z, 2) - z
    num = scores @ v + q @ before  # (B, H, M, L, e)
    den = scores.sum(-1, keepdim=True) + q @ z_before[..., None]  # (B, H, M, L, 1)
    return num.reshape(b, h, m * chunk, -1)[:, :, :n], den.reshape(b, h, m * chunk, 1)[:, :, :n]


class LinearMixer(nn.Module):
    """Linear attention (Katharopoulos et al. 2020) with φ = elu + 1, norm-free; causal by prefix sums.
    Recurrent form: the running sums S = Σ φ(k)vᵀ and z = Σ φ(k)."""

    def __init__(self, dim: int, *, heads: int = 1, causal: bool = False, eps: float = 1e-6, chunk: int = 64) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.causal, self.eps, self.chunk = dim, heads, causal, eps, chunk
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return F.elu(q) + 1, F.elu(k) + 1, v

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self._features(x)  # (B, H, N, d)
        if mask is not None:
            keep = mask[:, None, :, None].to(k.dtype)
            k, v = k * keep, v * keep
        if self.causal:
            num, den = _causal_linear(q, k, v, self.chunk)
        else:
            kv = k.mT @ v  # (B, H, d, N) @ (B, H, N, d) -> (B, H, d, d)
            num = q @ kv
            den = q @ k.sum(2, keepdim=True).mT  # (B, H, N, d) @ (B, H, d, 1)
        return self.out_proj(_merge(num / (den + self.eps)))

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict:
        d = self.dim // self.heads
        return {
            "kv": torch.zeros(batch, self.heads, d, d, device=device, dtype=dtype),
            "z": torch.zeros(batch, self.heads, d, device=device, dtype=dtype),
        }

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        q, k, v = (t[:, :, 0] for t in self._features(x[:, None]))  # (B, H, d)
        kv = state["kv"] + k[..., :, None] * v[..., None, :]
        z = state["z"] + k
        y = (q[..., None, :] @ kv)[..., 0, :] / ((q * z).sum(-1, keepdim=True) + self.eps)  # (B, H, d)
        return self.out_proj(y.reshape(x.shape[0], self.dim)), {"kv": kv, "z": z}


class NoMixer(nn.Module):
    """No token mixing: the block is its MLP alone (the control)."""

    def __init__(self, dim: int, **_) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return torch.zeros_like(x)

    def init_state(self, batch: int, **_) -> dict:
        return {}

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        return torch.zeros_like(x), state


# the fixed-state mixers of :mod:`hamburger.recurrent`, causal only: name -> class (their defaults: chunk 64,
# Based's 16 features, a window of 64 tokens)
RECURRENT = {
    "deltanet": DeltaNetMixer,
    "gated_deltanet": GatedDeltaNetMixer,
    "mamba2": Mamba2Mixer,
    "based": BasedMixer,
    "swa": SlidingWindowMixer,
}
MIXERS = ("ham_nmf", "ham_vq", "softmax", "linear", "none", *RECURRENT)
# hybrids (Based, Griffin, Samba): a fixed-state mixer and sliding-window attention in alternate blocks, first block
# the fixed-state one; named by composition
HYBRIDS = tuple(f"{m}+swa" for m in ("ham_nmf", "ham_vq", "linear", "deltanet", "gated_deltanet", "mamba2", "based"))


def block_mixers(name: str, depth: int) -> list[str]:
    """The mixer of each of ``depth`` blocks: ``name`` (one of :data:`MIXERS`) in every block, or for a hybrid
    ``"a+b"`` of :data:`HYBRIDS`, a, b, a, b, ..."""
    if name not in MIXERS and name not in HYBRIDS:
        raise ValueError(f"unknown mixer {name!r}; available: {', '.join((*MIXERS, *HYBRIDS))}")
    parts = name.split("+")
    return [parts[i % len(parts)] for i in range(depth)]


def create_mixer(name: str, dim: int, *, heads: int = 1, causal: bool = False, **kwargs) -> nn.Module:
    """``"ham_nmf"`` / ``"ham_vq"`` (:class:`~hamburger.mixer.HamMixer`; ``kwargs`` are its ``rank``, ``steps``,
    ``chunk``...), ``"softmax"``, ``"linear"``, ``"none"``, or a causal fixed-state mixer of :data:`RECURRENT`
    (``"deltanet"``, ``"gated_deltanet"``, ``"mamba2"``, ``"based"``, ``"swa"``)."""
    if name.startswith("ham_") and name in MIXERS:
        return HamMixer(dim, ham=name[4:], heads=heads, causal=causal, **kwargs)
    if kwargs:
        raise TypeError(f"mixer {name!r} takes no options {sorted(kwargs)}")
    if name == "softmax":
        return SoftmaxMixer(dim, heads=heads, causal=causal)
    if name == "linear":
        return LinearMixer(dim, heads=heads, causal=causal)
    if name == "none":
        return NoMixer(dim)
    if name in RECURRENT:
        return RECURRENT[name](dim, heads=heads, causal=causal)
    raise ValueError(f"unknown mixer {name!r}; available: {', '.join(MIXERS)}")


class ShortConv(nn.Module):
    """Causal depthwise convolution over tokens, (B, N, C) -> (B, N, C): token t sees tokens t-k+1..t. Zero at
    init. The shared "short convolution" of sub-quadratic sequence models (H3, Based): it hands a token its
    neighbours, so a global mixer can match a query against the token *before* a value. Recurrent form: the last
    k-1 inputs."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        if kernel < 1:
            raise ValueError(f"kernel must be >= 1, got {kernel}")
        self.kernel = kernel
        self.weight = nn.Parameter(torch.zeros(dim, 1, kernel))  # (C, 1, k); tap k-1 is the current token

    def forward(self, x: Tensor) -> Tensor:
        h = F.pad(x.transpose(1, 2), (self.kernel - 1, 0))  # (B, C, N + k - 1)
        return F.conv1d(h, self.weight, groups=x.shape[-1]).transpose(1, 2)  # (B, N, C)

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> Tensor:
        return torch.zeros(batch, self.kernel - 1, self.weight.shape[0], device=device, dtype=dtype)

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        window = torch.cat([state, x[:, None]], 1)  # (B, k, C)
        return (window * self.weight[:, 0].T).sum(1), window[:, 1:]


def _numel(state) -> int:
    if isinstance(state, Tensor):
        return state.numel()
    if isinstance(state, dict):
        return sum(_numel(v) for v in state.values())
    if isinstance(state, (tuple, list)):
        return sum(_numel(v) for v in state)
    return 0  # counters (a position) are not floats


@torch.no_grad()
def state_floats(mixer: Mixer, tokens: int) -> int:
    """Floats a causal mixer's recurrent state holds after ``tokens`` tokens of one sequence — measured by stepping
    its recurrent form (softmax: the KV cache, growing with N; linear attention: Σ φ(k)vᵀ and Σ φ(k); the Ham: its
    dictionary, prefix statistics and the pending chunk's)."""
    state = mixer.init_state(1)
    x = torch.randn(1, mixer.dim, generator=torch.Generator().manual_seed(0))
    largest = _numel(state)
    for _ in range(tokens):
        _, state = mixer.step(x, state)
        largest = max(largest, _numel(state))
    return largest


def model_state_floats(name: str, tokens: int, *, dim: int, depth: int, heads: int = 1, **mixer_kwargs) -> float:
    """Floats of recurrent state per layer (the mean over ``depth`` blocks) of a model whose blocks mix by ``name``
    (a mixer or a hybrid of :func:`block_mixers`) after ``tokens`` tokens, measured by stepping each block's mixer;
    the Ham's options go to its blocks only."""
    floats = [
        state_floats(
            cast(
                Mixer, create_mixer(m, dim, heads=heads, causal=True, **(mixer_kwargs if m.startswith("ham_") else {}))
            ),
            tokens,
        )
        for m in block_mixers(name, depth)
    ]
    return sum(floats) / depth


class HamTransformerBlock(nn.Module):
    """Pre-norm block: x + mixer(LN(x)), then x + MLP(LN(x)). Softmax and linear attention hold four C×C
    projections, the Ham two (C×W and W×C, W its ``width``) and ``"none"`` none: the MLP is widened by the
    difference, so every arm has the same parameter count (within 1%). ``conv=k`` adds a :class:`ShortConv` of
    kernel k before the mixer (x + mixer(h + conv(h)), h = LN(x)) in every arm alike."""

    def __init__(
        self,
        dim: int,
        *,
        mixer: str = "ham_nmf",
        heads: int = 1,
        causal: bool = False,
        mlp_ratio: float = 4.0,
        conv: int = 0,
        **mixer_kwargs,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.conv = ShortConv(dim, conv) if conv else None
        self.mixer = cast(Mixer, create_mixer(mixer, dim, heads=heads, causal=causal, **mixer_kwargs))
        extra = {"none": 2 * dim}.get(mixer, 0)
        if mixer in RECURRENT or mixer.startswith("ham_"):  # the MLP makes up the difference to attention's four C×C
            # (the Ham: C×W and W×C, 2C − W more hidden units; its query and write-strength projections count too)
            matrices = sum(p.numel() for p in cast(nn.Module, self.mixer).parameters() if p.dim() == 2)
            extra = round((4 * dim * dim - matrices) / (2 * dim))  # negative: gates beyond four C×C
        hidden = int(mlp_ratio * dim) + extra
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        if self.conv is not None:
            h = h + self.conv(h if mask is None else h * mask[..., None].to(h.dtype))
        x = x + self.mixer(h, mask)
        return x + self.mlp(self.norm2(x))

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict:
        conv = self.conv.init_state(batch, device=device, dtype=dtype) if self.conv is not None else None
        return {"mixer": self.mixer.init_state(batch, device=device, dtype=dtype), "conv": conv}

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        h, conv = self.norm1(x), state["conv"]
        if self.conv is not None:
            c, conv = self.conv.step(h, conv)
            h = h + c
        y, mixer = self.mixer.step(h, state["mixer"])
        x = x + y
        return x + self.mlp(self.norm2(x)), {"mixer": mixer, "conv": conv}


class HamEncoder(nn.Module):
    """A stack of non-causal blocks on (B, N, C) embeddings with learned positions (a non-causal ham is
    permutation-equivariant: without positions order is invisible), then a final LayerNorm.

    Args:
        dim: C. depth: blocks. max_len: longest N. mixer: of every block, or a hybrid of :data:`HYBRIDS` (alternate
            blocks). heads, mlp_ratio, conv, **mixer_kwargs: of every block (a hybrid's Ham options: its Ham blocks).
    """

    causal = False

    def __init__(
        self,
        dim: int,
        *,
        depth: int = 2,
        max_len: int = 1024,
        mixer: str = "ham_nmf",
        heads: int = 1,
        mlp_ratio: float = 4.0,
        conv: int = 0,
        **mixer_kwargs,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        hybrid = mixer in HYBRIDS  # a hybrid's attention blocks take none of the Ham's options
        self.blocks = nn.ModuleList(
            HamTransformerBlock(
                dim,
                mixer=m,
                heads=heads,
                causal=self.causal,
                mlp_ratio=mlp_ratio,
                conv=conv,
                **({} if hybrid and not m.startswith("ham_") else mixer_kwargs),
            )
            for m in block_mixers(mixer, depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        n = x.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence of {n} tokens is longer than max_len={self.max_len}")
        x = x + self.pos[:n]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class HamDecoder(HamEncoder):
    """The causal stack (same arguments as :class:`HamEncoder`) with a recurrent form: ``init_state(batch)`` and
    ``step(x_t (B, C), state) -> (y_t, state)``, equal to ``forward``'s output at that position."""

    causal = True

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict:
        device = device or self.pos.device
        blocks = cast("list[HamTransformerBlock]", self.blocks)
        return {"t": 0, "blocks": [b.init_state(batch, device=device, dtype=dtype) for b in blocks]}

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        t = state["t"]
        if t >= self.max_len:
            raise ValueError(f"position {t} is past max_len={self.max_len}")
        x = x + self.pos[t]
        states = []
        for block, s in zip(cast("list[HamTransformerBlock]", self.blocks), state["blocks"]):
            x, s = block.step(x, s)
            states.append(s)
        return self.norm(x), {"t": t + 1, "blocks": states}
