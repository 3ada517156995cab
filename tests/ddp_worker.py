"""Run `hamburger seg train` in this process (under torchrun or alone) and save this rank's final weights."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from hamburger.cli import build_parser
from hamburger.engine.config import config_from_args, parse_with_recipe
from hamburger.seg.cli import SUBCOMMANDS
from hamburger.seg.config import SegTrainConfig
from hamburger.seg.train import train

if __name__ == "__main__":
    parser = build_parser()
    argv = ["seg", "train", *sys.argv[1:]]
    args = config_from_args(SegTrainConfig, parse_with_recipe(parser, argv, SUBCOMMANDS["train"]))
    result = train(args)
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(result["model"].state_dict(), Path(args.out) / f"rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()
