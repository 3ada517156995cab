"""The ham modules NMF, VQ and CD: reshaping, groups, bases initialisation, steps, precision, input checks.

A ham maps (B, C, *spatial) to the same shape: the C channels split into S groups of D = C/S, each group's
D x N matrix (N = the product of the spatial sizes) is replaced by its rank-R reconstruction DC.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional as HF

__all__ = ["NMF", "VQ", "CD", "INITS"]

INITS = ("random", "online")


def _exporting() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


class _Ham(nn.Module):
    """Shared machinery of the three hams; subclasses set ``_solver`` and ``_uniform`` and the solver kwargs."""

    _uniform: bool  # NMF draws bases from U[0, 1), VQ/CD from N(0, 1)
    _nonneg: bool = False

    def __init__(
        self,
        channels: int,
        *,
        rank: int = 64,
        groups: int = 1,
        train_steps: int = 6,
        eval_steps: int = 7,
        grad: str = "one-step",
        init: str = "random",
        spatial: bool = True,
        channels_last: bool = False,
        eta: float = 0.9,
        eps: float = 1e-6,
        seed: int = 0,
        generator: torch.Generator | None = None,
        check_input: bool = True,
    ) -> None:
        super().__init__()
        for name, value, low in (("channels", channels, 1), ("rank", rank, 1), ("groups", groups, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("train_steps", train_steps), ("eval_steps", eval_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} (K) must be an integer >= 0, got {value!r}")
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups S ({groups})")
        if grad not in HF.GRAD_MODES:
            raise ValueError(f"grad must be one of {HF.GRAD_MODES}, got {grad!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if init == "online" and not spatial:
            raise ValueError(
                "init='online' needs spatial=True: with spatial=False the bases live along N, whose size depends on "
                "the input, so no fixed bases buffer can be kept"
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        self.channels = channels
        self.rank = rank
        self.groups = groups
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.grad = grad
        self.init = init
        self.spatial = spatial
        self.channels_last = channels_last
        self.eta = eta
        self.eps = eps
        self.seed = seed
        self.generator = generator
        self.check_input = check_input
        dim = channels // groups
        if spatial:
            # the fixed eval start (random init) or the online bases: one draw shared by every sample
            self.register_buffer("eval_bases", self._draw_fixed(dim), persistent=False)
            if init == "online":
                self.register_buffer("bases", self._draw_fixed(dim))
        self._fixed_cache: dict = {}  # spatial=False: eval starts per (N, device)

    # -- bases -------------------------------------------------------------------------------------------------
    def _draw_fixed(self, dim: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return self._normalised_draw((self.groups, dim, self.rank), torch.device("cpu"), gen)

    def _normalised_draw(self, shape, device, generator) -> Tensor:
        draw = torch.rand if self._uniform else torch.randn
        return F.normalize(draw(shape, generator=generator, device=device, dtype=torch.float32), dim=1)

    def _apply(self, fn, recurse=True):
        # keep the bases in float32 whatever .half()/.to(dtype) does to the module: they are the solver's start
        super()._apply(fn, recurse)
        for name in ("eval_bases", "bases"):
            buf = self._buffers.get(name)
            if buf is not None and buf.dtype != torch.float32:
                if name == "eval_bases":
                    self._buffers[name] = self._draw_fixed(buf.shape[1]).to(buf.device)
                else:
                    self._buffers[name] = buf.float()
        self._fixed_cache = {}
        return self

    def _start(self, batch: int, dim: int, device: torch.device) -> Tensor:
        """Starting bases (B*S, D, R) in float32."""
        if self.init == "online":
            return self.bases.repeat(batch, 1, 1)
        if self.training:
            gen = self.generator
            dev = gen.device if gen is not None else device
            start = self._normalised_draw((batch * self.groups, dim, self.rank), dev, gen)
            return start.to(device)
        if self.spatial:
            fixed = self.eval_bases
        else:
            key = (dim, str(device))
            if key not in self._fixed_cache:
                self._fixed_cache[key] = self._draw_fixed(dim).to(device)
            fixed = self._fixed_cache[key]
        return fixed.to(device).repeat(batch, 1, 1)  # (S, D, R) -> (B*S, D, R), the same start for every sample

    @torch.no_grad()
    def _online_update(self, final_bases: Tensor, batch: int) -> None:
        mean = final_bases.reshape(batch, self.groups, *final_bases.shape[1:]).float().mean(dim=0)  # (S, D, R)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        self.bases.add_(mean - self.bases, alpha=self.eta)
        self.bases.copy_(F.normalize(self.bases, dim=1))

    # -- forward -----------------------------------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a tensor, got {type(x).__name__}")
        if x.ndim < 3:
            layout = "(B, *spatial, C)" if self.channels_last else "(B, C, *spatial)"
            raise ValueError(
                f"{type(self).__name__} expects input {layout} with at least one spatial dim, "
                f"got shape {tuple(x.shape)}"
            )
        c = x.shape[-1] if self.channels_last else x.shape[1]
        if c != self.channels:
            raise ValueError(f"{type(self).__name__} was built for {self.channels} channels, input has {c}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}")
        if self.check_input and not _exporting():
            low, high = torch.aminmax(x)  # one pass; NaN propagates into both
            if not bool(torch.isfinite(low) & torch.isfinite(high)):
                raise ValueError(
                    f"{type(self).__name__} got non-finite input (NaN or inf); check the layers before it "
                    "(pass check_input=False to skip this check)"
                )
            if self._nonneg and low.item() < 0:
                raise ValueError(
                    f"NMF needs non-negative input, got a minimum of {low.item():.4g}; put a ReLU before it "
                    "(the Hamburger block's lower bread does)"
                )

    def _decompose(self, x: Tensor, bases: Tensor, steps: int, reconstruct: bool) -> HF.Decomposition:
        raise NotImplementedError

    def decompose(self, x: Tensor, *, reconstruct: bool = True) -> HF.Decomposition:
        """Check and flatten x, pick the start bases and K, decompose, update online bases.

        Returns the :class:`~hamburger.functional.Decomposition` of the flattened groups: (B*S, D, N) matrices
        (N x D with ``spatial=False``), float32 bases and codes. ``forward`` reshapes its ``recon``.
        """
        self._check(x)
        if self.channels_last:
            x = x.movedim(-1, 1)  # (B, *spatial, C) -> (B, C, *spatial)
        batch, dim = x.shape[0], self.channels // self.groups
        x = x.reshape(batch * self.groups, dim, -1)  # (B, C, *spatial) -> (B*S, D, N)
        if not self.spatial:
            x = x.mT  # (B*S, N, D): decompose the channel axis instead
        steps = self.train_steps if self.training else self.eval_steps
        bases = self._start(batch, x.shape[1], x.device)
        out = self._decompose(x, bases, steps, reconstruct)
        if self.training and self.init == "online":
            self._online_update(out.bases, batch)
        return out

    def forward(self, x: Tensor) -> Tensor:
        recon = self.decompose(x).recon
        if not self.spatial:
            recon = recon.mT  # (B*S, N, D) -> (B*S, D, N)
        if self.channels_last:
            shape = (x.shape[0], x.shape[-1], *x.shape[1:-1])
            return recon.reshape(shape).movedim(1, -1)  # (B*S, D, N) -> (B, *spatial, C)
        return recon.reshape(x.shape)  # (B*S, D, N) -> (B, C, *spatial)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, rank={self.rank}, groups={self.groups}, train_steps={self.train_steps}, "
            f"eval_steps={self.eval_steps}, grad={self.grad!r}, init={self.init!r}, spatial={self.spatial}"
        )


_HAM_ARGS = """
    Args:
        channels: C, input channels.
        rank: R, number of bases.
        groups: S, the channels split into S contiguous groups of D = C/S, decomposed separately.
        train_steps: K in training.
        eval_steps: K in evaluation.
        grad: ``"one-step"`` (the paper's), ``"bptt"`` or ``"none"``; see :mod:`hamburger.functional`.
        init: ``"random"``: fresh bases every training forward, and in eval one fixed seeded draw shared by every
            sample (outputs are deterministic). ``"online"``: a bases buffer (S, D, R), the start in training and
            eval, moved towards the batch-mean final bases after each training forward (all-reduced across
            processes).
        spatial: True decomposes the D x N matrix; False the N x D one (the paper's channel variant).
        channels_last: input is (B, *spatial, C), e.g. transformer tokens (B, N, C).
        eta: η, momentum of the online bases update.
        eps: ε of the solver.
        seed: seed of the fixed eval start (and of the online buffer's first draw).
        generator: optional ``torch.Generator`` for the training draws.
        check_input: raise ``ValueError`` on non-finite input (and negative input for NMF); skipped under
            ``torch.compile`` and export.
"""


class NMF(_Ham):
    """Non-negative matrix factorisation ham (multiplicative updates). The paper's best ham."""

    __doc__ += _HAM_ARGS
    _uniform = True
    _nonneg = True

    def __init__(self, channels: int, **kwargs) -> None:
        if "inv_t" in kwargs or "beta" in kwargs:
            bad = "inv_t" if "inv_t" in kwargs else "beta"
            raise TypeError(
                f"NMF takes no {bad!r}: its start uses temperature 1 and it has no ridge term "
                "(the official code silently ignores it; use VQ or CD for these)"
            )
        super().__init__(channels, **kwargs)

    def _decompose(self, x, bases, steps, reconstruct):
        return HF.nmf(x, bases, steps, grad=self.grad, eps=self.eps, reconstruct=reconstruct)


class VQ(_Ham):
    """Soft vector-quantisation ham (cosine soft k-means).

    Extra args: ``inv_t`` inverse temperature of the soft assignment (100).
    """

    __doc__ += _HAM_ARGS
    _uniform = False

    def __init__(self, channels: int, *, inv_t: float = 100.0, **kwargs) -> None:
        super().__init__(channels, **kwargs)
        self.inv_t = float(inv_t)

    def _decompose(self, x, bases, steps, reconstruct):
        return HF.vq(x, bases, steps, inv_t=self.inv_t, grad=self.grad, eps=self.eps, reconstruct=reconstruct)


class CD(_Ham):
    """Concept-decomposition ham (spherical soft k-means bases, ridge-regression codes).

    Extra args: ``inv_t`` (100), ``beta`` β ridge weight (0.1), ``solver_steps`` Newton-Schulz iterations of the
    exportable R x R inverse (default: enough for unit-norm bases).
    """

    __doc__ += _HAM_ARGS
    _uniform = False

    def __init__(
        self, channels: int, *, inv_t: float = 100.0, beta: float = 0.1, solver_steps: int | None = None, **kwargs
    ) -> None:
        super().__init__(channels, **kwargs)
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.inv_t = float(inv_t)
        self.beta = float(beta)
        self.solver_steps = solver_steps if solver_steps is not None else HF.default_solver_steps(self.rank, beta)

    def _decompose(self, x, bases, steps, reconstruct):
        return HF.cd(
            x,
            bases,
            steps,
            inv_t=self.inv_t,
            beta=self.beta,
            grad=self.grad,
            eps=self.eps,
            solver_steps=self.solver_steps,
            reconstruct=reconstruct,
        )
