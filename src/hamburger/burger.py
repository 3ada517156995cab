"""The Hamburger block: lower bread (1x1 conv) -> ham (matrix decomposition) -> upper bread (1x1 conv), residual.

H(Z) = W_u M(W_l Z),  Y = ReLU(Z + norm(H(Z)))   (Geng et al., ICLR 2021, eq. 1-2; version "v1").

The breads are 1x1 convolutions applied to the flattened (B, C, N) view, so one block (and one checkpoint) serves
1D sequences, 2D images and 3D volumes alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import product
from .ham import CD, NMF, VQ

__all__ = ["Hamburger", "convert_2d_checkpoint", "HAMS", "VERSIONS", "make_norm"]

HAMS = {"nmf": NMF, "vq": VQ, "cd": CD}
VERSIONS = ("v1", "v2", "v2+")
BREADS = ("both", "lower", "upper", "none")
NormLayer = str | Callable[[int], nn.Module]


def make_norm(norm_layer: NormLayer, channels: int) -> nn.Module:
    """``"batch"`` (BatchNorm), ``"group"`` (GroupNorm, 32 groups or fewer), ``"syncbatch"``, or a callable."""
    if callable(norm_layer):
        return norm_layer(channels)
    if norm_layer == "batch":
        return nn.BatchNorm1d(channels)
    if norm_layer == "syncbatch":
        return nn.SyncBatchNorm(channels)
    if norm_layer == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"norm_layer must be 'batch', 'group', 'syncbatch' or a callable, got {norm_layer!r}")


class _ConvNormAct(nn.Module):
    """1x1 conv (no bias) -> norm -> ReLU on (B, C, N): the v2 'cheese'."""

    def __init__(self, in_channels: int, out_channels: int, *, norm_layer: NormLayer) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.norm = make_norm(norm_layer, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class Hamburger(nn.Module):
    """Hamburger block of Geng et al. (ICLR 2021) for (B, C, *spatial) input of any number of spatial dims.

    Args:
        channels: C, input and output channels.
        ham: ``"nmf"`` (default, the paper's best), ``"vq"`` or ``"cd"``.
        version: ``"v1"`` (the paper): lower bread 1x1 conv (+ReLU for NMF) -> ham -> upper bread 1x1 conv + norm
            -> ReLU(x + ·). ``"v2"``: a 1x1 conv-norm-ReLU ("cheese") after the ham and no norm after the upper
            bread. ``"v2+"``: v2 with learnable scalars on the shortcut (init 1) and the ham branch (init 0).
        ham_channels: channels inside the block (D·S); default ``channels``.
        norm_layer: ``"batch"`` | ``"group"`` | ``"syncbatch"`` | callable(num_channels) -> module.
        breads: which breads the block keeps: ``"both"`` (the paper's block), ``"lower"``, ``"upper"`` or ``"none"``
            (the paper's bread ablation; a missing bread is the identity, so ``ham_channels`` must equal C).
        **ham_kwargs: passed to the ham (``rank`` R, ``groups`` S, ``train_steps``, ``eval_steps``, ``grad``,
            ``init``, ``inv_t``, ``beta``, ``precision``, ``check_input``, ...); see :class:`hamburger.NMF`.
            ``precision="bf16"`` also runs the folded upper-bread product in bf16 (the residual stays exact).

    Example::

        block = Hamburger(512, ham="nmf", rank=64)
        y = block(torch.randn(2, 512, 32, 32))  # same shape
    """

    def __init__(
        self,
        channels: int,
        *,
        ham: str = "nmf",
        version: str = "v1",
        ham_channels: int | None = None,
        norm_layer: NormLayer = "batch",
        breads: str = "both",
        **ham_kwargs,
    ) -> None:
        super().__init__()
        if breads not in BREADS:
            raise ValueError(f"breads must be one of {BREADS}, got {breads!r}")
        if ham not in HAMS:
            raise ValueError(f"ham must be one of {tuple(HAMS)}, got {ham!r}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be an integer >= 1, got {channels!r}")
        if "channels_last" in ham_kwargs:
            raise TypeError("Hamburger takes (B, C, *spatial) input; channels_last is an option of the hams only")
        ham_channels = channels if ham_channels is None else ham_channels
        if breads != "both" and ham_channels != channels:
            raise ValueError(f"breads={breads!r} needs ham_channels == channels ({channels}), got {ham_channels}")
        self.breads = breads
        self.channels = channels
        self.ham_type = ham
        self.version = version
        keep_lower, keep_upper = breads in ("both", "lower"), breads in ("both", "upper")
        self.lower_bread = nn.Conv1d(channels, ham_channels, 1, bias=True) if keep_lower else nn.Identity()
        # the block's own ReLU keeps NMF's input non-negative, so the ham need not check it
        self.ham = HAMS[ham](ham_channels, **ham_kwargs)
        self.ham.check_nonnegative = False
        upper = nn.Conv1d(ham_channels, channels, 1, bias=False) if keep_upper else None
        if version == "v1":
            self.upper_bread = upper
            self.norm = make_norm(norm_layer, channels)
        else:
            self.cheese = _ConvNormAct(ham_channels, ham_channels, norm_layer=norm_layer)
            self.upper_bread = upper
        if version == "v2+":
            self.coef_shortcut = nn.Parameter(torch.ones(1))
            self.coef_ham = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan-out) conv weights, zero conv biases, norm weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"Hamburger expects (B, C, *spatial) with at least one spatial dim, got {got}")
        if x.shape[1] != self.channels:
            raise ValueError(f"Hamburger was built for {self.channels} channels, input has {x.shape[1]}")
        if not x.is_floating_point():
            raise TypeError(f"Hamburger expects a floating-point input, got {x.dtype}")
        if x.numel() == 0:
            raise ValueError(f"Hamburger got an empty tensor of shape {tuple(x.shape)}")
        if x.device.type == "meta":  # shape inference: the weights must be meta tensors too
            where = {str(p.device) for p in self.parameters() if p.device.type != "meta"}
            if where:
                raise ValueError(
                    f"Hamburger got a meta-device input but its weights are on {', '.join(sorted(where))}: build it "
                    "under torch.device('meta') or call .to('meta') to infer shapes"
                )
        shape = x.shape
        # a replaced ham (the segmentation heads' local control is an identity) has no precision of its own
        precision = self.ham.effective_precision() if hasattr(self.ham, "effective_precision") else "fp32"
        z = x.reshape(shape[0], shape[1], -1)  # (B, C, *spatial) -> (B, C, N)
        h = self.lower_bread(z)  # (B, D*S, N)
        if self.ham_type == "nmf":
            # in place after the conv (its backward does not need its output), never on the input itself
            h = F.relu(h, inplace=self.breads in ("both", "lower"))
        if self.version == "v1":
            folded = None if self.upper_bread is None else self._fold(h, self.upper_bread.weight)
            if folded is None:
                h = self.ham(h)
                h = self.norm(h if self.upper_bread is None else self.upper_bread(h))
            elif self._frozen_batchnorm():
                # eval: BN is affine, so it folds into the bases too, and its shift becomes one more rank-1 term;
                # the residual is the GEMM's accumulator. One pass writes ReLU(z + BN(W·DC)).
                wd, codes = folded
                norm = cast(nn.modules.batchnorm._BatchNorm, self.norm)  # _frozen_batchnorm checked its statistics
                assert norm.running_var is not None and norm.running_mean is not None
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (C,)
                shift = norm.bias - norm.running_mean * scale
                wd = torch.cat([wd * scale[:, None].to(wd.dtype), shift[None, :, None].expand(wd.shape[0], -1, 1)], 2)
                ones = codes.new_ones(codes.shape[0], 1, codes.shape[2])
                codes = torch.cat([codes, ones], 1)  # (B, S*R+1, N)
                if precision == "bf16":  # bf16 operands, but the residual is added in full precision
                    out = z + product(wd, codes, precision=precision).to(z.dtype)  # (B, C, S*R+1) @ (.., N)
                else:
                    out = torch.baddbmm(z.to(wd.dtype), wd, codes)  # (B, C, S*R+1) @ (B, S*R+1, N)
                return F.relu(out.to(z.dtype), inplace=True).reshape(shape)
            else:
                h = self.norm(product(*folded, precision=precision).to(z.dtype))  # (B, C, S*R) @ (B, S*R, N)
            out = z + h
        else:
            folded = self._fold(h, self.cheese.conv.weight)
            h = self.cheese.conv(self.ham(h)) if folded is None else product(*folded, precision=precision).to(z.dtype)
            h = F.relu(self.cheese.norm(h))
            h = h if self.upper_bread is None else self.upper_bread(h)
            out = z + h if self.version == "v2" else self.coef_shortcut * z + self.coef_ham * h
        return F.relu(out).reshape(shape)

    def _frozen_batchnorm(self) -> bool:
        norm = self.norm
        return (
            not self.training
            and isinstance(norm, nn.modules.batchnorm._BatchNorm)
            and norm.running_mean is not None
            and norm.affine
        )

    def _fold(self, h: Tensor, weight: Tensor) -> tuple[Tensor, Tensor] | None:
        """Decompose h and fold the bias-free 1x1 conv weight W (C_out, S*D, 1) into the bases.

        W·(DC) = (W·D)·C: the conv is applied to the R bases instead of the N reconstructed columns (exact up to
        rounding). Returns (W·D (B, C_out, S*R), C (B, S*R, N)) in the solver dtype, or None where folding would
        not save work (or the ham decomposes the channel axis).
        """
        if not self.ham.spatial:
            return None
        out_channels = weight.shape[0]
        dim, rank, groups = self.ham.channels // self.ham.groups, self.ham.rank, self.ham.groups
        if out_channels * rank >= dim * rank + out_channels * dim:
            return None
        dec = self.ham.decompose(h, reconstruct=False)  # bases (B*S, D, R), codes (B*S, R, N)
        batch = h.shape[0]
        w = weight.reshape(out_channels, groups, dim).to(dec.bases.dtype)  # (C_out, S*D, 1) -> (C_out, S, D)
        bases = dec.bases.reshape(batch, groups, dim, rank)  # (B*S, D, R) -> (B, S, D, R)
        wd = torch.einsum("osd,bsdr->bosr", w, bases).reshape(batch, out_channels, groups * rank)  # (B, C_out, S*R)
        return wd, dec.codes.reshape(batch, groups * rank, -1)  # codes (B*S, R, N) -> (B, S*R, N)

    def extra_repr(self) -> str:
        breads = "" if self.breads == "both" else f", breads={self.breads!r}"
        return f"{self.channels}, ham={self.ham_type!r}, version={self.version!r}{breads}"


# official (Enjoy-Hamburger) and mmseg (LightHamHead's `hamburger.`) names -> ours
_RENAMES = (
    ("lower_bread.0.", "lower_bread."),  # official NMF: Sequential(conv, ReLU)
    ("upper_bread.0.", "upper_bread."),  # official v1: Sequential(conv, norm)
    ("upper_bread.1.", "norm."),
    ("cheese.bn.", "cheese.norm."),
    ("ham_in.conv.", "lower_bread."),  # mmseg
    ("ham_out.conv.", "upper_bread."),
    ("ham_out.gn.", "norm."),
    ("ham_out.bn.", "norm."),
)


def convert_2d_checkpoint(state_dict: Mapping[str, Tensor], *, prefix: str = "") -> dict[str, Tensor]:
    """Convert a 2D-conv Hamburger state dict (official Enjoy-Hamburger or mmseg ``LightHamHead``) to ours.

    Keys under ``prefix`` (e.g. ``"decode_head.hamburger."``) are kept, renamed to this library's names
    (``lower_bread``, ``upper_bread``, ``norm``, ``cheese``) and 1x1 conv weights (out, in, 1, 1) become
    (out, in, 1). Load the result with ``block.load_state_dict(convert_2d_checkpoint(sd))``.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix) :]
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if key.endswith("weight") and value.ndim == 4:
            if value.shape[2:] != (1, 1):
                raise ValueError(f"{prefix}{key}: expected a 1x1 conv weight, got shape {tuple(value.shape)}")
            value = value.reshape(value.shape[0], value.shape[1], 1)
        out[key] = value
    return out
