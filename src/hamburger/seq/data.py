"""Sequence data for comparing token mixers: multi-query associative recall (generated) and a character corpus that
every machine of the project has and that does not change (the pinned sympy's source).

* :func:`mqar`: multi-query associative recall as in the Zoology study of sub-quadratic mixers (Arora et al., 2023):
  a sequence opens with P key–value pairs, then holds the keys again (queries) at random later positions among
  filler tokens; the target at each query is the value bound to that key. Keys and values come from disjoint halves
  of the vocabulary; loss and accuracy count the query positions only. Deterministic from a seed.
* :func:`sympy_corpus`: the ``.py`` files of the installed ``sympy==1.14.0`` outside its ``tests`` folders, sorted
  by path, split by file (every 20th file from the first to test, from the second to validation, the rest to
  training), as bytes (a 256-symbol alphabet). Its SHA-256 is recorded in every result; another sympy version is a
  clear error, not a silently different benchmark.
"""

from __future__ import annotations

import functools
import hashlib
import math

import torch
import torch.nn.functional as F

IGNORE = -100
SYMPY_VERSION = "1.14.0"
# the corpus those files make (generated files left out, see _generated; with them it was 3f7bddb1…): a
# sympy that reports 1.14.0 but holds other files is another corpus, refused
SYMPY_CORPUS_SHA256 = "80fa301894d484bb52277e66108f2883dca66f170899e901ca6dba3ea744f394"
FILLER = 0


def mqar(count: int, *, seq_len: int, pairs: int, vocab: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (count, seq_len) int64, targets (count, seq_len) int64 with ``IGNORE`` off the query positions).

    Tokens: 0 filler, keys in [1, vocab/2), values in [vocab/2, vocab). Every key is queried once, at a random
    position after the 2P pair tokens; the model must output its value at that position."""
    if pairs < 1 or 2 * pairs + pairs > seq_len:
        raise ValueError(f"seq_len ({seq_len}) must hold {pairs} pairs and {pairs} queries (>= {3 * pairs})")
    half = vocab // 2
    if pairs > half - 1:
        raise ValueError(f"vocab {vocab} has {half - 1} keys, fewer than {pairs} pairs")
    gen = torch.Generator().manual_seed(seed)
    keys = torch.stack([torch.randperm(half - 1, generator=gen)[:pairs] + 1 for _ in range(count)])  # (count, P)
    values = torch.randint(half, vocab, (count, pairs), generator=gen)  # (count, P)
    inputs = torch.full((count, seq_len), FILLER, dtype=torch.int64)
    targets = torch.full((count, seq_len), IGNORE, dtype=torch.int64)
    inputs[:, 0 : 2 * pairs : 2] = keys
    inputs[:, 1 : 2 * pairs : 2] = values
    free = seq_len - 2 * pairs
    for i in range(count):
        slots = torch.randperm(free, generator=gen)[:pairs] + 2 * pairs  # (P,) query positions
        order = torch.randperm(pairs, generator=gen)
        inputs[i, slots] = keys[i, order]
        targets[i, slots] = values[i, order]
    return inputs, targets


def parse_cells(text: str, *, fit: bool = True) -> tuple[tuple[int, int], ...]:
    """``"64:4,128:8"`` -> ((64, 4), (128, 8)): MQAR cells (N, pairs), each with N >= 3 x pairs unless ``fit`` is
    False (``seq compare --cells`` skips such a cell); ValueError naming what is wrong."""
    try:
        cells = tuple((int(n), int(p)) for n, p in (c.split(":") for c in str(text).split(",") if c.strip()))
    except ValueError:
        raise ValueError(f"expected N:PAIRS,... (e.g. 64:4,128:8), got {text!r}") from None
    if not cells or any(n < 1 or p < 1 for n, p in cells):
        raise ValueError(f"expected N:PAIRS,... with N and pairs >= 1, got {text!r}")
    short = [f"{n}:{p}" for n, p in cells if 3 * p > n] if fit else []
    if short:
        raise ValueError(f"a cell's N must hold its pairs and their queries (N >= 3 x pairs): {', '.join(short)}")
    return cells


def mqar_mixture(
    count: int, cells: tuple[tuple[int, int], ...], *, vocab: int = 256, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` MQAR sequences of each cell (N, pairs), right-padded with filler (targets ``IGNORE``) to the longest
    N: (inputs, targets) (count·cells, max N). A causal model's outputs at a sequence's own positions do not see its
    padding, so each cell is learned as if alone; the cells are interleaved (row i of every cell, then row i + 1)."""
    longest = max(n for n, _ in cells)
    parts = []
    for j, (n, p) in enumerate(cells):
        inputs, targets = mqar(count, seq_len=n, pairs=p, vocab=vocab, seed=seed * 1_000 + j)
        parts.append((F.pad(inputs, (0, longest - n), value=FILLER), F.pad(targets, (0, longest - n), value=IGNORE)))
    inputs = torch.stack([i for i, _ in parts], 1).reshape(-1, longest)  # (count · cells, max N), interleaved
    targets = torch.stack([t for _, t in parts], 1).reshape(-1, longest)
    return inputs, targets


