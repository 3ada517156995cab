"""The typed configuration of `hamburger seq train`: one dataclass whose fields are the CLI flags and the YAML keys."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..engine.config import MAX_RANK, RUN_FREE, RunConfig, keyword_fields, module_kwargs, option, validate_config
from ..engine.loop import AMP_DTYPES
from ..mixer import (
    DEFAULT_MIXER_FIT,
    DEFAULT_MIXER_GRAD,
    DEFAULT_MIXER_MEMORY,
    DEFAULT_MIXER_NORM,
    MIXER_FITS,
    MIXER_GRADS,
    MIXER_LOCALS,
    MIXER_MEMORIES,
    MIXER_NORMS,
    mixer_grad,
)
from ..sequence import HYBRIDS, MIXERS, create_mixer
from .data import parse_cells

RESUME_FREE = RUN_FREE | {"val_interval"}


def cells_flag(text: str) -> str:
    """argparse type of ``--train-cells``: MQAR cells ``N:P,...`` (or empty: none), in their canonical spelling."""
    if not str(text).strip():
        return ""
    try:
        return ",".join(f"{n}:{p}" for n, p in parse_cells(str(text)))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def mixer_grad_flag(text: str) -> str:
    """argparse type of ``--ham-grad``: a token mixer's gradient (a usage error naming the spellings)."""
    try:
        return str(mixer_grad(str(text)))  # its canonical spelling
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def mixer_kwargs(config: SeqTrainConfig, mixer: str | None = None) -> dict:
    """The keywords the config gives ``mixer`` (default: its own): for a Ham, one per field declared with
    ``option(keyword=...)`` (:data:`HAM_OPTIONS`); none for the other mixers."""
    return module_kwargs(config) if (mixer or config.mixer).startswith("ham_") else {}


def free_fields_of(config: SeqTrainConfig) -> frozenset:
    """The fields that do not decide a run's result: RESUME_FREE, and for a mixer that is not a Ham the Ham's fields
    (a new Ham option must not make an attention run's checkpoint or result read as another recipe)."""
    return RESUME_FREE if config.mixer.startswith("ham_") else RESUME_FREE | HAM_FIELDS


