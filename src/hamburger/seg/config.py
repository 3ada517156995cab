"""The typed configuration of `hamburger seg train`: one dataclass whose fields are the CLI flags and the YAML keys.

The CLI builds its flags from these fields (:func:`hamburger.engine.config.add_config_arguments`), a YAML recipe
sets them by name, Python users construct the dataclass directly, and the saved ``config.yaml`` beside a run is
accepted back as ``--config`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..burger import BREADS, HAMS, VERSIONS
from ..engine.config import MAX_RANK, RUN_FREE, RunConfig, grad_spec, option, validate_config
from ..engine.loop import AMP_DTYPES
from ..functional import DEFAULT_GRAD, PRECISIONS, parse_grad
from ..ham import INITS
from .models import holds_ham
from .pretrained import KEY_MAPPINGS

# the fields that build a model and read its data: the flags of seg eval, predict and viz as well
MODEL_OPTIONS = (
    *("dataset", "data_root", "num_classes", "model", "device", "norm", "context_norm", "backbone_norm", "rank"),
    *("ham_init", "ham_version", "ham_steps", "ham_eval_steps", "ham_grad", "ham_type", "ham_breads", "ham_precision"),
    *("dropout", "aux", "pretrained"),
)
NORMS = ("batch", "group")  # the norm layers a segmentation head or backbone can be built with

# flags that change neither the model, the data, the optimiser nor the schedule: a resumed run may change them
RESUME_FREE = RUN_FREE | {"skip_data_check"}


@dataclass
class SegTrainConfig(RunConfig):
    """Everything a segmentation training run depends on (see ``hamburger seg train --help``)."""

    # runs written before ``DEFAULT_GRAD`` changed saved ``ham_grad: null`` (or no key): they trained with this one
    LEGACY_DEFAULTS: ClassVar[dict] = {"ham_grad": "one-step"}

    # data
    dataset: str = option("voc", "voc | pascal_context | ade20k | cityscapes | folder | animal-scenes")
    data_root: Path | None = option(None, "dataset folder (its documented layout)")
    num_classes: int | None = option(None, "classes of a 'folder' dataset", minimum=1)
    train_split: str = option("train", "split to train on")
    val_split: str = option("val", "split to validate on")
    crop_size: int = option(512, "training crop (pixels)", minimum=8)
    scale_range: tuple[float, ...] = option((0.5, 2.0), "random scale range of training images", above=0.0)
    # model
    model: str = option("hamnet_r50_d8", "a name of hamburger.list_models()")
    norm: str | None = option(None, "head norm layers (default: batch)", choices=NORMS)
    context_norm: str | None = option(None, "norm inside the context block (default: the head's)", choices=NORMS)
    backbone_norm: str | None = option(None, "backbone norm (default: batch)", choices=NORMS)
    rank: int | None = option(
        None, f"R of the Hamburger (default: the variant's; at most {MAX_RANK})", minimum=1, maximum=MAX_RANK
    )
    ham_init: str | None = option(None, "bases init of the Hamburger", choices=INITS)
    ham_version: str | None = option(None, "Hamburger version (default: the variant's)", choices=VERSIONS)
    ham_steps: int | None = option(None, "K of the Hamburger in training (default: the variant's)", minimum=0)
    ham_eval_steps: int | None = option(None, "K of the Hamburger at evaluation (default: the variant's)", minimum=0)
    ham_grad: str | None = option(
        None,
        "gradient through the Hamburger's solve: one-step (the paper's) | bptt | none | truncated:<k> | "
        "phantom:<k>:<λ> | implicit[:<k>] (default: hamburger.functional.DEFAULT_GRAD, written into config.yaml)",
        parse=grad_spec,
    )
    ham_type: str | None = option(None, "the Hamburger's ham (default: the variant's)", choices=tuple(HAMS))
    ham_breads: str | None = option(None, "which breads the Hamburger keeps (ablation)", choices=BREADS)
    ham_precision: str | None = option(None, "precision of the hams' large products (default fp32)", choices=PRECISIONS)
    dropout: float | None = option(None, "dropout before the classifier", minimum=0.0, maximum=0.99)
    aux: bool | None = option(None, "FCN auxiliary head on stage 3 (default: the variant's)")
    pretrained: str | None = option(
        None, "backbone weights: 'hub' (timm's), a local weights file, or package:<name> (package:efficientnet-lite0)"
    )
    pretrained_keys: str = option(
        "names", "how a local weights file's keys map onto the backbone's: names (timm's) | order", choices=KEY_MAPPINGS
    )
    freeze_backbone: bool = option(False, "train the head only: the backbone's weights and BatchNorm statistics fixed")
    freeze_bn: bool = option(False, "keep the backbone's BatchNorm statistics (and affine) as loaded")
    init_weights: Path | None = option(None, "start from these weights (a second stage)")
    # optimisation
    batch_size: int = option(16, "global batch per optimiser step", minimum=1)
    accum_steps: int = option(1, "gradient accumulation micro-steps", minimum=1)
    iters: int = option(60000, "optimiser steps", minimum=1)
    optimizer: str = option("sgd", "optimiser", choices=("sgd", "adamw"))
    lr: float = option(9e-3, "base learning rate", above=0.0)
    momentum: float = option(0.9, "SGD momentum", minimum=0.0, maximum=1.0)
    weight_decay: float = option(1e-4, "weight decay of conv/linear weights", minimum=0.0)
    bias_lr_mult: float = option(2.0, "LR multiplier of biases", minimum=0.0)
    head_lr_mult: float = option(1.0, "LR multiplier of everything outside the backbone", minimum=0.0)
    poly_power: float = option(0.9, "power of the poly LR schedule", minimum=0.0)
    warmup_iters: int = option(0, "linear warm-up steps", minimum=0)
    warmup_ratio: float = option(1e-6, "LR factor at the start of the warm-up", minimum=0.0, maximum=1.0)
    aux_weight: float = option(0.4, "weight of the auxiliary loss", minimum=0.0)
    amp: str = option("none", "autocast dtype", choices=tuple(AMP_DTYPES))
    seed: int = option(0, "seed of the initialisation, the data order and the augmentation")
    # run
    workers: int = option(2, "DataLoader workers", minimum=0)
    out: Path = option(Path("runs/seg"), "run folder (checkpoints, log, config.yaml)")
    val_interval: int = option(0, "validate every N iterations (0: never)", minimum=0)
    bn_recalib: int = option(
        0, "before each evaluation, recompute BatchNorm statistics from N training batches (0: off)", minimum=0
    )
    max_val_samples: int | None = option(None, "validate on at most this many images", minimum=1)
    ckpt_interval: int = option(1000, "checkpoint every N iterations", minimum=1)
    skip_data_check: bool = option(False, "skip the pass over the data that finds bad files before training")

    def __post_init__(self) -> None:
        self.scale_range = tuple(float(v) for v in self.scale_range)
        for name in ("data_root", "init_weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        self.out = Path(self.out)
        validate_config(self)
        if self.ham_grad is None and holds_ham(self.model):
            # resolved here, so that a saved run and a cached result name the gradient they were trained with: a run
            # of a later default cannot be resumed or reused as one of this one's (LEGACY_DEFAULTS for older runs)
            self.ham_grad = DEFAULT_GRAD
        if self.ham_grad is not None:
            parse_grad(self.ham_grad)  # a ValueError naming the spellings
        if len(self.scale_range) != 2 or self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range must be two numbers low,high with low <= high, got {self.scale_range}")
