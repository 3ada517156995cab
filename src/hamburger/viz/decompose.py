"""`hamburger decompose`: a real photo as a D x N matrix, decomposed by NMF, VQ and CD at several ranks.

The photo's rows are the D axis and its columns the N axis. Each solver starts from the hams' fixed seeded
bases, and the relative reconstruction error ‖X − DC‖/‖X‖ is reported after every step. A PNG grid shows the
low-rank reconstructions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import functional as HF
from ..engine.common import save_figure
from ..ham import CD, NMF, VQ

SOLVERS = {"nmf": (HF.nmf, NMF), "vq": (HF.vq, VQ), "cd": (HF.cd, CD)}
IMAGES = ("camera", "moon", "coins", "text", "page", "brick", "grass", "gravel")


def load_image(name: str) -> torch.Tensor:
    """A greyscale photo shipped with scikit-image, as a float (H, W) tensor in [0, 1]."""
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - the demo extra installs it
        raise ImportError("hamburger decompose needs scikit-image: pip install 'hamburger[demo]'") from e
    if name not in IMAGES:
        raise ValueError(f"image must be one of {IMAGES}, got {name!r}")
    img = torch.from_numpy(getattr(data, name)()).float()
    if img.ndim == 3:  # colour -> luminance
        img = img[..., :3] @ torch.tensor([0.299, 0.587, 0.114])
    return img / 255.0


def check_rank(x: torch.Tensor, rank: int) -> None:
    """A rank-R decomposition of a D x N image needs R <= min(D, N); a larger R only allocates (D x R, R x N)."""
    bound = min(x.shape[-2:])
    if rank > bound:
        raise ValueError(f"rank {rank} exceeds min(D, N) = {bound} of the {x.shape[-2]}x{x.shape[-1]} image")


def decompose_errors(x: torch.Tensor, ham: str, rank: int, steps: int) -> tuple[list[float], torch.Tensor]:
    """Relative error after 0..steps steps (0 = the final update from the start bases) and the last reconstruction."""
    check_rank(x, rank)
    fn, module = SOLVERS[ham]
    start = module(x.shape[0], rank=rank).eval_bases  # (1, D, R): the hams' fixed seeded start
    xb = x[None]  # (1, D, N)
    errors, recon = [], None
    norm = x.norm().item()
    for k in range(steps + 1):
        recon = fn(xb, start, k, grad="none").recon[0]
        errors.append((x - recon).norm().item() / norm)
    return errors, recon


def run(
    *,
    image: str = "camera",
    ranks: tuple[int, ...] = (8, 16, 32, 64),
    steps: int = 10,
    hams: tuple[str, ...] = ("nmf", "vq", "cd"),
    out: Path | None = Path("results/decompose"),
    progress: bool = True,
) -> dict:
    for ham in hams:
        if ham not in SOLVERS:
            raise ValueError(f"ham must be one of {tuple(SOLVERS)}, got {ham!r}")
    x = load_image(image)
    say = print if progress else (lambda *a, **k: None)
    say(f"{image}: {x.shape[0]}x{x.shape[1]} image as a D x N matrix (D={x.shape[0]}, N={x.shape[1]})")
    say("relative error ‖X − DC‖/‖X‖ after each step k (k=0: final code update from the start bases)")
    say(f"{'ham':4s} {'R':>3s}  " + " ".join(f"k={k:<5d}" for k in range(steps + 1)))
    results: dict = {"image": image, "shape": list(x.shape), "steps": steps, "errors": {}}
    recons = {}
    for ham in hams:
        for rank in ranks:
            errors, recon = decompose_errors(x, ham, rank, steps)
            results["errors"][f"{ham}-{rank}"] = errors
            recons[ham, rank] = recon
            say(f"{ham:4s} {rank:3d}  " + " ".join(f"{e:.4f} " for e in errors))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        path = _plot(x, recons, results, hams, ranks, out / f"decompose-{image}.png")
        results["png"] = str(path)
        say(f"wrote {path}")
    return results


def _plot(x, recons, results, hams, ranks, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(hams), len(ranks) + 1, figsize=(2.2 * (len(ranks) + 1), 2.4 * len(hams)))
    axes = [axes] if len(hams) == 1 else axes
    for i, ham in enumerate(hams):
        axes[i][0].imshow(x.numpy(), cmap="gray", vmin=0, vmax=1)
        axes[i][0].set_title("original" if i == 0 else "", fontsize=9)
        axes[i][0].set_ylabel(ham.upper(), fontsize=11)
        for j, rank in enumerate(ranks, start=1):
            err = results["errors"][f"{ham}-{rank}"][-1]
            axes[i][j].imshow(recons[ham, rank].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i][j].set_title(f"R={rank}  err {err:.3f}", fontsize=9)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Low-rank reconstructions after {results['steps']} steps", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path
