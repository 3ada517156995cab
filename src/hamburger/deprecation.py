"""Module paths of the 0.1 layout, kept working for one release as aliases that warn.

In 0.2 the library moved to a package per task (``hamburger.seg``, ``gan``, ``seq``, ``bench``, ``viz``) on a
task-free ``hamburger.engine``; ``hamburger.recipes``, ``hamburger.models`` and the ``*_cli`` modules became the thin
aliases below. Each alias emits one :class:`DeprecationWarning` naming the new path when first imported and is
removed in 0.3. A run folder or checkpoint written before the move needs no alias: it names no module.
"""

from __future__ import annotations

import importlib
import sys
import warnings

REMOVED_IN = "0.3"


def alias(name: str, *targets: str) -> None:
    """Make the module being imported as ``name`` the module ``targets[0]`` (one target: the very same object, so
    monkeypatching either path patches both), or a view that looks names up in ``targets`` in order (an old module
    that was split)."""
    where = " and ".join(targets)
    level, frame = 2, sys._getframe(1)  # the alias module's body; the warning names the line that imported it
    while frame.f_back is not None and frame.f_back.f_code.co_filename.startswith("<frozen importlib"):
        frame, level = frame.f_back, level + 1
    message = f"{name} moved to {where}; the old path is removed in hamburger {REMOVED_IN}"
    warnings.warn(message, DeprecationWarning, stacklevel=level + 1)
    modules = [importlib.import_module(t) for t in targets]
    if len(modules) == 1:
        sys.modules[name] = modules[0]
        return
    view = sys.modules[name]

    def __getattr__(attr: str):
        for module in modules:
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {name!r} has no attribute {attr!r} (it moved to {where})")

    view.__getattr__ = __getattr__
    view.__dir__ = lambda: sorted({n for m in modules for n in dir(m)})
