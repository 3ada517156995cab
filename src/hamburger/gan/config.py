"""The typed configuration of `hamburger gan train`: one dataclass whose fields are the CLI flags and the YAML keys.

Defaults are the CPU default (``gan32`` at ch 16 on the embedded silhouettes: 1/16 of the paper's width² and so
of its FLOPs per sample); the paper's configurations are YAML recipes under ``configs/`` (``hamgan_128_imagenet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..engine.config import RUN_FREE, RunConfig, grad_spec, option, validate_config
from ..engine.loop import AMP_DTYPES
from ..functional import DEFAULT_GRAD, parse_grad
from .blocks import ARMS

# flags that change neither the model, the data, the optimiser nor the schedule: a resumed run may change them
RESUME_FREE = RUN_FREE | {"val_interval", "samples_per_class", "eval_classifier", "eval_samples", "skip_data_check"}


@dataclass
class GANTrainConfig(RunConfig):
    """Everything a GAN training run depends on (see ``hamburger gan train --help``)."""

    # what a saved run that lacks a field trained with, where the field's default has changed since
    LEGACY_DEFAULTS: ClassVar[dict] = {"ham_grad": "one-step"}

    # data
    dataset: str = option("silhouettes", "silhouettes | digits | folder | cifar10")
    data_root: Path | None = option(None, "dataset folder (folder, cifar10)")
    # model
    model: str = option("gan32", "a name of hamburger.list_gans(): gan32 | gan64 | gan128 (the image size)")
    arm: str = option("ham_nmf", "the context block in G and D", choices=ARMS)
    ch: int = option(16, "base width (the paper's 64)", minimum=1)
    z_dim: int = option(128, "latent size", minimum=1)
    conditional: bool = option(True, "class-conditional G (cBN) and D (projection)")
    context_resolution: int | None = option(
        None, "resolution of the context slot (default 32 at 128², else 16)", minimum=4
    )
    ham_steps: int = option(6, "K of a Hamburger arm in training and sampling", minimum=0)
    ham_grad: str = option(
        DEFAULT_GRAD,
        "gradient through a Hamburger arm's solve: one-step (the paper's) | bptt | "
        "none | truncated:<k> | phantom:<k>:<λ> | implicit[:<k>]",
        parse=grad_spec,
    )
    ema: float = option(
        0.0, "decay of an exponential moving average of G, used for samples (0: none)", minimum=0.0, maximum=0.99999
    )
    init_weights: Path | None = option(None, "start from these weights")
    # optimisation
    batch_size: int = option(32, "global batch of real images per D step", minimum=1)
    accum_steps: int = option(1, "must be 1 (a GAN step is one D and one G update)", minimum=1, maximum=1)
    d_steps: int = option(1, "D updates per G update", minimum=1)
    iters: int = option(2000, "G updates", minimum=1)
    lr: float = option(2e-4, "learning rate of G", above=0.0)
    lr_d: float = option(4e-4, "learning rate of D", above=0.0)
    lr_decay_from: float = option(
        1.0,
        "fraction of the steps after which both learning rates fall linearly to 0 "
        "at the last step (1: constant, the paper's)",
        minimum=0.0,
        maximum=1.0,
    )
    beta1: float = option(0.0, "Adam β1", minimum=0.0, maximum=0.999)
    beta2: float = option(0.999, "Adam β2", minimum=0.0, maximum=0.99999)
    amp: str = option("none", "autocast dtype", choices=tuple(AMP_DTYPES))
    seed: int = option(0, "seed of the initialisation, the data order, z and the fake labels")
    # run
    out: Path = option(Path("runs/gan"), "run folder (checkpoints, log, samples, config.yaml)")
    val_interval: int = option(250, "write a sample grid every N steps (0: only at the end)", minimum=0)
    samples_per_class: int = option(8, "columns of the sample grid (one row per class)", minimum=1)
    eval_classifier: Path | None = option(
        None, "a feature classifier (gan eval writes one): log the Fréchet classifier distance every val_interval"
    )
    eval_samples: int = option(500, "generated images per distance on the training curve", minimum=2)
    skip_data_check: bool = option(False, "skip the pass that reads every image of a folder dataset before training")

    def __post_init__(self) -> None:
        for name in ("data_root", "init_weights", "eval_classifier"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        self.out = Path(self.out)
        validate_config(self)
        parse_grad(self.ham_grad)  # a ValueError naming the spellings
