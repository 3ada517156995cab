"""The fixed-state causal mixers the field uses, beside the Ham: DeltaNet, Gated DeltaNet, a Mamba-2-style
scalar-decay state-space mixer, Based (Taylor linear attention) and sliding-window softmax attention.

Each maps (B, N, C) tokens (and an optional padding mask (B, N), True = a real token) to (B, N, C) by a chunkwise
parallel form for training, and has the recurrent form of :class:`hamburger.sequence.Mixer` (``init_state`` /
``step``) for generation, equal to it up to rounding (tests compare them in float64). All are causal only.

The delta-rule family shares one chunkwise solve, :func:`delta_chunkwise`: within a chunk of L tokens the delta rule's
sequential corrections are one unit-lower-triangular solve (the WY / UT form of Yang et al., *Parallelizing Linear
Transformers with the Delta Rule over Sequence Length*, 2024), and a per-token log decay g ≤ 0 (Gated DeltaNet,
Mamba-2) enters as ratios exp(G_r − G_i) ≤ 1 of its cumulative sums, never as a division by a vanishing product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DeltaNetMixer",
    "GatedDeltaNetMixer",
    "Mamba2Mixer",
    "BasedMixer",
    "SlidingWindowMixer",
    "delta_chunkwise",
    "delta_step",
    "taylor_features",
]


def _heads(x: Tensor, heads: int) -> Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)  # (B, N, C) -> (B, H, N, C/H)


def _merge(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)  # (B, H, N, d) -> (B, N, H·d)


def _blocks(t: Tensor, chunk: int) -> Tensor:
    """(B, H, N, ·) or (B, H, N) zero-padded to whole chunks -> (B, H, M, L, ·) or (B, H, M, L)."""
    n = t.shape[2]
    pad = -n % chunk
    if t.dim() == 3:
        return F.pad(t, (0, pad)).reshape(*t.shape[:2], -1, chunk)
    return F.pad(t, (0, 0, 0, pad)).reshape(*t.shape[:2], -1, chunk, t.shape[-1])


def _previous(t: Tensor) -> Tensor:
    """(B, H, M, L, ·) -> each block's predecessor, zeros before the first."""
    return F.pad(t, (0, 0, 0, 0, 1, 0))[:, :, :-1]


