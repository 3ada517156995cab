"""Results that a comparison reuses only for the recipe that produced them.

A comparison (``demo``, ``seg compare``, ``ablate``, ``gan compare``, ``seq compare``) stores each finished run's
numbers beside the run with the recipe that produced them; rerun with another recipe on the same ``--out``, it refuses
the stored result and names the fields that differ (as ``--resume`` refuses a changed recipe), instead of returning
old numbers under the new settings' header. Use another ``--out``, or delete the file to recompute it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import atomic_write_text
from .config import config_dict

RECIPE_KEY = "recipe"


def recipe_of(config, free: frozenset = frozenset(), **extra) -> dict:
    """The fields of a config that decide a result (all but ``free``: output, logging, workers, device), plus
    ``extra`` (what the comparison adds: evaluation samples, the classifier's hash, ...), as JSON values."""
    recipe = {k: v for k, v in config_dict(config).items() if k not in free} if config is not None else {}
    return json.loads(json.dumps({**recipe, **extra}, default=str))


def _show(value) -> str:
    return "(none)" if value is None else str(value)


def load_result(
    path: Path, recipe: dict, *, legacy: dict | None = None, ignore: frozenset = frozenset()
) -> dict | None:
    """The result stored at ``path`` if ``recipe`` produced it; None if there is none. Raises ``ValueError`` naming
    the fields that differ when another recipe did, or when the file records no recipe or is not JSON. ``legacy``:
    the value a field had before it existed (a config's ``LEGACY_DEFAULTS``), for a stored recipe that lacks it;
    ``ignore``: fields that do not decide this result, on either side."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to recompute") from None
    saved = stored.get(RECIPE_KEY) if isinstance(stored, dict) else None
    if saved is None:
        raise ValueError(
            f"{path} records no recipe (written by an older version): delete it to recompute, or use another --out"
        )
    recipe = json.loads(json.dumps(recipe, default=str))
    saved = {**{k: v for k, v in (legacy or {}).items() if k in recipe}, **saved}
    keys = sorted((set(saved) | set(recipe)) - set(ignore))
    changed = [f"{k}: {_show(saved.get(k))} -> {_show(recipe.get(k))}" for k in keys if saved.get(k) != recipe.get(k)]
    if changed:
        raise ValueError(
            f"{path} holds the result of another recipe ({'; '.join(changed)}): use another --out, or "
            "delete it to recompute"
        )
    return stored


def save_result(path: Path, recipe: dict, result: dict, *, indent: int | None = 1) -> dict:
    """Write ``result`` with its recipe, atomically; returns what was written."""
    record = {**result, RECIPE_KEY: json.loads(json.dumps(recipe, default=str))}
    atomic_write_text(Path(path), json.dumps(record, indent=indent))
    return record