@dataclass
class SeqTrainConfig(RunConfig):
    """Everything a sequence training run depends on (see ``hamburger seq train --help``)."""

    # what a saved run that lacks a field trained with: a changed default's earlier value, or a new option's off value
    LEGACY_DEFAULTS: ClassVar[dict] = {
        "ham_grad": "one-step",
        "ham_norm": "none",
        "ham_memory": "dict",
        "ham_width": 0,
        "ham_keys": 0,
        "ham_fit": "mult",
        "ham_local": "none",
        "ham_decay": 0.0,
        "ham_query": False,
    }

    # data
    task: str = option("lm", "mqar (associative recall) | lm (characters of sympy's source)", choices=("mqar", "lm"))
    seq_len: int = option(256, "tokens per training sequence (N)", minimum=4)
    pairs: int = option(32, "mqar: key-value pairs per sequence", minimum=1)
    train_examples: int = option(20000, "mqar: generated training sequences", minimum=1)
    val_examples: int = option(500, "mqar: validation sequences; lm: validation windows", minimum=1)
    data_seed: int = option(0, "seed of the generated data (the same for every arm and model seed)")
    train_cells: str = option(
        "",
        "mqar: train on a mixture of (N, pairs) cells 'N:P,...' (train_examples of each, right-padded to the longest; "
        "validation on the same mixture), instead of one cell of --seq-len and --pairs; --seq-len must cover them",
        parse=cells_flag,
    )
    # model
    mixer: str = option(
        "ham_nmf",
        "token mixer of every block, or a hybrid '<mixer>+swa' (it and sliding-window attention in alternate blocks)",
        choices=(*MIXERS, *HYBRIDS),
    )
    dim: int = option(64, "width C", minimum=1)
    depth: int = option(2, "blocks", minimum=1)
    heads: int = option(1, "mixer heads", minimum=1)
    # R 32: the rank that recalled most at the state budget (docs/results/sequences.md); the state, D·R + R² +
    # (L − 1)·D = 4,032 floats at C 64, one head and L 16, stays within linear attention's 4,160
    rank: int = option(32, f"Ham: R bases per head (at most {MAX_RANK})", minimum=1, maximum=MAX_RANK, keyword="rank")
    ham_width: int = option(
        0,
        "Ham: W channels of the solve, C -> W -> C (0: W = C); the recurrent state per head "
        "is D·R + R² + (chunk - 1)·D floats, D = W/heads",
        minimum=0,
        keyword="width",
        off=0,
    )
    ham_keys: int = option(
        0,
        "Ham: channels per head that code a token (its key part; the read-out returns all of them), 0: all",
        minimum=0,
        keyword="keys",
        off=0,
    )
    ham_fit: str = option(
        DEFAULT_MIXER_FIT,
        "Ham: how a causal NMF dictionary is fitted to the past (mult: K multiplicative updates of the prefix "
        "statistics; ridge: their closed-form least squares; delta: a delta-rule write per token, state 2·D·R)",
        choices=MIXER_FITS,
        keyword="fit",
    )
    ham_local: str = option(
        "none",
        "Ham: a read-out of the recent tokens, weighted by code overlap (chunk: the "
        "chunk's earlier tokens; window: the last chunk - 1 tokens; causal, memory stats)",
        choices=("none", *MIXER_LOCALS),
        keyword="local",
        off="none",
    )
    ham_decay: float = option(
        0.0,
        "Ham: start of a learned per-chunk decay of the prefix statistics, in (0, 1) "
        "(0: none, equal weights; causal, memory stats; per token of the dictionary under --ham-fit delta)",
        minimum=0.0,
        keyword="decay",
        off=0.0,
    )
    ham_query: bool = option(
        False,
        "Ham: under --ham-fit delta, a token reads with the code of a separate query projection (its keys channels "
        "per head) and writes with its own code",
        keyword="query",
        off=False,
    )
    ham_steps: int = option(6, "Ham: K steps", minimum=1, keyword="steps")
    chunk: int = option(
        16,
        "Ham: causal chunk L (tokens inside a chunk do not mix, but under --ham-local)",
        minimum=1,
        keyword="chunk",
    )
    ham_grad: str = option(
        DEFAULT_MIXER_GRAD,
        f"Ham: gradient through the solve ({' | '.join(MIXER_GRADS)})",
        parse=mixer_grad_flag,
        keyword="grad",
    )
    ham_norm: str = option(
        DEFAULT_MIXER_NORM,
        "Ham: scale of the causal NMF solve (unit: every chunk's dictionary "
        "rescaled to unit-norm columns; none: unscaled, an ablation option)",
        choices=MIXER_NORMS,
        keyword="norm",
    )
    ham_memory: str = option(
        DEFAULT_MIXER_MEMORY,
        "Ham: what a causal chunk's dictionary update starts from (dict: "
        "the previous dictionary; stats: the fixed start, so the prefix statistics are the "
        "memory)",
        choices=MIXER_MEMORIES,
        keyword="memory",
    )
    conv: int = option(3, "kernel of a short causal convolution before every mixer, in every arm (0: none)", minimum=0)
    init_weights: Path | None = option(None, "start from these weights")
    # optimisation
    batch_size: int = option(32, "sequences per step", minimum=1)
    accum_steps: int = option(1, "gradient accumulation micro-steps", minimum=1)
    iters: int = option(2000, "optimiser steps", minimum=1)
    lr: float = option(2e-3, "peak AdamW learning rate (linear warm-up, cosine decay)", above=0.0)
    warmup: int = option(100, "warm-up steps", minimum=0)
    weight_decay: float = option(0.1, "AdamW weight decay of matrices", minimum=0.0)
    amp: str = option("none", "autocast dtype", choices=tuple(AMP_DTYPES))
    seed: int = option(0, "seed of the initialisation and the data order")
    # run
    out: Path = option(Path("runs/seq"), "run folder (checkpoints, log, config.yaml)")

    def __post_init__(self) -> None:
        if self.init_weights is not None and not isinstance(self.init_weights, Path):
            self.init_weights = Path(self.init_weights)
        self.out = Path(self.out)
        validate_config(self)
        try:
            mixer_grad(self.ham_grad, self.ham_steps)
        except ValueError as e:
            raise ValueError(f"ham_grad: {e}") from None
        if self.train_cells:
            if self.task != "mqar":
                raise ValueError("train_cells is an mqar option")
            longest = max(n for n, _ in parse_cells(self.train_cells))
            if longest > self.seq_len:
                raise ValueError(f"seq_len {self.seq_len} must cover the longest train cell, N {longest}")
        elif self.task == "mqar" and 3 * self.pairs > self.seq_len:
            raise ValueError(f"mqar needs seq_len >= 3 x pairs ({3 * self.pairs}), got seq_len {self.seq_len}")
        if self.mixer.startswith("ham_"):
            if self.chunk >= self.seq_len and self.ham_local == "none":
                raise ValueError(
                    f"chunk {self.chunk} >= seq_len {self.seq_len}: a causal Ham token reads only earlier chunks, so "
                    "with one chunk it mixes nothing; lower --chunk or turn on --ham-local"
                )
            try:  # the mixer's own checks (options that do not go together) before any run starts
                create_mixer(self.mixer.split("+")[0], self.dim, heads=self.heads, causal=True, **mixer_kwargs(self))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{self.mixer}: {e}") from None


# the Ham's options, each declared once above with the HamMixer keyword it sets: seq train's and seq compare's flags,
# a run's YAML keys and the mixer's keywords all come from these declarations (docs/design.md, "Adding an option")
HAM_OPTIONS = keyword_fields(SeqTrainConfig)
# the fields only a Ham mixer reads: they do not decide another mixer's result
HAM_FIELDS = frozenset(HAM_OPTIONS)