def delta_chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor | None,
    g: Tensor | None,
    *,
    chunk: int = 64,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Outputs o_t = S_tᵀ q_t of the recurrence S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ (α_t = exp(g_t)),
    chunk by chunk, and the final state.

    q, k: (B, H, N, dk); v: (B, H, N, dv); beta: (B, H, N), or None for no correction (S_t = α_t S_{t−1} + k_t v_tᵀ:
    linear attention with a decay, the SSD of Mamba-2); g: (B, H, N) log decays ≤ 0, or None for none (DeltaNet);
    state: (B, H, dk, dv), default zeros. Returns ((B, H, N, dv), (B, H, dk, dv)). Time O(N·L·(dk + dv) + N·dk·dv).
    """
    b, h, n, dk = q.shape
    s = state if state is not None else q.new_zeros(b, h, dk, v.shape[-1])
    qs, ks, vs = (_blocks(t, chunk) for t in (q, k, v))  # (B, H, M, L, ·); padded keys and values are zero
    G = torch.cumsum(_blocks(g, chunk), -1) if g is not None else None  # (B, H, M, L)
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    if G is not None:  # exp(G_r − G_i) for i <= r (<= 1), 0 above the diagonal (never exponentiated)
        diff = G[..., :, None] - G[..., None, :]
        ratio = torch.exp(torch.where(lower, diff, torch.full_like(diff, -math.inf)))
    else:
        ratio = lower.to(q.dtype)
    if beta is not None:
        bs = _blocks(beta, chunk)[..., None]  # (B, H, M, L, 1)
        a = (bs * (ks @ ks.mT) * ratio).tril(-1)  # (B, H, M, L, L): A'_{ri} = β_r (k_r·k_i) γ_r/γ_i, r > i
        eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
        gk = ks * torch.exp(G)[..., None] if G is not None else ks
        # U = (I + A')⁻¹ diag(β) V and W = (I + A')⁻¹ diag(β) diag(γ) K: the chunk's corrections, before the state
        uw = torch.linalg.solve_triangular(eye + a, bs * torch.cat([vs, gk], -1), upper=False, unitriangular=True)
        u, w = uw.split([vs.shape[-1], dk], -1)
    scores = (qs @ ks.mT) * ratio  # (B, H, M, L, L)
    outs = []
    for m in range(qs.shape[2]):
        new = u[:, :, m] - w[:, :, m] @ s if beta is not None else vs[:, :, m]  # (B, H, L, dv)
        carried = qs[:, :, m] @ s  # (B, H, L, dv): the state before the chunk, read by every query
        if G is not None:
            gam = torch.exp(G[:, :, m])  # (B, H, L): γ_r, the decay since the chunk's start
            carried = carried * gam[..., None]
            tail = torch.exp(G[:, :, m, -1:] - G[:, :, m])  # (B, H, L): γ_L / γ_i
            s = s * gam[..., -1, None, None] + (ks[:, :, m] * tail[..., None]).mT @ new
        else:
            s = s + ks[:, :, m].mT @ new
        outs.append(carried + scores[:, :, m] @ new)
    return torch.stack(outs, 2).reshape(b, h, -1, v.shape[-1])[:, :, :n], s


def delta_step(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, g: Tensor | None, state: Tensor
) -> tuple[Tensor, Tensor]:
    """One token of :func:`delta_chunkwise`'s recurrence: q, k (B, H, dk), v (B, H, dv), beta and g (B, H) or None,
    state (B, H, dk, dv) -> (o (B, H, dv), new state)."""
    if g is not None:
        state = state * torch.exp(g)[..., None, None]
    if beta is not None:
        read = (k[..., None, :] @ state)[..., 0, :]  # (B, H, dv): kᵀ S, what the key reads now
        state = state + beta[..., None, None] * k[..., :, None] * (v - read)[..., None, :]
    else:
        state = state + k[..., :, None] * v[..., None, :]
    return (q[..., None, :] @ state)[..., 0, :], state


class _FixedState(nn.Module):
    """What the delta-rule family shares: q/k/v projections per head, the chunk length, the output projection."""

    def __init__(self, dim: int, *, heads: int, causal: bool, chunk: int, key_dim: int | None = None) -> None:
        super().__init__()
        if not causal:
            raise ValueError(f"{type(self).__name__} is a causal mixer (causal=True)")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.dim, self.heads, self.chunk = dim, heads, chunk
        self.key_dim = key_dim or dim // heads  # dk per head
        self.qk = nn.Linear(dim, 2 * heads * self.key_dim)
        self.v = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k = (_heads(t, self.heads) for t in self.qk(x).chunk(2, -1))  # (B, H, N, dk)
        return q, k, _heads(self.v(x), self.heads)

    def _gates(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """β (B, H, N) and log decay g (B, H, N) of tokens x (B, N, C), or None where the mixer has none."""
        raise NotImplementedError

    def _features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return F.normalize(F.silu(q), dim=-1), F.normalize(F.silu(k), dim=-1)  # L2-normalised keys and queries

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self._qkv(x)
        q, k = self._features(q, k)
        beta, g = self._gates(x)
        if mask is not None:  # a padded token writes nothing and decays nothing
            keep = mask[:, None, :].to(x.dtype)  # (B, 1, N)
            k, v = k * keep[..., None], v * keep[..., None]
            beta = beta * keep if beta is not None else None
            g = g * keep if g is not None else None
        o, _ = delta_chunkwise(q, k, v, beta, g, chunk=self.chunk)
        return self.out_proj(self._readout(_merge(o), x))

    def _readout(self, o: Tensor, x: Tensor) -> Tensor:
        return o

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict:
        return {"s": torch.zeros(batch, self.heads, self.key_dim, self.dim // self.heads, device=device, dtype=dtype)}

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        q, k, v = (t[:, :, 0] for t in self._qkv(x[:, None]))  # (B, H, ·)
        q, k = self._features(q, k)
        beta, g = (t[:, :, 0] if t is not None else None for t in self._gates(x[:, None]))
        o, s = delta_step(q, k, v, beta, g, state["s"])
        return self.out_proj(self._readout(o.reshape(x.shape[0], self.dim)[:, None], x[:, None]))[:, 0], {"s": s}


class DeltaNetMixer(_FixedState):
    """DeltaNet (Schlag et al. 2021; Yang et al. 2024): S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ with
    L2-normalised SiLU keys and queries and a learned write strength β_t = σ(w_β·x_t) per head; o_t = S_tᵀ q_t. The
    update erases what the key reads before writing. State per head: dk × dv floats."""

    def __init__(self, dim: int, *, heads: int = 1, causal: bool = True, chunk: int = 64) -> None:
        super().__init__(dim, heads=heads, causal=causal, chunk=chunk)
        self.beta = nn.Linear(dim, heads)

    def _gates(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        return torch.sigmoid(self.beta(x)).transpose(1, 2), None  # (B, H, N)


def _decay_init(heads: int) -> tuple[Tensor, Tensor]:
    """Mamba's initialisation of a per-head decay: A = −exp(A_log), A_log = log U(1, 16); the step dt = softplus(·)
    starts log-uniform in [0.001, 0.1] through its bias (the inverse softplus)."""
    gen = torch.Generator().manual_seed(0)
    a_log = torch.log(torch.empty(heads).uniform_(1, 16, generator=gen))
    dt = torch.exp(torch.empty(heads).uniform_(math.log(1e-3), math.log(0.1), generator=gen))
    return a_log, dt + torch.log(-torch.expm1(-dt))


class GatedDeltaNetMixer(DeltaNetMixer):
    """Gated DeltaNet (Yang et al. 2025): DeltaNet with a data-dependent decay, S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1}
    + β_t k_t v_tᵀ, α_t = exp(−exp(A_log)·softplus(w_a·x_t + b)) per head (Mamba-2's parametrisation)."""

    def __init__(self, dim: int, *, heads: int = 1, causal: bool = True, chunk: int = 64) -> None:
        super().__init__(dim, heads=heads, causal=causal, chunk=chunk)
        self.decay = nn.Linear(dim, heads, bias=False)
        a_log, dt_bias = _decay_init(heads)
        self.a_log, self.dt_bias = nn.Parameter(a_log), nn.Parameter(dt_bias)

    def _gates(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        beta, _ = super()._gates(x)
        g = -torch.exp(self.a_log) * F.softplus(self.decay(x) + self.dt_bias)  # (B, N, H), <= 0
        return beta, g.transpose(1, 2)


class Mamba2Mixer(_FixedState):
    """A Mamba-2-style state-space mixer (the SSD layer, Dao & Gu 2024): per head a scalar decay α_t =
    exp(dt_t·A), S_t = α_t S_{t−1} + dt_t B_t x_tᵀ, y_t = S_tᵀ C_t + D x_t, with dt_t = softplus(w·x_t + b), A < 0;
    B, C are the keys and queries (dk = dv per head, no normalisation), x the values. The block around it supplies
    the short convolution; Mamba-2's expansion and output gate are left out so that its state and parameters match
    the other mixers'. State per head: dk × dv floats."""

    def __init__(self, dim: int, *, heads: int = 1, causal: bool = True, chunk: int = 64) -> None:
        super().__init__(dim, heads=heads, causal=causal, chunk=chunk)
        self.dt = nn.Linear(dim, heads, bias=False)
        a_log, dt_bias = _decay_init(heads)
        self.a_log, self.dt_bias = nn.Parameter(a_log), nn.Parameter(dt_bias)
        self.skip = nn.Parameter(torch.ones(heads))  # D

    def _dt(self, x: Tensor) -> Tensor:
        return F.softplus(self.dt(x) + self.dt_bias).transpose(1, 2)  # (B, H, N)

    def _gates(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        return None, -torch.exp(self.a_log)[:, None] * self._dt(x)

    def _features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return q, k

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = super()._qkv(x)
        return q, k * self._dt(x)[..., None], v  # the input enters scaled by dt

    def _readout(self, o: Tensor, x: Tensor) -> Tensor:
        return o + self.skip.repeat_interleave(self.dim // self.heads) * self.v(x)  # + D x


def taylor_features(x: Tensor) -> Tensor:
    """Based's feature map: the second-order Taylor expansion of exp, φ(x)·φ(y) = 1 + x·y + (x·y)²/2, on the last
    dimension d as 1 + d + d(d+1)/2 features (each unordered pair once: 16 -> 153)."""
    d = x.shape[-1]
    i, j = torch.triu_indices(d, d, device=x.device)
    weight = torch.ones(len(i), dtype=x.dtype, device=x.device)
    weight[i == j] = 0.5**0.5  # in x's precision (a float32 constant would cost a float64 product its digits)
    pair = x[..., i] * x[..., j] * weight  # x_i x_j, each square over sqrt(2)
    return torch.cat([torch.ones_like(x[..., :1]), x, pair], -1)


class BasedMixer(nn.Module):
    """Based's linear attention (Arora et al. 2024): queries and keys projected to ``features`` dimensions per head,
    scaled by features^(−1/4) and expanded by :func:`taylor_features` (16 -> 153), then normalised causal linear
    attention, o_t = Σ_{s<=t} φ(q_t)·φ(k_s) v_s / Σ_{s<=t} φ(q_t)·φ(k_s). State per head: 153 × dv + 153 floats (at
    16 features)."""

    def __init__(
        self, dim: int, *, heads: int = 1, causal: bool = True, features: int = 16, chunk: int = 64, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if not causal:
            raise ValueError("BasedMixer is a causal mixer (causal=True)")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.features, self.chunk, self.eps = dim, heads, features, chunk, eps
        self.qk = nn.Linear(dim, 2 * heads * features)
        self.v = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k = (taylor_features(_heads(t, self.heads) * self.features**-0.25) for t in self.qk(x).chunk(2, -1))
        return q, k, _heads(self.v(x), self.heads)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self._qkv(x)  # (B, H, N, F), (B, H, N, dv)
        if mask is not None:
            k = k * mask[:, None, :, None].to(k.dtype)
        ones = torch.ones_like(v[..., :1])
        o, _ = delta_chunkwise(q, k, torch.cat([v, ones], -1), None, None, chunk=self.chunk)
        return self.out_proj(_merge(o[..., :-1] / (o[..., -1:] + self.eps)))

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict:
        f = taylor_features(torch.zeros(1, self.features)).shape[-1]
        return {"s": torch.zeros(batch, self.heads, f, self.dim // self.heads + 1, device=device, dtype=dtype)}

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        q, k, v = (t[:, :, 0] for t in self._qkv(x[:, None]))
        o, s = delta_step(q, k, torch.cat([v, torch.ones_like(v[..., :1])], -1), None, None, state["s"])
        y = o[..., :-1] / (o[..., -1:] + self.eps)  # (B, H, dv)
        return self.out_proj(y.reshape(x.shape[0], self.dim)), {"s": s}


class SlidingWindowMixer(nn.Module):
    """Causal softmax attention over the last ``window`` tokens (the query's own included): blocked by the window
    for training (each block of queries attends to its own block and the one before, O(N·w)), a cache of the last
    w − 1 keys and values for generation (its state: 2·(w − 1)·C floats)."""

    def __init__(self, dim: int, *, heads: int = 1, causal: bool = True, window: int = 64) -> None:
        super().__init__()
        if not causal:
            raise ValueError("SlidingWindowMixer is a causal mixer (causal=True)")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.dim, self.heads, self.window = dim, heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        w, n = self.window, x.shape[1]
        q, k, v = (_blocks(_heads(t, self.heads), w) for t in self.qkv(x).chunk(3, -1))  # (B, H, M, w, d)
        k2, v2 = (torch.cat([_previous(t), t], 3) for t in (k, v))  # (B, H, M, 2w, d): the block before, then its own
        r = torch.arange(w, device=x.device)[:, None]
        j = torch.arange(2 * w, device=x.device)[None, :]
        allowed = ((j > r) & (j <= r + w)).expand(q.shape[2], w, 2 * w).clone()  # (M, w, 2w): the last w tokens
        allowed[0, :, :w] = False  # the first block has no block before it
        if mask is not None:  # padded keys are left out; a query always sees itself (no empty row)
            real = _blocks(mask[:, None, :].to(x.dtype), w)  # (B, 1, M, w)
            keys = torch.cat([_previous(real[..., None])[..., 0], real], -1).bool()  # (B, 1, M, 2w)
            allowed = allowed & keys[..., None, :] | (j == r + w)
        y = F.scaled_dot_product_attention(q, k2, v2, attn_mask=allowed)  # (B, H, M, w, d)
        return self.out_proj(_merge(y.reshape(*y.shape[:2], -1, y.shape[-1])[:, :, :n]))

    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict:
        empty = torch.zeros(batch, self.heads, 0, self.dim // self.heads, device=device, dtype=dtype)
        return {"k": empty, "v": empty}

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x[:, None]).chunk(3, -1))  # (B, H, 1, d)
        k, v = torch.cat([state["k"], k], 2), torch.cat([state["v"], v], 2)
        y = F.scaled_dot_product_attention(q, k, v)  # the new token attends to its window
        keep = max(k.shape[2] - self.window + 1, 0)  # the cache keeps the last w - 1 tokens
        return self.out_proj(_merge(y))[:, 0], {"k": k[:, :, keep:], "v": v[:, :, keep:]}
