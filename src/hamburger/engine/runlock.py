"""One run per run folder: a non-empty folder is continued (``--resume``) or replaced (``--overwrite``), never mixed,
and an advisory lock keeps a second process out of a folder a run is using.

The lock is a POSIX record lock (``fcntl.lockf``) on ``<out>/.lock`` (the holder's PID written in it), held by rank 0
for the run's lifetime; the kernel releases it when the process ends, SIGKILL included, so a killed run never leaves
a stale lock. A POSIX lock, unlike ``flock``, is not inherited by forked children: a DataLoader worker that outlives
a killed run for a moment does not keep its folder locked.
Where ``fcntl`` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"
# what a run writes into its folder (and what --overwrite removes); anything else in the folder is left alone
RUN_FILES = ("checkpoint.json", "config.yaml", "config_changes.jsonl", "log.jsonl", "last.safetensors",
             "best.safetensors", "eval.json", "result.json")  # fmt: skip
RUN_PREFIXES = ("last-",)
RUN_FOLDERS = ("samples", "tensorboard")


def run_files(out: Path) -> list[Path]:
    """The files and folders of a run in ``out``."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name in RUN_FILES or p.name.startswith(RUN_PREFIXES)
                  or p.name in RUN_FOLDERS and p.is_dir())  # fmt: skip


def prepare(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds another run unless the run continues it or replaces it; replacing removes the old
    run's files first (and nothing else)."""
    found = run_files(out)
    if not found or resume:
        return
    if not overwrite:
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(f"{out} already holds a run ({names}); pass --resume to continue it, --overwrite to replace "
                         "it, or choose another --out")  # fmt: skip
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


class RunLock:
    """``with RunLock(out):`` holds the folder's advisory lock; a second holder gets a ``ValueError`` naming the PID."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(f"{self.path.parent} is in use by another run (PID {holder}); wait for it to end or "
                             "choose another --out") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None
