"""The ham modules NMF, VQ and CD: reshaping, groups, bases initialisation, steps, precision, input checks.

A ham maps (B, C, *spatial) to the same shape: the C channels split into S groups of D = C/S, each group's
D x N matrix (N = the product of the spatial sizes) is replaced by its rank-R reconstruction DC.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional as HF

__all__ = ["NMF", "VQ", "CD", "INITS", "CHECK_MODES"]

INITS = ("random", "online", "fixed")
CHECK_MODES = (True, False, "sync", "async")


def _exporting() -> bool:
    """True while a graph is exported (ONNX, torch.export, jit trace): no data-dependent checks, no bf16 products."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


# ----------------------------------------------------------------------------------------------------------------
# counter-based draws: the same numbers on every device, from tensor ops only (traceable, capturable in a CUDA graph)

_MASK32 = 0xFFFFFFFF


def _mix32(h: Tensor) -> Tensor:
    """An integer hash of int64 values in [0, 2³²) to [0, 2³²) (xor-shift-multiply rounds; the multipliers are
    below 2³¹, so no int64 product overflows)."""
    for mult in (0x7FEB352D, 0x2C1B3C6D, 0x297A2D39):
        h = h ^ (h >> 16)
        h = (h * mult) & _MASK32
    return h ^ (h >> 16)


def counter_draw(shape: tuple[int, ...], state: Tensor, *, uniform: bool) -> Tensor:
    """Float32 draws of ``shape`` on ``state``'s device from the stream ``state`` = (seed, counter), int64.

    U[0, 1) with 24 random bits per number, or N(0, 1) by Box-Muller. The draw is a pure function of (seed, counter,
    index): no generator object, so it compiles without graph breaks and replays inside a CUDA graph.
    """
    numel = 1
    for size in shape:
        numel *= size
    count = numel if uniform else 2 * numel
    idx = torch.arange(count, device=state.device, dtype=torch.int64)
    key = _mix32(_mix32(state[0] & _MASK32) ^ (state[1] & _MASK32))  # () one key per (seed, counter)
    bits = _mix32((idx & _MASK32) ^ key) >> 8  # (count,) 24 random bits each
    u = bits.to(torch.float32) * 2.0**-24  # [0, 1)
    if uniform:
        return u.reshape(shape)
    u1, u2 = u[:numel], u[numel:]
    normal = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * torch.pi * u2)  # 1 - u1 in (0, 1]
    return normal.reshape(shape)


def _seeded_draw(shape: tuple[int, ...], seed: int, uniform: bool) -> Tensor:
    """The fixed, seeded CPU draw of an eval start."""
    gen = torch.Generator().manual_seed(seed)
    draw = torch.rand if uniform else torch.randn
    return F.normalize(draw(shape, generator=gen, dtype=torch.float32), dim=1)


