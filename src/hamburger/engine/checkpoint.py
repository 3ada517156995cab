"""Checkpoints: weights as safetensors, resumable training state as a torch file, committed as one transaction.

A training checkpoint is three files in the run folder:

* ``last-<step>.safetensors``: the model weights (with the model's identity in the metadata),
* ``last-<step>.pt``: optimiser, scheduler, step, best metric and every RNG state,
* ``checkpoint.json``: the manifest naming both and their SHA-256, written last by an atomic rename.

The manifest's rename is the commit point: a run killed at any moment leaves the previous manifest, whose files
are still there (older step files are removed only after the new manifest is in place), so ``--resume`` always
continues from one consistent step. Loading verifies the hashes; a truncated or corrupt file is an error that
names it. ``last.safetensors`` is a link to (or copy of) the newest weights, for ``seg eval``.

``HAMBURGER_KILL_AT=<point>:<n>`` (tests only) kills the process with SIGKILL the n-th time a write reaches
``point`` — in the middle of a file (``weights``, ``state``, ``manifest``, ``best``) or between files
(``between``, ``committed``) — so fault injection does not depend on timing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import signal
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..burger import Hamburger
from ..functional import damps_forward
from ..ham import Ham
from .common import atomic_write_bytes

MANIFEST = "checkpoint.json"
STEP_FILE = re.compile(r"last-[0-9]{8}\.(safetensors|pt)")  # a committed step's weights and state
_KILL_COUNTS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process here if ``HAMBURGER_KILL_AT`` names this point and its count is reached."""
    spec = os.environ.get("HAMBURGER_KILL_AT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _KILL_COUNTS[name] = _KILL_COUNTS.get(name, 0) + 1
    if _KILL_COUNTS[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _write(path: Path, data: bytes, point: str | None) -> None:
    """Atomic write whose fault-injection ``point`` (if any) is reached half-way through the file."""
    atomic_write_bytes(path, data, midway=None if point is None else lambda: fault_point(point))


def atomic_save(obj, path: Path, *, point: str | None = None) -> None:
    """torch.save, atomically (see :func:`~hamburger.engine.common.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _write(path, buffer.getvalue(), point)


def save_weights(
    state_dict: dict,
    path: Path,
    *,
    metadata: dict[str, str] | None = None,
    point: str | None = None,
    digest: bool = False,
):
    """Model weights as safetensors (atomic), with string ``metadata`` in the header; with ``digest``, their SHA-256
    is recorded beside them (:func:`digest_path`, ``sha256sum -c`` format), written after the weights."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    data = save(tensors, metadata=metadata)
    _write(path, data, point)
    if digest:
        atomic_write_bytes(digest_path(path), f"{hashlib.sha256(data).hexdigest()}  {Path(path).name}\n".encode())


def digest_path(path: Path) -> Path:
    """Where the recorded SHA-256 of a weights file lives: ``<name>.sha256`` beside it."""
    return Path(path).with_name(Path(path).name + ".sha256")


def verify_digest(path: Path) -> None:
    """Compare a weights file with its recorded SHA-256 (when one was recorded); a ValueError naming the file if
    they differ: the file was damaged or replaced after its run wrote it."""
    record = digest_path(path)
    if not record.is_file():
        return  # weights from elsewhere, or a run written before digests were recorded
    expected = (record.read_text().split() or [""])[0]  # sha256sum's "<digest>  <name>"
    if file_sha256(path) != expected:
        raise ValueError(
            f"weights file {path} does not match the SHA-256 its run recorded in {record.name}: it was "
            "damaged or replaced; retrain, resume the run, or pass other weights"
        )


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (the manifest's hashes; what an evaluation records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: Path) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a missing, truncated or foreign file is a ValueError naming it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types, and OSError / ValueError for garbage
        raise ValueError(
            f"weights file {path} is not a readable safetensors file ({type(e).__name__}: {str(e)[:120]}); "
            "it may be truncated or corrupt: use another checkpoint (e.g. best.safetensors) or retrain"
        ) from None
    return tensors, metadata


def load_weights(path: Path) -> dict:
    """The tensors of a safetensors weights file (see :func:`read_weights`)."""
    return read_weights(path)[0]


def commit_checkpoint(out: Path, step: int, weights: dict, state: dict, *, metadata: dict[str, str]) -> None:
    """Write the step's weights and state, then the manifest that names and hashes them (the commit), then remove
    the files of older steps and point ``last.safetensors`` at the new weights."""
    out = Path(out)
    stem = f"last-{step:08d}"
    weights_path, state_path = out / f"{stem}.safetensors", out / f"{stem}.pt"
    save_weights(weights, weights_path, metadata=metadata, point="weights")
    fault_point("between")
    atomic_save(state, state_path, point="state")
    manifest: dict[str, Any] = {
        "format": 1,
        "step": step,
        "weights": weights_path.name,
        "state": state_path.name,
        "sha256": {weights_path.name: file_sha256(weights_path), state_path.name: file_sha256(state_path)},
    }
    _write(out / MANIFEST, json.dumps(manifest, indent=2).encode(), "manifest")
    fault_point("committed")
    _link_last(weights_path, out / "last.safetensors")
    digest = manifest["sha256"][weights_path.name]
    atomic_write_bytes(digest_path(out / "last.safetensors"), f"{digest}  last.safetensors\n".encode())
    remove_stale(out)


def _link_last(target: Path, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError:  # no hard links on this file system: a copy
        tmp.write_bytes(target.read_bytes())
    os.replace(tmp, link)


def _manifest(out: Path) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        for key in ("step", "weights", "state", "sha256"):
            manifest[key]
        if not isinstance(manifest["sha256"], dict) or not isinstance(manifest["step"], int):
            raise TypeError("sha256 must map file names to hashes and step must be an integer")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"checkpoint manifest {path} is unreadable ({type(e).__name__}); start over without --resume, or start "
            f"from {Path(out) / 'best.safetensors'} with --init-weights"
        ) from None
    return manifest


def remove_stale(out: Path) -> list[Path]:
    """Remove half-written temporaries and step files that the manifest does not name; return what was removed."""
    out = Path(out)
    if not out.is_dir():
        return []
    manifest = _manifest(out)
    keep = {manifest["weights"], manifest["state"]} if manifest else set()
    removed = []
    for path in out.iterdir():
        stale_tmp = path.name.startswith(".") and ".tmp" in path.name
        stale_step = STEP_FILE.fullmatch(path.name) is not None and path.name not in keep
        if path.is_file() and (stale_tmp or stale_step):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_checkpoint(out: Path) -> tuple[dict, dict[str, str], dict] | None:
    """(weights, weights metadata, state) of the committed checkpoint in ``out``, verified; None if there is none.

    A file that is missing or whose hash differs from the manifest's is a ValueError that names it."""
    out = Path(out)
    manifest = _manifest(out)
    if manifest is None:
        return None
    advice = f"start over without --resume, or start from {out / 'best.safetensors'} with --init-weights"
    for name in (manifest["weights"], manifest["state"]):
        path = out / name
        if not path.is_file():
            raise ValueError(f"checkpoint file {path} named by {out / MANIFEST} is missing; {advice}")
        if file_sha256(path) != manifest["sha256"].get(name):
            raise ValueError(f"checkpoint file {path} is corrupt or incomplete (SHA-256 differs); {advice}")
    weights, metadata = read_weights(out / manifest["weights"])
    return weights, metadata, load_state(out / manifest["state"])


def _numpy_state_globals() -> list:
    """The NumPy globals of a state file written before 0.2 (its NumPy RNG state was an array), and nothing else."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_state(path: Path) -> dict:
    """A checkpoint's state file, unpickled with ``weights_only=True``: tensors, numbers, strings and containers
    (optimiser, scheduler, RNG states, the config), never code. Anyone who can write the run folder can recompute the
    manifest's hashes, so the hash does not make a pickle safe; this does."""
    try:
        with torch.serialization.safe_globals(_numpy_state_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).split("WeightsUnpickler error:")[-1].strip().split(". ")[0]
        raise ValueError(
            f"checkpoint state {path} holds more than tensors and plain data ({reason}); it is refused "
            "because loading it could run code"
        ) from None


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = cast(tuple, np.random.get_state())  # the legacy tuple form
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):  # since 0.2: tensors and numbers (a weights_only load)
        keys = numpy_state["keys"].numpy().astype(np.uint32)
        numpy_state = (
            numpy_state["kind"],
            keys,
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    np.random.set_state(numpy_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# model identity: what changes the numbers beyond the weights, stored in every weights file and checked on load

IDENTITY_KEY = "hamburger.identity"
_HAM_FIELDS = (
    "rank",
    "groups",
    "train_steps",
    "eval_steps",
    "grad",
    "init",
    "spatial",
    "seed",
    "precision",
    "eps",
    "inv_t",
    "beta",
    "solver_steps",
)


def model_identity(model: torch.nn.Module, *, name: str, num_classes: int) -> dict[str, str]:
    """Safetensors metadata naming the variant, the classes, and every ham's, block's and group norm's constructor
    arguments (the hams' rank, steps, seed, init and precision change the outputs without changing any key)."""
    ident: dict[str, object] = {"model": name, "num_classes": num_classes}
    for path, m in model.named_modules():
        if isinstance(m, Ham):
            for field in _HAM_FIELDS:
                if hasattr(m, field):
                    ident[f"{path}.{field}"] = getattr(m, field)
        elif isinstance(m, Hamburger):
            ident[f"{path}.version"] = m.version
            ident[f"{path}.ham"] = m.ham_type
        elif isinstance(m, torch.nn.GroupNorm):
            ident[f"{path}.num_groups"] = m.num_groups
    return {IDENTITY_KEY: json.dumps(ident, sort_keys=True)}


def _forward_part(grad):
    """What of a ham's gradient mode changes its outputs: a phantom gradient's damping (λ < 1), nothing else."""
    if not isinstance(grad, str):
        return grad
    try:
        return grad if damps_forward(grad) else None
    except ValueError:
        return grad


def check_identity(saved: dict[str, str], expected: dict[str, str], path: Path) -> None:
    """Raise a ValueError naming the first argument in which the saved model differs from this one.

    The gradient a ham was trained with does not change its outputs (except a damped phantom gradient's), so it
    does not stop anyone evaluating the weights; ``--resume`` refuses a changed gradient through the config."""
    if IDENTITY_KEY not in saved:
        return  # a file from elsewhere (or an older version): the keys and shapes are still checked on load
    a, b = json.loads(saved[IDENTITY_KEY]), json.loads(expected[IDENTITY_KEY])
    for key in ["model", "num_classes", *sorted((set(a) | set(b)) - {"model", "num_classes"})]:
        if key.endswith(".grad") and _forward_part(a.get(key)) == _forward_part(b.get(key)):
            continue
        if a.get(key) != b.get(key):
            flag = key.rsplit(".", 1)[-1]
            raise ValueError(
                f"weights file {path} was saved from a model with {key} = {a.get(key)!r}, but this model has "
                f"{b.get(key)!r} ({flag}); build the same model: the flags or run folder it was trained with"
            )


def load_model_weights(model: torch.nn.Module, path: Path, identity: dict[str, str] | None = None) -> None:
    """Load a weights file into ``model`` after checking its bytes against the SHA-256 its run recorded (when there
    is one), its values (all finite) and its identity; a failed check or mismatched keys are a ValueError naming it."""
    verify_digest(path)
    tensors, metadata = read_weights(path)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"weights file {path} holds non-finite values (NaN or inf) in {', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}: the run diverged or the file is damaged"
        )
    if identity is not None:
        check_identity(metadata, identity, Path(path))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"weights file {path} does not fit this model: {' '.join(first[:3])[:300]}") from None
