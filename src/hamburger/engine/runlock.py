"""One run per run folder: a non-empty folder is continued (``--resume``) or replaced (``--overwrite``), never mixed;
a run deletes only files it owns; an advisory lock keeps a second process out of a folder a run is using.

Provenance: before a run writes anything into its folder it writes :data:`RECORD`, which names what the run owns (its
files, its step files' pattern, its folders and the patterns of the files it writes in them). ``--overwrite`` removes
only what that record names. A folder without a record that holds a name a run would write is not a run and is
refused, naming the files; a run folder written before records existed (it has a checkpoint manifest) may be resumed,
and is adopted (its record written) then, but never overwritten.

The lock is a POSIX record lock (``fcntl.lockf``) on ``<out>/.lock`` (the holder's PID written in it), held by rank 0
for the run's lifetime; the kernel releases it when the process ends, SIGKILL included, so a killed run never leaves
a stale lock. A POSIX lock, unlike ``flock``, is not inherited by forked children: a DataLoader worker that outlives
a killed run for a moment does not keep its folder locked. ``.lock`` is opened without following a symlink, and a
``.lock`` that is not a regular file is refused. Where ``fcntl`` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

from .checkpoint import MANIFEST, STEP_FILE
from .common import atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
RECORD = ".hamburger-run.json"
# what a run writes into its folder (and what --overwrite removes); anything else in the folder is left alone
RUN_FILES = (
    "checkpoint.json",
    "config.yaml",
    "config_changes.jsonl",
    "log.jsonl",
    "last.safetensors",
    "best.safetensors",
    "best.safetensors.sha256",
    "last.safetensors.sha256",
    "eval.json",
    "result.json",
)
RUN_FOLDERS = {"samples": r"(step[0-9]+|final|sample-seed[0-9]+)\.png", "tensorboard": r"events\.out\.tfevents\..+"}


def _owned(record: dict) -> tuple[set, re.Pattern, dict]:
    return (
        set(record["files"]),
        re.compile(record["step_files"]),
        {k: re.compile(v) for k, v in record["folders"].items()},
    )


OWNED = {"files": list(RUN_FILES), "step_files": STEP_FILE.pattern, "folders": RUN_FOLDERS}


def read_record(out: Path) -> dict | None:
    """The run record of ``out``, or None when it has none; a damaged record is a ValueError naming it."""
    path = Path(out) / RECORD
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if path.is_symlink() or not path.is_file():
            raise TypeError("not a regular file")
        record = json.loads(path.read_text())
        _owned(record)
    except (ValueError, KeyError, TypeError, AttributeError, re.error) as e:
        raise ValueError(
            f"run record {path} is unreadable ({type(e).__name__}); it is not this package's: remove it "
            "or choose another --out"
        ) from None
    return record


def run_files(out: Path, record: dict | None = None) -> list[Path]:
    """The entries of ``out`` a run owns by ``record`` (default: what a run of this version writes): its files, step
    files and folders, not the record itself."""
    out = Path(out)
    if not out.is_dir():
        return []
    files, steps, folders = _owned(record or OWNED)
    return sorted(
        p for p in out.iterdir() if p.name in files or steps.fullmatch(p.name) or p.name in folders and p.is_dir()
    )


def _names(found: list[Path]) -> str:
    return ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")


def _remove_owned(out: Path, record: dict) -> None:
    """Remove what ``record`` says the run owns: its files and step files, and in its folders only the files of the
    folder's pattern (the folder itself if that empties it)."""
    files, steps, folders = _owned(record)
    for path in run_files(out, record):
        if path.name in folders:
            for inner in path.iterdir():
                if folders[path.name].fullmatch(inner.name) and (inner.is_file() or inner.is_symlink()):
                    inner.unlink()
            if not any(path.iterdir()):
                path.rmdir()
        elif path.is_file() or path.is_symlink():
            path.unlink()


def _write_record(out: Path) -> None:
    """Claim ``out``: what a run of this version owns, written before anything else of the run."""
    atomic_write_text(out / RECORD, json.dumps({"format": 1, **OWNED}, indent=1) + "\n")


def prepare(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Claim ``out`` for a run (write its record) or refuse it: a folder that holds another run is continued
    (``resume``) or replaced (``overwrite``: only what its record names is removed); a folder without a record whose
    files a run would write is refused, naming them (a pre-record run with a checkpoint manifest may be resumed)."""
    out = Path(out)
    record = read_record(out)
    found = run_files(out)
    if record is None:
        if found and not (resume and (out / MANIFEST).is_file()):
            what = (
                "--overwrite removes only the files a run recorded as its own"
                if overwrite
                else "a run would write over them"
            )
            raise ValueError(
                f"{out} is not a run folder ({RECORD} is missing) but holds {_names(found)}: {what}; "
                "move them away or choose another --out"
            )
        _write_record(out)
        return
    found = run_files(out, record)
    if not found or resume:
        return
    if not overwrite:
        raise ValueError(
            f"{out} already holds a run ({_names(found)}); pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out"
        )
    _remove_owned(out, record)
    _write_record(out)


class RunLock:
    """``with RunLock(out):`` holds the folder's advisory lock; a second holder gets a ``ValueError`` naming the PID."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        self.created = not os.path.lexists(self.path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise ValueError(f"{self.path} is a symlink, not a run's lock file; remove it") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(f"{self.path} is not a regular file, not a run's lock file; remove it")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"{self.path.parent} is in use by another run (PID {holder}); wait for it to end or "
                "choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None and self.created and not (self.path.parent / RECORD).exists():
            self.path.unlink(missing_ok=True)  # a refused folder keeps nothing of this run, not even its lock file
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None