class Ham(nn.Module):
    """Shared machinery of the three hams; subclasses set ``_solver`` and ``_uniform`` and the solver kwargs."""

    _uniform: bool  # NMF draws bases from U[0, 1), VQ/CD from N(0, 1)
    draw_state: Tensor  # buffers (registered in __init__), typed for the checker
    eval_bases: Tensor
    bases: Tensor
    has_implicit_gradient: bool = True  # grad="implicit": the codes solve a well-posed problem given the bases
    check_nonnegative: bool = False  # NMF: refuse negative input (a block whose own ReLU guarantees it turns this off)

    def __init__(
        self,
        channels: int,
        *,
        rank: int = 64,
        groups: int = 1,
        train_steps: int = 6,
        eval_steps: int = 7,
        grad: str = HF.DEFAULT_GRAD,
        init: str = "random",
        spatial: bool = True,
        channels_last: bool = False,
        eta: float = 0.9,
        eps: float = 1e-6,
        seed: int = 0,
        generator: torch.Generator | None = None,
        check_input: bool | str = True,
        precision: str = "fp32",
        fused: bool | None = None,
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
        self.grad = grad  # parsed once (a ValueError naming the spellings), kept as a GradSpec
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if init == "online" and not spatial:
            raise ValueError(
                "init='online' needs spatial=True: with spatial=False the bases live along N, whose size depends on "
                "the input, so no fixed bases buffer can be kept"
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        if check_input not in CHECK_MODES or isinstance(check_input, int) and not isinstance(check_input, bool):
            raise ValueError(f"check_input must be one of {CHECK_MODES}, got {check_input!r}")
        if precision not in HF.PRECISIONS:
            raise ValueError(f"precision must be one of {HF.PRECISIONS}, got {precision!r}")
        if fused is not None and not isinstance(fused, bool):
            raise ValueError(f"fused must be None (auto), True or False, got {fused!r}")
        self.channels = channels
        self.rank = rank
        self.groups = groups
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.init = init
        self.spatial = spatial
        self.channels_last = channels_last
        self.eta = eta
        self.eps = eps
        self.seed = seed
        self.check_input = check_input
        self.precision = precision
        self.fused = fused
        # (seed, counter) of the training draws when a generator is given; moves with the module, not saved
        self.register_buffer("draw_state", torch.zeros(2, dtype=torch.int64), persistent=False)
        self.generator = generator
        dim = channels // groups
        # spatial=False draws its eval start per N, inside forward: marked as a constant for the compiler (the
        # marking imports torch._dynamo, so only these modules pay for it)
        self._seeded_draw = _seeded_draw if spatial else torch.compiler.assume_constant_result(_seeded_draw)
        if spatial:
            # the fixed eval start (random init) or the online bases: one draw shared by every sample
            self.register_buffer("eval_bases", self._draw_fixed(dim), persistent=False)
            if init == "online":
                self.register_buffer("bases", self._draw_fixed(dim))

    # -- bases -------------------------------------------------------------------------------------------------
    @property
    def generator(self) -> torch.Generator | None:
        """Seeds the training draws: setting it takes one number from it as the seed of a counter-based stream on
        the module's device (restarted at each assignment), so seeded training compiles and captures."""
        return self._generator

    @generator.setter
    def generator(self, gen: torch.Generator | None) -> None:
        if gen is not None and not isinstance(gen, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(gen).__name__}")
        self._generator = gen
        if gen is not None:
            seed = int(torch.randint(0, 2**62, (), generator=gen, device=gen.device))
            self.draw_state.copy_(torch.tensor([seed, 0], dtype=torch.int64))

    @property
    def grad(self) -> str:
        """The gradient through the solve, as spelled on the command line (``str`` of its :class:`GradSpec`)."""
        return str(self._grad)

    @grad.setter
    def grad(self, grad: str | HF.GradSpec) -> None:
        spec = HF.parse_grad(grad)  # a ValueError naming the spellings
        if spec.kind == "implicit" and not self.has_implicit_gradient:
            raise ValueError(
                f"{type(self).__name__} has no implicit gradient: its codes solve no well-posed problem "
                "given the bases (NMF and CD do)"
            )
        self._grad = spec

    def _draw_fixed(self, dim: int) -> Tensor:
        return self._seeded_draw((self.groups, dim, self.rank), self.seed, self._uniform)

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
        return self

    def _start(self, batch: int, dim: int, device: torch.device) -> Tensor:
        """Starting bases (B*S, D, R) in float32."""
        if self.init == "online":
            return self.bases.repeat(batch, 1, 1)
        if self.training and self.init == "random":
            shape = (batch * self.groups, dim, self.rank)
            if self._generator is None:  # the global RNG of the input's device
                draw = torch.rand if self._uniform else torch.randn
                start = draw(shape, device=device, dtype=torch.float32)
            else:
                state = self.draw_state
                start = counter_draw(shape, state, uniform=self._uniform).to(device)
                state[1] += 1
            return F.normalize(start, dim=1)
        # eval (and "fixed" in training): one seeded draw; spatial=False has one per N (a compile-time constant)
        fixed = self.eval_bases if self.spatial else self._draw_fixed(dim)
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
        if x.numel() == 0:
            raise ValueError(f"{type(self).__name__} got an empty tensor of shape {tuple(x.shape)}")
        mode = self.check_input
        if mode is False or _exporting():
            return
        if mode is True:  # synchronous where it costs nothing (CPU, eager); a device assert elsewhere
            mode = "sync" if x.device.type == "cpu" and not torch.compiler.is_compiling() else "async"
        name = type(self).__name__
        finite_msg = (
            f"{name} got non-finite input (NaN or inf); check the layers before it (pass check_input=False to skip "
            "this check)"
        )
        low, high = torch.aminmax(x)  # one pass; NaN propagates into both
        limit = self.magnitude_limit(x)
        # traced (torch.compile, dynamic shapes) the bound can be symbolic: name the formula instead of its value
        bound = "sqrt(max float32 / (16 D N))" if torch.compiler.is_compiling() else f"{limit:.3g}"
        range_msg = (
            f"{name} input magnitude exceeds {bound}, above which its float32 solve can overflow (NaN or zeros "
            "out); rescale the input, e.g. with a norm layer before the ham"
        )
        if mode == "async":  # no host synchronisation: the device raises at the next sync (CUDA: a device assert)
            torch._assert_async(torch.isfinite(low) & torch.isfinite(high), finite_msg)
            torch._assert_async((high <= limit) & (low >= -limit), range_msg)
            if self.check_nonnegative:
                torch._assert_async(low >= 0, f"{name}: NMF needs non-negative input; put a ReLU before it")
            return
        if not bool(torch.isfinite(low) & torch.isfinite(high)):
            raise ValueError(finite_msg)
        if not bool((high <= limit) & (low >= -limit)):
            raise ValueError(f"{range_msg} (got values in [{low.item():.3g}, {high.item():.3g}])")
        if self.check_nonnegative and low.item() < 0:
            raise ValueError(
                f"NMF needs non-negative input, got a minimum of {low.item():.4g}; put a ReLU before it "
                "(the Hamburger block's lower bread does)"
            )

    def magnitude_limit(self, x: Tensor) -> float:
        """The largest input magnitude the float32 solve is safe with: sqrt(max float32 / (16 D N)).

        The solvers' largest intermediates (Gram matrices of codes and bases, squared norms) are sums of D·N
        products of two entries, so they stay finite, with a 16x margin, below this bound. Checked with the input.
        """
        dim = self.channels // self.groups
        n = x.numel() // (x.shape[0] * self.channels)
        return (torch.finfo(torch.float32).max / (16.0 * dim * max(n, 1))) ** 0.5

    def effective_precision(self) -> str:
        """The products' precision for this call: ``precision``, except fp32 while exporting a bf16 ham (ONNX
        Runtime's CPU provider has no bf16 MatMul), with a warning."""
        if self.precision == "bf16" and _exporting():
            warnings.warn(
                f"{type(self).__name__}(precision='bf16') is exported with float32 products: ONNX Runtime's CPU "
                "provider has no bfloat16 MatMul",
                stacklevel=3,
            )
            return "fp32"
        return self.precision

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
        assert recon is not None  # decompose reconstructs unless told not to
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
            + (f", precision={self.precision!r}" if self.precision != "fp32" else "")
        )


_HAM_ARGS = """
    Args:
        channels: C, input channels.
        rank: R, number of bases.
        groups: S, the channels split into S contiguous groups of D = C/S, decomposed separately.
        train_steps: K in training.
        eval_steps: K in evaluation.
        grad: ``"one-step"`` (the paper's), ``"bptt"``, ``"none"``, ``"implicit"``, ``"implicit:k"`` (NMF and CD),
            ``"truncated:k"`` (the default, ``"truncated:2"``) or ``"phantom:k:λ"`` (λ < 1 damps the last k steps in
            evaluation too); see docs/solve.md.
        init: ``"random"``: fresh bases every training forward, and in eval one fixed seeded draw shared by every
            sample (outputs are deterministic). ``"online"``: a bases buffer (S, D, R), the start in training and
            eval, moved towards the batch-mean final bases after each training forward (all-reduced across
            processes). ``"fixed"``: the eval start in training too (one seeded draw, never updated), so training
            and evaluation solve from the same bases.
        spatial: True decomposes the D x N matrix; False the N x D one (the paper's channel variant).
        channels_last: input is (B, *spatial, C), e.g. transformer tokens (B, N, C). The last axis is always read
            as C: a (B, C, N) tensor with C == N cannot be told apart from (B, N, C) and is decomposed along the
            wrong axis without an error, so pass such input with channels_last=False.
        eta: η, momentum of the online bases update.
        eps: ε of the solver.
        seed: seed of the fixed eval start (and of the online buffer's first draw).
        generator: optional ``torch.Generator`` that seeds the training draws (see :attr:`generator`); without
            one they come from the global RNG of the input's device.
        check_input: checks for non-finite input (and negative input for NMF). ``True`` (default): a
            ``ValueError`` on CPU in eager mode; on accelerators and under ``torch.compile`` an asynchronous device
            assert (``torch._assert_async``: no host synchronisation; on CUDA a failure surfaces at the next
            synchronisation as a device-side assert). ``"sync"``: always the ``ValueError`` (reads one value back
            to the host per forward). ``"async"``: always the device assert. ``False``: no check. Skipped while
            exporting.
        precision: ``"fp32"`` (default, exact), ``"bf16"`` or ``"tf32"``: precision of the large products (X and
            the reconstruction), see :mod:`hamburger.functional`. A bf16 ham exports to ONNX with fp32 products.
        fused: NMF only: its steps without autograd in fused Triton kernels (:mod:`hamburger.kernels`). None
            (default): on CUDA when Triton is there, outside ``torch.compile``; False: never. Gradients unchanged.
"""


class NMF(Ham):
    """Non-negative matrix factorisation ham (multiplicative updates). The paper's best ham."""

    __doc__ += _HAM_ARGS
    _uniform = True
    check_nonnegative = True

    def __init__(self, channels: int, **kwargs) -> None:
        if "inv_t" in kwargs or "beta" in kwargs:
            bad = "inv_t" if "inv_t" in kwargs else "beta"
            raise TypeError(
                f"NMF takes no {bad!r}: its start uses temperature 1 and it has no ridge term "
                "(the official code silently ignores it; use VQ or CD for these)"
            )
        super().__init__(channels, **kwargs)

    def _decompose(self, x, bases, steps, reconstruct):
        return HF.nmf(
            x,
            bases,
            steps,
            grad=self._grad,
            eps=self.eps,
            reconstruct=reconstruct,
            precision=self.effective_precision(),
            fused=self.fused,
        )


class VQ(Ham):
    """Soft vector-quantisation ham (cosine soft k-means).

    Extra args: ``inv_t`` inverse temperature of the soft assignment (100).
    """

    __doc__ += _HAM_ARGS
    _uniform = False
    has_implicit_gradient = False

    def __init__(self, channels: int, *, inv_t: float = 100.0, **kwargs) -> None:
        super().__init__(channels, **kwargs)
        self.inv_t = float(inv_t)

    def _decompose(self, x, bases, steps, reconstruct):
        return HF.vq(
            x,
            bases,
            steps,
            inv_t=self.inv_t,
            grad=self._grad,
            eps=self.eps,
            reconstruct=reconstruct,
            precision=self.effective_precision(),
        )


class CD(Ham):
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
            grad=self._grad,
            eps=self.eps,
            solver_steps=self.solver_steps,
            reconstruct=reconstruct,
            precision=self.effective_precision(),
        )
