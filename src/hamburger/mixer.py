"""The ham as a token mixer (the paper's future work): ``HamMixer`` on (B, N, C) sequences of any length N, with a
padding mask, heads (groups S), and a causal form whose recurrent twin generates one token at a time.

Notation: per head, tokens x_t ∈ R^D (D = C/S), a dictionary D ∈ R^{D×R} (R bases), codes c_t ∈ R^R, K steps.
Non-causal: the paper's alternating solve over the whole sequence. Causal (chunk L): chunk j is coded against a
dictionary D_j fitted to the chunks before it only (from the prefix statistics A_j = Σ X Cᵀ, B_j = Σ C Cᵀ), so the
cost is linear in N and the recurrent state is O(D·R + R²) per head. docs/mixer.md describes the forms, the options
(``norm``, ``memory``, ``local``, ``decay``, ``fit``, ``keys``) and the gradients (``grad``).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import GradSpec, parse_grad
from .recurrent import delta_chunkwise, delta_step

__all__ = [
    "HamMixer",
    "MIXER_HAMS",
    "MIXER_GRADS",
    "DEFAULT_MIXER_GRAD",
    "MIXER_NORMS",
    "DEFAULT_MIXER_NORM",
    "mixer_grad",
    "MIXER_MEMORIES",
    "DEFAULT_MIXER_MEMORY",
    "MIXER_FITS",
    "DEFAULT_MIXER_FIT",
    "MIXER_LOCALS",
]

MIXER_HAMS = ("nmf", "vq")
MIXER_GRADS = ("one-step", "bptt", "chunkwise", "truncated:<k>")  # the gradients the token mixer trains with
# the default, by evidence (docs/results/sequences.md): one-step never recalls, BPTT overflows on long sequences,
# truncated:k stays finite but does not recall; chunkwise recalls like BPTT (its one overflow, at N 256 / 32 pairs,
# was the solve's scale, which norm="unit" fixes)
DEFAULT_MIXER_GRAD = "chunkwise"
MIXER_NORMS = ("unit", "none")  # the causal NMF solve's scale: see HamMixer's ``norm``
DEFAULT_MIXER_NORM = "unit"
MIXER_FITS = ("mult", "ridge", "delta")  # how a causal NMF dictionary is fitted to the past: see HamMixer's ``fit``
# the default, by evidence: the multiplicative updates recalled more than the ridge fit (docs/results/sequences.md)
DEFAULT_MIXER_FIT = "mult"
MIXER_LOCALS = ("chunk", "window")  # what the causal read-out of the recent tokens sees: see HamMixer's ``local``
MIXER_MEMORIES = ("dict", "stats")  # what a causal chunk's dictionary update starts from: see HamMixer's ``memory``
# the default, by evidence: the dictionary rebuilt from the prefix statistics left MQAR's plateau at 32 pairs where the
# carried one stayed on it (docs/results/sequences.md)
DEFAULT_MIXER_MEMORY = "stats"


def mixer_grad(grad: str | GradSpec, steps: int | None = None) -> GradSpec:
    """Parse a token mixer's ``grad`` (one of :data:`MIXER_GRADS`, k <= ``steps`` when given) with the solve's
    parser; ``ValueError`` else."""
    kinds = ("one-step", "bptt", "chunkwise", "truncated")
    spec = parse_grad(grad, kinds=kinds, what="grad of a token mixer", spellings=", ".join(MIXER_GRADS))
    if steps is not None and spec.k > steps:
        raise ValueError(f"grad {grad!r} unrolls more steps than the solve has (K = {steps})")
    return spec


def _plain(spec: GradSpec, steps: int, last: int = 0) -> int:
    """How many of a solve's ``steps`` run without gradient: all under one-step but ``last``, none under BPTT, the
    first K − k under truncated:k."""
    if spec.kind == "one-step":
        return steps - last
    if spec.kind in ("bptt", "chunkwise"):
        return 0
    return max(0, steps - spec.k)


# ----------------------------------------------------------------------------------------------------------------
# one solve's pieces, on G = B*S groups: tokens x (G, T, D), dictionary d (G, D, R), codes (G, T, R)


def _nmf_code(x: Tensor, d: Tensor, steps: int, eps: float, plain: int) -> Tensor:
    """Codes of the tokens x against a fixed dictionary d: softmax start, then K multiplicative updates, the first
    ``plain`` of them (and the start, if any is) without gradient."""
    xd = x @ d  # (G, T, D) @ (G, D, R) -> (G, T, R): (DᵀX)ᵀ
    dtd = d.mT @ d  # (G, R, D) @ (G, D, R) -> (G, R, R)
    with torch.no_grad() if plain else nullcontext():
        c = torch.softmax(xd, dim=-1)
        for _ in range(plain):
            c = c * xd / (c @ dtd + eps)
    for _ in range(steps - plain):  # these carry the gradient
        c = c * xd / (c @ dtd + eps)
    return c


def _nmf_dict(d: Tensor, a: Tensor, b: Tensor, steps: int, eps: float) -> Tensor:
    """K updates D ← D ⊙ (A + ε) ⊘ (DB + ε) from the statistics A = XCᵀ (G, D, R), B = CCᵀ (G, R, R); with no
    statistics yet (A = B = 0) D stays as it is."""
    for _ in range(steps):
        d = d * (a + eps) / (d @ b + eps)  # (G, D, R) @ (G, R, R)
    return d


def _ridge_dict(d: Tensor, a: Tensor, b: Tensor, lam: float) -> Tensor:
    """argmin_D ‖X − DC‖² + λ‖D − d‖² = (A + λd)(B + λI)⁻¹ from A = XCᵀ (G, D, R), B = CCᵀ (G, R, R), clipped at
    zero; with no statistics yet (A = B = 0) it is d."""
    eye = torch.eye(b.shape[-1], dtype=b.dtype, device=b.device)
    rhs = (a + lam * d).mT  # (G, R, D)
    return torch.linalg.solve(b + lam * eye, rhs).mT.clamp_min(0)  # B + λI symmetric: (G, R, D) -> (G, D, R)


def _vq_code(x: Tensor, d: Tensor, inv_t: float) -> Tensor:
    """Soft assignments softmax(inv_t · cos(x, d)) over R."""
    sim = F.normalize(x, dim=-1) @ F.normalize(d, dim=1)  # (G, T, D) @ (G, D, R) -> (G, T, R)
    return torch.softmax(inv_t * sim, dim=-1)


def _vq_dict(d: Tensor, a: Tensor, counts: Tensor, eps: float) -> Tensor:
    """Centroids A / counts (A = XCᵀ (G, D, R), counts (G, R)); a basis with no tokens keeps its column."""
    return (a + eps * d) / (counts[:, None, :] + eps)


class HamMixer(nn.Module):
    """A token-mixing layer: in projection (the lower bread; + ReLU for NMF) → per-head low-rank solve → out
    projection (the upper bread). ``forward(x (B, N, C), mask (B, N) bool, True = a real token) -> (B, N, C)``.

    Args:
        dim: C, the token width.
        ham: ``"nmf"`` or ``"vq"``.
        rank: R, bases per head.
        steps: K, solver steps (code updates per token and dictionary updates per chunk).
        heads: S, groups of W/S channels, each with its own dictionary.
        width: W, the channels the solve works in (default: ``dim``). The in projection maps C to W, the out
            projection W back to C; a narrower W shrinks the recurrent state (D·R + R² + (L − 1)·D per head under
            ``memory="stats"``, D = W/S), so more bases fit in a given state size.
        keys: the channels per head that code a token (its key part; default: all D of them). A token's code is solved
            against the dictionary's first ``keys`` rows from its first ``keys`` channels; the dictionary's update fits
            every row, and the read-out D·c returns every row — the rest (the value part) is what a code recalls, the
            paper's matrix-completion view: a query whose value channels are unknown is coded by its key alone
            (its recall: docs/results/sequences.md).
        causal: the chunked causal form (docs/mixer.md).
        chunk: L, tokens per chunk of the causal form.
        grad: ``"chunkwise"`` (default), ``"one-step"`` (the paper's), ``"bptt"`` or ``"truncated:k"``: what each
            differentiates, docs/mixer.md; why chunkwise is the default, docs/results/sequences.md.
        norm: the causal NMF solve's scale. ``"unit"`` (default): every chunk's dictionary is rescaled to unit-norm
            columns after its K updates (the codes carry the scale). ``"none"`` (an ablation option): it keeps
            whatever scale its updates give it, which nothing bounds along the chunk chain (docs/mixer.md). The
            non-causal solve and VQ are the same under both.
        memory: what each chunk's dictionary update starts from in the causal form. ``"stats"`` (default): the
            fixed start, D_{j+1} = K updates of D_0 from (A_j, B_j) — the dictionary is a function of the prefix
            statistics alone, the information carried between chunks is (A, B) (D·R + R² floats per head; D_{j+1} a
            cache of them), and no gradient chain runs from chunk to chunk except through the statistics (chunkwise
            is then BPTT). ``"dict"`` (an ablation option): the previous chunk's dictionary, D_{j+1} = K updates of
            D_j from (A_j, B_j).
        fit: how a causal NMF mixer fits its dictionary to the past. ``"mult"`` (default): K multiplicative updates from
            the prefix statistics (A, B). ``"ridge"``: the closed form of min ‖X − DC‖² + λ‖D − D_start‖² over the
            prefix, D = (A + λ·D_start)(B + λI)⁻¹, clipped at zero (the codes' NMF updates need a non-negative D) — the
            exact least-squares memory that de-blends overlapping codes, where K multiplicative steps from the start do
            not (its recall against the default's: docs/results/sequences.md). ``"delta"``: no prefix statistics; the
            dictionary is written token by token by the delta rule, Dᵀ ← Dᵀ + β_t k_t (x_t − D k_t)ᵀ with k_t =
            c_t/‖c_t‖ the token's unit code and β_t = sigmoid(w·x_t + b) a learned write strength per head — one exact
            least-squares (LMS) step of ‖x_t − D k_t‖² per token, which first erases what the code reads now, so a new
            association overwrites instead of blending. A chunk's tokens are coded against the dictionary at the chunk's
            start, clipped at zero with unit-norm columns (the codes' NMF updates need a non-negative D); the output is
            D_t k_t, the dictionary after the token's own write (DeltaNet's read-out with the code as key and query), so
            a token reads its chunk's earlier tokens without ``local``. The state is the dictionary and its copy at the
            chunk's start, 2·D·R floats per head; the chunkwise form is :func:`~hamburger.recurrent.delta_chunkwise`.
            Not with ``memory="dict"`` or ``local``; ``decay`` is then per token (below).
        ridge: λ of ``fit="ridge"``.
        local: a read-out of the recent tokens (causal, ``memory="stats"``). Without it (False) a token meets only
            the dictionary of the chunks before its own — the (up to L − 1) tokens of its chunk before it, which the
            recurrent state already holds, reach it one chunk later. ``"chunk"`` (or True): y_t = D_j c_t + g ·
            Σ_s w_ts x_s / (1 + Σ_s w_ts) over its chunk's earlier tokens s, w_ts = c_t·c_s ≥ 0 the overlap of their
            codes (a softly normalised average: bounded by the largest ‖x_s‖, gradient bounded at vanishing codes),
            g a learned gain per head (start 1). ``"window"``: the same over the last L − 1 tokens, across the chunk
            boundary (those of the previous chunk coded against D_j, as the recurrent form codes them); the state then
            holds the last L − 1 tokens instead of the pending chunk's, as many floats. No extra state either way;
            the cost O(N·L·(R + D)).
        decay: a forgetting rate (causal, ``memory="stats"``): None (default) sums the prefix statistics with equal
            weights, A_j = A_{j-1} + X_j C_jᵀ; a float γ_0 in (0, 1) decays them by a learned γ per head at every
            chunk, A_j = γ A_{j-1} + X_j C_jᵀ (B alike), γ = sigmoid(θ) starting at γ_0 — recent chunks weigh more in
            the dictionary, as in gated linear attention and RetNet. No extra state. Under ``fit="delta"`` the
            dictionary itself decays toward zero by γ at every token before its write, D_t = γ D_{t-1} (I − β k kᵀ)
            + β x_t k_tᵀ (Gated DeltaNet's rule with a learned constant per head).
        query: under ``fit="delta"``, a token reads with the code of its own query — a separate projection of
            ``keys`` channels per head (C → S·keys, + ReLU for NMF), coded against the same dictionary — while it
            writes with its code as before (DeltaNet's separate query and key projections). Without it (False) a
            token reads and writes with one code, so a query must code like the token that stored its answer.
        inv_t: VQ's inverse temperature.
        eps: ε of the updates.
        seed: seed of the fixed start dictionary.
    """

    start: Tensor  # the start dictionary (a buffer), (S, D, R)

    def __init__(
        self,
        dim: int,
        *,
        ham: str = "nmf",
        rank: int = 16,
        steps: int = 6,
        heads: int = 1,
        width: int | None = None,
        keys: int | None = None,
        causal: bool = False,
        chunk: int = 64,
        grad: str = DEFAULT_MIXER_GRAD,
        norm: str = DEFAULT_MIXER_NORM,
        memory: str = DEFAULT_MIXER_MEMORY,
        fit: str = DEFAULT_MIXER_FIT,
        ridge: float = 1.0,
        local: bool | str | None = False,
        decay: float | None = None,
        query: bool = False,
        inv_t: float = 20.0,
        eps: float = 1e-6,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if ham not in MIXER_HAMS:
            raise ValueError(f"ham must be one of {MIXER_HAMS}, got {ham!r}")
        width = dim if width is None else width
        checks = (("dim", dim), ("width", width), ("rank", rank), ("steps", steps), ("heads", heads), ("chunk", chunk))
        for name, value in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if norm not in MIXER_NORMS:
            raise ValueError(f"norm must be one of {MIXER_NORMS}, got {norm!r}")
        if fit not in MIXER_FITS:
            raise ValueError(f"fit must be one of {MIXER_FITS}, got {fit!r}")
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge!r}")
        if fit != "mult" and (ham != "nmf" or not causal):  # the other solves have no such fit: say so, not ignore it
            raise ValueError(f"fit={fit!r} fits the causal NMF mixer's dictionary; got ham={ham!r}, causal={causal}")
        if query and fit != "delta":
            raise ValueError(f"query reads the delta-rule dictionary (fit='delta'); got fit={fit!r}")
        if fit == "delta" and (memory == "dict" or local):  # the delta rule's state is its own
            raise ValueError(
                f"fit='delta' carries the dictionary itself: no memory='dict' or local; got memory={memory!r}, "
                f"local={local!r}"
            )
        if memory not in MIXER_MEMORIES:
            raise ValueError(f"memory must be one of {MIXER_MEMORIES}, got {memory!r}")
        if local is None or isinstance(local, bool):
            local = "chunk" if local else None
        if local is not None and local not in MIXER_LOCALS:
            raise ValueError(f"local must be False, True, 'chunk' or 'window', got {local!r}")
        if local and (not causal or memory != "stats"):  # the recent tokens are in the state of the stats form only
            raise ValueError(f"local is the causal stats form's read-out; got causal={causal}, memory={memory!r}")
        if decay is not None:
            if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
                raise ValueError(f"decay must be None or a float in (0, 1), got {decay!r}")
            if not causal or memory != "stats":  # it weighs the prefix statistics of the stats form
                raise ValueError(
                    f"decay weighs the causal stats form's statistics; got causal={causal}, memory={memory!r}"
                )
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        keys = width // heads if keys is None else keys
        if isinstance(keys, bool) or not isinstance(keys, int) or not 1 <= keys <= width // heads:
            raise ValueError(f"keys must be an integer in [1, width/heads = {width // heads}], got {keys!r}")
        self.spec = mixer_grad(grad, steps)
        self.dim, self.width, self.ham, self.rank, self.steps, self.heads = dim, width, ham, rank, steps, heads
        self.causal, self.chunk, self.grad, self.inv_t, self.eps, self.seed = causal, chunk, grad, inv_t, eps, seed
        self.norm, self.memory, self.keys, self.fit, self.ridge, self.local = norm, memory, keys, fit, ridge, local
        self.in_proj = nn.Linear(dim, width)
        self.out_proj = nn.Linear(width, dim)
        self.local_gain = nn.Parameter(torch.ones(heads)) if local else None  # g per head
        self.decay = decay
        self.beta_proj = nn.Linear(dim, heads) if fit == "delta" else None  # β_t = sigmoid(w·x_t + b) per head
        self.query_proj = nn.Linear(dim, heads * keys) if query else None  # C -> S·keys, a query per head
        # γ = sigmoid(θ) per head
        self.decay_logit = nn.Parameter(torch.full((heads,), float(decay)).logit()) if decay is not None else None
        gen = torch.Generator().manual_seed(seed)
        draw = torch.rand if ham == "nmf" else torch.randn
        start = F.normalize(draw(heads, width // heads, rank, generator=gen), dim=1)  # (S, D, R)
        self.register_buffer("start", start, persistent=False)

    # -- shared -----------------------------------------------------------------------------------------------
    def _groups(self, x: Tensor, proj: nn.Module | None = None) -> Tensor:
        """(B, T, C) -> in projection (or ``proj``) -> (B, T, W) -> (B*S, T, D), D = W/S."""
        h = (proj if proj is not None else self.in_proj)(x)
        if self.ham == "nmf":
            h = F.relu(h)
        b, t, _ = h.shape
        return h.reshape(b, t, self.heads, -1).transpose(1, 2).reshape(b * self.heads, t, -1)  # (B*S, T, D)

    def _ungroup(self, y: Tensor, batch: int) -> Tensor:
        """(B*S, T, D) -> (B, T, W) -> out projection -> (B, T, C)."""
        t = y.shape[1]
        y = y.reshape(batch, self.heads, t, -1).transpose(1, 2).reshape(batch, t, self.width)  # (B, T, W)
        return self.out_proj(y)

    def _key_part(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """What codes a token: its key channels and the dictionary's key rows, (G, T, Dk) and (G, Dk, R)."""
        return x[..., : self.keys], d[:, : self.keys]

    def _code(self, x: Tensor, d: Tensor) -> Tensor:
        """Codes (G, T, R) of tokens x (G, T, D) against d (G, D, R), from the key channels (rows) only."""
        x, d = self._key_part(x, d)
        if self.ham == "nmf":
            return _nmf_code(x, d, self.steps, self.eps, _plain(self.spec, self.steps, last=1))
        return _vq_code(x, d, self.inv_t)

    def _update(self, d: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """The dictionary after K updates from the statistics (A, B or the counts): a constant of the backward pass
        under the one-step gradient, differentiated through its last k updates (with respect to the statistics, not
        the previous dictionary) under truncated:k."""
        if self.spec.kind == "chunkwise":  # the previous chunk's dictionary is a constant: no chain across chunks
            d = d.detach()
        if self.ham == "vq":  # one closed-form step: a constant under one-step, differentiated otherwise
            with torch.no_grad() if self.spec.kind == "one-step" else nullcontext():
                return _vq_dict(d, a, b, self.eps)
        if self.fit == "ridge":  # the closed form: no steps to cut, a constant under one-step only
            with torch.no_grad() if self.spec.kind == "one-step" else nullcontext():
                d = _ridge_dict(d, a, b, self.ridge)
        else:
            plain = _plain(self.spec, self.steps)
            if plain:
                with torch.no_grad():
                    d = _nmf_dict(d, a, b, plain, self.eps)
            d = _nmf_dict(d, a, b, self.steps - plain, self.eps)
        if self.norm == "unit":  # unit-norm columns: the codes carry the scale, their ratios Dᵀx ⊘ DᵀDc stay moderate
            d = d / (d.norm(dim=1, keepdim=True) + self.eps)  # (G, D, R) / (G, 1, R)
        return d

    def _stats(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """(XCᵀ (G, D, R), CCᵀ (G, R, R) for NMF or the per-basis counts (G, R) for VQ) of tokens x and codes c."""
        a = x.mT @ c  # (G, D, T) @ (G, T, R) -> (G, D, R)
        b = c.mT @ c if self.ham == "nmf" else c.sum(1)  # (G, R, R) or (G, R)
        return a, b

    def _local(self, c: Tensor, cp: Tensor, xp: Tensor, seen: Tensor | None) -> Tensor:
        """The local read-out of tokens with codes c (G, T, R) from recent tokens xp (G, P, D) with codes cp (G, P, R):
        g · Σ_s w_ts x_s / (1 + Σ_s w_ts), w = c cpᵀ, over the s that ``seen`` (T, P) bool allows (None: every s)."""
        w = c @ cp.mT  # (G, T, R) @ (G, R, P) -> (G, T, P)
        if seen is not None:
            w = w * seen
        assert self.local_gain is not None  # the read-out runs only with local on
        gain = self.local_gain.to(c.dtype).repeat(c.shape[0] // self.heads)[:, None, None]  # (S,) -> (G, 1, 1)
        return gain * (w @ xp) / (1 + w.sum(-1, keepdim=True))  # (G, T, P) @ (G, P, D) / (G, T, 1)

    def _join(self, a: Tensor | None, b: Tensor | None, sa: Tensor, sb: Tensor) -> tuple[Tensor, Tensor]:
        """The prefix statistics after a chunk with statistics (sa, sb) joins (a, b) (None: the first chunk):
        (γa + sa, γb + sb) with the learned γ per head under ``decay``, the plain sums otherwise."""
        if a is None or b is None:
            return sa, sb
        if self.decay_logit is None:
            return a + sa, b + sb
        gamma = torch.sigmoid(self.decay_logit).to(a.dtype).repeat(a.shape[0] // self.heads)  # (S,) -> (G,)
        return gamma[:, None, None] * a + sa, gamma.view(-1, *([1] * (b.ndim - 1))) * b + sb

    def _seen(self, t: int, p: int, like: Tensor) -> Tensor:
        """(T, P + T) bool: token i of a chunk (position p + i among the P earlier tokens and the chunk's T) sees the
        positions before it, at most L − 1 back (all of the chunk's earlier ones when P = 0)."""
        i = torch.arange(t, device=like.device)[:, None] + p  # (T, 1)
        k = torch.arange(p + t, device=like.device)[None]  # (1, P + T)
        return (k < i) & (k >= i - (self.chunk - 1))

    def _start(self, groups: int, like: Tensor) -> Tensor:
        return self.start.to(like.dtype).repeat(groups // self.heads, 1, 1)  # (S, D, R) -> (B*S, D, R)

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"HamMixer expects (B, N, {self.dim}) tokens, got shape {tuple(x.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"HamMixer got an empty sequence batch of shape {tuple(x.shape)}")
        batch, n = x.shape[:2]
        if mask is not None:
            if mask.shape != (batch, n) or mask.dtype != torch.bool:
                got = f"{mask.dtype} {tuple(mask.shape)}"
                raise ValueError(f"mask must be a bool (B, N) = {(batch, n)} tensor, got {got}")
            keep = mask.repeat_interleave(self.heads, 0)[..., None].to(x.dtype)  # (B, N) -> (B*S, N, 1)
        else:
            keep = None
        h = self._groups(x)  # (B*S, N, D)
        if self.fit == "delta":
            q = self._groups(x, self.query_proj) if self.query_proj is not None else None  # (B*S, N, keys)
            y = self._delta(h, self._beta(x), keep, q)
        else:
            y = self._causal(h, keep) if self.causal else self._full(h, keep)
        if keep is not None:
            y = y * keep
        return self._ungroup(y, batch)

    def _full(self, h: Tensor, keep: Tensor | None) -> Tensor:
        """The non-causal solve over all N tokens: K alternating steps (NMF: one code and one dictionary update;
        VQ: assignments, then centroids), then the final codes, which carry the one-step gradient."""
        plain = _plain(self.spec, self.steps)  # alternating steps without gradient; the final code update has it
        d = self._start(h.shape[0], h)
        c = None
        for i in range(self.steps):
            with torch.no_grad() if i < plain else nullcontext():
                hk, dk = self._key_part(h, d)  # the key channels code: (G, N, Dk), (G, Dk, R)
                if self.ham == "nmf":
                    xd = hk @ dk  # (G, N, Dk) @ (G, Dk, R) -> (G, N, R)
                    c = torch.softmax(xd, dim=-1) if c is None else c
                    c = c * xd / (c @ (dk.mT @ dk) + self.eps)
                else:
                    c = _vq_code(hk, dk, self.inv_t)
                if keep is not None:
                    c = c * keep
                a, b = self._stats(h, c)
                d = _nmf_dict(d, a, b, 1, self.eps) if self.ham == "nmf" else _vq_dict(d, a, b, self.eps)
        hk, dk = self._key_part(h, d)
        if self.ham == "nmf":
            assert c is not None  # K >= 1 steps ran
            c = c * (hk @ dk) / (c @ (dk.mT @ dk) + self.eps)
        else:
            c = _vq_code(hk, dk, self.inv_t)
        return c @ d.mT  # (G, N, R) @ (G, R, D) -> (G, N, D)

    def _causal(self, h: Tensor, keep: Tensor | None) -> Tensor:
        """The chunked causal form: chunk j coded against the dictionary of chunks < j."""
        groups, n, _ = h.shape
        d = self._start(groups, h)
        a = b = None
        out = []
        for s in range(0, n, self.chunk):
            xj = h[:, s : s + self.chunk]  # (G, L, D); the last chunk may be shorter
            c = self._code(xj, d)
            if keep is not None:
                c = c * keep[:, s : s + self.chunk]
            y = c @ d.mT  # (G, L, R) @ (G, R, D)
            if self.local == "chunk":
                y = y + self._local(c, c, xj, self._seen(xj.shape[1], 0, h))
            elif self.local == "window":  # the last L − 1 tokens: the previous chunk's tail, coded against this d
                s0 = max(0, s - self.chunk + 1)
                cp = self._code(h[:, s0:s], d)  # (G, s − s0, R)
                if keep is not None:
                    cp = cp * keep[:, s0:s]
                xs, cs = torch.cat([h[:, s0:s], xj], 1), torch.cat([cp, c], 1)  # (G, s − s0 + T, ·)
                y = y + self._local(c, cs, xs, self._seen(xj.shape[1], s - s0, h))
            out.append(y)
            if s + self.chunk < n:  # the next chunk's dictionary
                sa, sb = self._stats(xj, c)
                a, b = self._join(a, b, sa, sb)
                d = self._update(d if self.memory == "dict" else self._start(groups, h), a, b)
        return torch.cat(out, dim=1)

    # -- the delta-rule dictionary (fit="delta"): the state is Dᵀ (G, R, D) ----------------------------------------
    def _beta(self, x: Tensor) -> Tensor:
        """Write strengths β (B*S, T) of tokens x (B, T, C)."""
        assert self.beta_proj is not None  # built with fit="delta"
        beta = torch.sigmoid(self.beta_proj(x))  # (B, T, S)
        return beta.transpose(1, 2).reshape(-1, x.shape[1])  # (B*S, T)

    def _log_decay(self, like: Tensor) -> Tensor | None:
        """log γ per head at every token, shaped as ``like`` (G, T); None without ``decay``."""
        if self.decay_logit is None:
            return None
        log_gamma = F.logsigmoid(self.decay_logit).to(like.dtype).repeat(like.shape[0] // self.heads)  # (S,) -> (G,)
        return log_gamma[:, None].expand_as(like)

    def _coding_dict(self, s: Tensor) -> Tensor:
        """The dictionary (G, D, R) that codes a chunk, from the state Dᵀ (G, R, D) at its start: clipped at zero,
        unit-norm columns."""
        if self.spec.kind == "one-step":  # the paper's gradient: the dictionary is a constant of the backward pass
            s = s.detach()
        d = s.mT.clamp_min(0)
        return d / (d.norm(dim=1, keepdim=True) + self.eps)

    def _unit_code(self, x: Tensor, coding: Tensor) -> Tensor:
        """The delta rule's key or query of tokens x (G, T, ·): their code against ``coding``, unit norm (G, T, R)."""
        return F.normalize(self._code(x, coding), dim=-1)

    def _delta(self, h: Tensor, beta: Tensor, keep: Tensor | None, q: Tensor | None = None) -> Tensor:
        """The causal delta-rule form: chunk by chunk, codes against the chunk's start dictionary, then the chunk's
        writes and reads in one chunkwise solve. h (G, N, D), beta (G, N), keep (G, N, 1) or None, the queries q
        (G, N, keys) or None (a token reads with its own code) -> (G, N, D)."""
        s = self._start(h.shape[0], h).mT[:, None]  # (G, 1, R, D): Dᵀ, the start dictionary
        out = []
        for t0 in range(0, h.shape[1], self.chunk):
            xj, bj = h[:, t0 : t0 + self.chunk], beta[:, t0 : t0 + self.chunk]  # (G, T, D), (G, T)
            coding = self._coding_dict(s[:, 0])  # (G, D, R)
            c = self._code(xj, coding)  # (G, T, R)
            if keep is not None:  # a padded token writes nothing
                c, bj = c * keep[:, t0 : t0 + self.chunk], bj * keep[:, t0 : t0 + self.chunk, 0]
            k = F.normalize(c, dim=-1)[:, None]  # (G, 1, T, R): unit codes are the keys (and, without q, the queries)
            qj = self._unit_code(q[:, t0 : t0 + self.chunk], coding)[:, None] if q is not None else k
            g = self._log_decay(bj)  # (G, T) or None
            if g is not None and keep is not None:  # a padded token does not decay the dictionary either
                g = g * keep[:, t0 : t0 + self.chunk, 0]
            g = g[:, None] if g is not None else None  # (G, 1, T)
            y, s = delta_chunkwise(qj, k, xj[:, None], bj[:, None], g, chunk=self.chunk, state=s)
            out.append(y[:, 0])  # (G, T, D)
        return torch.cat(out, dim=1)

    # -- recurrent form ---------------------------------------------------------------------------------------
    def init_state(self, batch: int, *, device=None, dtype=torch.float32) -> dict:
        """The recurrent state before the first token (causal mixers only). ``memory="stats"``: the prefix statistics
        (A, B) of the completed chunks and the tokens of the pending one (at most L − 1 of them) — the dictionary is
        a function of (A, B), recomputed when a token needs it. ``memory="dict"``: (D, A, B)."""
        if not self.causal:
            raise ValueError("the recurrent form is the causal mixer's (build it with causal=True)")
        groups, dim, rank = batch * self.heads, self.width // self.heads, self.rank
        zeros = dict(device=device or self.start.device, dtype=dtype)
        if self.fit == "delta":  # Dᵀ now and at the pending chunk's start (which codes it)
            s = self.start.to(**zeros).mT.repeat(batch, 1, 1)  # (S, R, D) -> (B*S, R, D)
            return {"s": s, "chunk_start": s, "t": 0}
        second = (groups, rank, rank) if self.ham == "nmf" else (groups, rank)
        state = {"a": torch.zeros(groups, dim, rank, **zeros), "b": torch.zeros(second, **zeros), "t": 0}
        if self.memory == "dict":
            return {"d": self.start.to(**zeros).repeat(batch, 1, 1), **state}  # (S, D, R) -> (B*S, D, R)
        if self.local == "window":  # the last L − 1 tokens (the pending chunk's among them)
            return {**state, "recent": torch.zeros(groups, 0, dim, **zeros)}  # (B*S, min(T, L − 1), D)
        return {**state, "pending": torch.zeros(groups, 0, dim, **zeros)}  # (B*S, T mod L, D)

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        """One token x (B, C) -> (output (B, C), next state); equal to the parallel causal form's output at that
        position."""
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"HamMixer.step expects one token per sequence, (B, {self.dim}); got {tuple(x.shape)}")
        h = self._groups(x[:, None])  # (B*S, 1, D)
        if self.fit == "delta":
            coding = self._coding_dict(state["chunk_start"])
            k = self._unit_code(h, coding)  # (G, 1, R)
            q = k if self.query_proj is None else self._unit_code(self._groups(x[:, None], self.query_proj), coding)
            beta = self._beta(x[:, None])  # (G, 1)
            y, s = delta_step(q, k, h, beta, self._log_decay(beta), state["s"][:, None])
            t = state["t"] + 1
            start = s[:, 0] if t % self.chunk == 0 else state["chunk_start"]  # a complete chunk: the next one's
            return self._ungroup(y, x.shape[0])[:, 0], {"s": s[:, 0], "chunk_start": start, "t": t}
        if self.memory == "dict":
            d = state["d"]
        elif state["t"] < self.chunk:  # no completed chunk yet: the start
            d = self._start(h.shape[0], h)
        else:  # the dictionary of the completed chunks, rebuilt from their statistics
            d = self._update(self._start(h.shape[0], h), state["a"], state["b"])
        c = self._code(h, d)  # (B*S, 1, R)
        y = c @ d.mT  # (B*S, 1, D)
        if self.local:  # the tokens it sees, coded against the same d as the parallel form codes them
            near = state["recent"] if self.local == "window" else state["pending"]
            if near.shape[1]:
                y = y + self._local(c, self._code(near, d), near, None)
        state = {**state, "t": state["t"] + 1}
        if self.memory == "dict":  # the token's statistics join (A, B) at once: D, not (A, B), codes its chunk's rest
            sa, sb = self._stats(h, c)
            state["a"], state["b"] = state["a"] + sa, state["b"] + sb
            if state["t"] % self.chunk == 0:  # a chunk is complete: D moves
                state["d"] = self._update(state["d"], state["a"], state["b"])
        elif self.local == "window":  # the last L − 1 tokens kept; a complete chunk is the last L with this one
            recent = torch.cat([state["recent"], h], 1)  # (B*S, ≤ L, D)
            if state["t"] % self.chunk == 0:
                sa, sb = self._stats(recent[:, -self.chunk :], self._code(recent[:, -self.chunk :], d))
                state["a"], state["b"] = self._join(state["a"], state["b"], sa, sb)
            state["recent"] = recent[:, recent.shape[1] - min(recent.shape[1], self.chunk - 1) :]
        else:  # the token waits in the pending chunk; a complete chunk's statistics join (A, B) as in the parallel form
            pending = torch.cat([state["pending"], h], 1)  # (B*S, T mod L, D)
            if state["t"] % self.chunk == 0:
                sa, sb = self._stats(pending, self._code(pending, d))
                state["a"], state["b"] = self._join(state["a"], state["b"], sa, sb)  # γ·0 before the first chunk
                pending = pending[:, :0]
            state["pending"] = pending
        return self._ungroup(y, x.shape[0])[:, 0], state

    def extra_repr(self) -> str:
        causal = f"causal, chunk={self.chunk}, norm={self.norm!r}, memory={self.memory!r}"
        causal += f", fit='ridge', ridge={self.ridge}" if self.fit == "ridge" else ""
        causal += ", fit='delta'" if self.fit == "delta" else ""
        causal += ", query" if self.query_proj is not None else ""
        causal += f", local={self.local!r}" if self.local else ""
        causal += f", decay={self.decay}" if self.decay is not None else ""
        form = causal if self.causal else "non-causal"
        width = f", width={self.width}" if self.width != self.dim else ""
        width += f", keys={self.keys}" if self.keys != self.width // self.heads else ""
        return f"{self.dim}{width}, ham={self.ham!r}, rank={self.rank}, steps={self.steps}, heads={self.heads}, {form}"