def _sympy_files():
    import importlib.metadata as md

    try:
        dist = md.distribution("sympy")
    except md.PackageNotFoundError:
        raise ValueError(f"the character corpus needs sympy (pip install sympy=={SYMPY_VERSION})") from None
    if dist.version != SYMPY_VERSION:
        raise ValueError(
            f"the character corpus is the source of sympy=={SYMPY_VERSION}, but sympy {dist.version} is installed: "
            f"its files differ, so its numbers would not be comparable (pip install sympy=={SYMPY_VERSION})"
        )
    files = sorted(
        str(f)
        for f in dist.files or ()
        if str(f).startswith("sympy/") and str(f).endswith(".py") and "tests" not in str(f).split("/")[:-1]
    )
    if not files:
        raise ValueError("sympy's file list is empty: reinstall sympy")
    return dist, files


GENERATED = ("sympy/polys/benchmarks/", "_generated.py")  # machine-made data, not code anyone writes


def _generated(name: str) -> bool:
    """Files of data that a program wrote (polynomial systems of a benchmark, assumption tables): left out of the
    corpus. ``polys/benchmarks/bench_solvers.py`` alone (447 KB of expanded polynomials) was 39% of the test split
    and made its bits per character ~1.1 above the validation split's for every model."""
    return name.startswith(GENERATED[0]) or name.endswith(GENERATED[1])


@functools.lru_cache(maxsize=1)
def sympy_corpus() -> dict:
    """``{"train", "val", "test"}`` uint8 tensors of the concatenated files (every 20th file from the first is a
    test file, from the second a validation file; :func:`_generated` files are left out), and ``sha256`` /
    ``files`` counts."""
    from pathlib import Path

    dist, files = _sympy_files()
    parts: dict[str, list[bytes]] = {"train": [], "val": [], "test": []}
    digest = hashlib.sha256()
    for i, name in enumerate(files):
        if _generated(name):  # skipped where it stands: the other files keep their split
            continue
        data = Path(dist.locate_file(name)).read_bytes()
        digest.update(name.encode() + b"\0" + data)
        split = "test" if i % 20 == 0 else "val" if i % 20 == 1 else "train"
        parts[split].append(data)
    if digest.hexdigest() != SYMPY_CORPUS_SHA256:
        raise ValueError(
            f"the installed sympy {dist.version} at {dist.locate_file('sympy')} holds other files than the pinned "
            f"corpus (SHA-256 {digest.hexdigest()[:16]}…, expected {SYMPY_CORPUS_SHA256[:16]}…): its numbers would not "
            f"be comparable; reinstall it (pip install --force-reinstall sympy=={SYMPY_VERSION})"
        )
    out = {k: torch.frombuffer(bytearray(b"".join(v)), dtype=torch.uint8) for k, v in parts.items()}
    out["sha256"] = digest.hexdigest()
    out["files"] = {k: len(v) for k, v in parts.items()}
    return out


def ngram_bits_per_char(train: torch.Tensor, test: torch.Tensor, *, order: int) -> float:
    """Bits per character of an add-one-smoothed unigram (order 1) or bigram (order 2) model fitted on ``train``."""
    if order == 1:
        counts = torch.bincount(train.long(), minlength=256).double() + 1
        logp = (counts / counts.sum()).log2()
        return float(-logp[test.long()].mean())
    if order == 2:
        pairs = train[:-1].long() * 256 + train[1:].long()
        counts = torch.bincount(pairs, minlength=256 * 256).double().reshape(256, 256) + 1
        logp = (counts / counts.sum(1, keepdim=True)).log2()
        return float(-logp[test[:-1].long(), test[1:].long()].mean())
    raise ValueError(f"order must be 1 or 2, got {order}")


def windows(stream: torch.Tensor, *, length: int, count: int, seed: int) -> torch.Tensor:
    """``count`` windows of ``length + 1`` bytes at seeded random offsets of ``stream``: (count, length + 1) int64."""
    if len(stream) <= length + 1:
        raise ValueError(f"the stream has {len(stream)} characters, too few for windows of {length + 1}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - length - 1, (count,), generator=gen)
    return torch.stack([stream[s : s + length + 1] for s in starts.tolist()]).long()


def tiles(stream: torch.Tensor, *, length: int, limit: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping windows of ``length + 1`` (one shared character) covering ``stream``:
    (n, length + 1) int64, the evaluation set (every character after the first is predicted once)."""
    n = (len(stream) - 1) // length
    if limit is not None:
        n = min(n, limit)
    if n < 1:
        raise ValueError(f"the stream has {len(stream)} characters, too few for one window of {length + 1}")
    idx = torch.arange(n)[:, None] * length + torch.arange(length + 1)[None, :]
    return stream[idx].long()


def bits(nats: float) -> float:
    return nats / math.log(2)
