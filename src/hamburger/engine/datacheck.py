"""A fast pass over a dataset before training: every sample read once and checked — so a broken dataset fails at the
start with a list of its bad files, not hours in inside a worker traceback (or, in a short run, never).

A dataset takes part by having ``check_sample(index) -> str``: what is wrong with sample ``index`` ("" when nothing
is), its readers' ``ValueError`` messages naming the file. Segmentation checks that image and mask exist, are
readable, have one size and labels within the classes; the GAN's image folders that every image reads.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset


class _Probe(Dataset):
    """Sample i of a dataset, checked: what is wrong with it, or ""."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> str:
        index = self.indices[i]
        try:
            return self.dataset.check_sample(index)
        except ValueError as e:  # the readers' own messages name the file
            return str(e)
        except Exception as e:  # noqa: BLE001 - any failure of a sample is reported with the sample
            return f"sample {index} of {self.dataset.name}: {type(e).__name__}: {e}"


def check_dataset(dataset, *, workers: int = 0, progress: bool = False) -> list[str]:
    """Every problem of ``dataset``'s samples, one line each (empty when all are good).

    Under ``torch.distributed`` each rank reads its share, and every rank learns how many problems were found
    (so all ranks stop together). The global RNG is not touched: a checked run trains exactly as an unchecked one.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    indices = list(range(len(dataset)))[rank::world]
    loader = DataLoader(
        _Probe(dataset, indices),
        batch_size=64,
        num_workers=workers,
        collate_fn=list,
        generator=torch.Generator().manual_seed(0),
    )
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=f"checking {dataset.name}", unit="batch", dynamic_ncols=True, leave=False)
    problems = [p for batch in loader for p in batch if p]
    if world > 1:
        count = torch.tensor([len(problems)], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            count = count.cuda()
        dist.all_reduce(count)
        if count.item() and not problems:
            problems = [f"{count.item()} bad samples found by other ranks"]
    return problems


def require_clean(datasets, *, workers: int = 0, progress: bool = False, limit: int = 20) -> None:
    """Raise one ValueError listing (up to ``limit``) the bad samples of every dataset given."""
    problems = [p for ds in datasets if ds is not None for p in check_dataset(ds, workers=workers, progress=progress)]
    if problems:
        shown = "\n  ".join(problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        raise ValueError(
            f"the data check found {len(problems)} bad sample(s) (pass --skip-data-check to train anyway):\n  "
            f"{shown}{more}"
        )
