"""`hamburger viz`: the paper's Figure 2 for a trained segmentation model (or a bare photo): what goes into the ham,
what comes out, which pixels each basis explains, and how the reconstruction error falls over the K steps.

For each image: the input; the feature map entering the ham (after the lower bread and, for NMF, its ReLU), shown
as its first three principal components in RGB; the ham's low-rank reconstruction, projected on the same
components (so colours are comparable); one map per basis r with the share of each pixel's code on r (which pixels
basis r explains); and ‖X − DC‖/‖X‖ after each step k = 0 … K from the eval start. One PNG per image and a
contact sheet of all of them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .. import functional as HF
from ..burger import Hamburger
from ..engine.common import save_figure
from .decompose import SOLVERS, check_rank, decompose_errors, load_image

SOLVER_FNS = {"nmf": HF.nmf, "vq": HF.vq, "cd": HF.cd}
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def find_hamburger(model: nn.Module) -> nn.Module:
    """The model's first Hamburger block (its ham must decompose the spatial axis)."""
    for m in model.modules():
        if isinstance(m, Hamburger) and getattr(m.ham, "spatial", False):
            return m
    raise ValueError("the model has no Hamburger block with a spatial ham: viz shows the Hamburger's decomposition")


def pca_rgb(features: Tensor, *others: Tensor) -> list[Tensor]:
    """The first three principal components of features (D, N) -> (3, N) in [0, 1]; ``others`` (D, N) are projected
    on the same components and scaled with the same range."""
    mean = features.mean(1, keepdim=True)
    _, _, v = torch.linalg.svd((features - mean).T, full_matrices=False)  # (N, D) -> right vectors (D', D)
    comps = v[:3]  # (3, D)
    proj = [comps @ (t - mean) for t in (features, *others)]  # (3, N) each
    low = proj[0].amin(1, keepdim=True)
    high = proj[0].amax(1, keepdim=True)
    return [((p - low) / (high - low + 1e-8)).clamp(0, 1) for p in proj]


@torch.no_grad()
def ham_views(model: nn.Module, image: Tensor) -> dict:
    """Run one normalised image (3, H, W) through the model; the ham's input X (D, N), reconstruction, codes (R, N),
    the error after each step, and the feature size (h, w). Uses group 0 of sample 0."""
    block = find_hamburger(model)
    captured = {}
    hooks = [
        block.lower_bread.register_forward_hook(lambda m, i, o: captured.__setitem__("h", o)),  # (1, S*D, N)
        block.register_forward_pre_hook(lambda m, i: captured.__setitem__("size", tuple(i[0].shape[2:]))),  # (h, w)
    ]
    try:
        model.eval()
        logits = model(image[None])["out"]
    finally:
        for hook in hooks:
            hook.remove()
    h = captured["h"]  # (1, S*D, N)
    if block.ham_type == "nmf":
        h = torch.relu(h)
    ham = block.ham
    dim = ham.channels // ham.groups
    x = h.reshape(ham.groups, dim, -1)[:1].float()  # (S, D, N) -> group 0 (1, D, N)
    start = ham.eval_bases[:1].float()  # (1, D, R)
    fn = SOLVER_FNS[block.ham_type]
    errors = []
    for k in range(ham.eval_steps + 1):
        dec = fn(x, start, k, grad="none")
        errors.append(((x - dec.recon).norm() / x.norm().clamp_min(1e-12)).item())
    return {
        "x": x[0],
        "recon": dec.recon[0],
        "codes": dec.codes[0],
        "errors": errors,
        "size": captured["size"],
        "pred": logits.argmax(1)[0],
    }


def _figure(image: Tensor, label: Tensor | None, views: dict, title: str, num_classes: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = views["size"]
    rank = views["codes"].shape[0]
    feat, recon = pca_rgb(views["x"], views["recon"])
    share = views["codes"] / views["codes"].abs().sum(0, keepdim=True).clamp_min(1e-12)  # (R, N): each pixel's share
    cols = max(7, min(rank, 8))  # the header row: up to five images and the error curve
    rows = 1 + (rank + cols - 1) // cols
    fig = plt.figure(figsize=(2.1 * cols, 2.2 * rows))
    grid = fig.add_gridspec(rows, cols)
    rgb = (image * STD[:, None, None] + MEAN[:, None, None]).clamp(0, 1).permute(1, 2, 0)
    panels = [
        ("input", rgb.numpy(), {}),
        (
            "prediction",
            views["pred"].numpy(),
            {"cmap": "tab20", "vmin": 0, "vmax": max(num_classes - 1, 1), "interpolation": "nearest"},
        ),
    ]
    if label is not None:
        shown = label.clone()
        shown[shown == 255] = 0
        panels.insert(1, ("ground truth", shown.numpy(), panels[1][2]))
    panels += [
        ("ham input X (PCA)", feat.T.reshape(h, w, 3).numpy(), {}),
        ("reconstruction DC (same PCA)", recon.T.reshape(h, w, 3).numpy(), {}),
    ]
    for i, (name, arr, kw) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(arr, **kw)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    used = len(panels)
    ax = fig.add_subplot(grid[used // cols, used % cols :])
    ax.plot(range(len(views["errors"])), views["errors"], marker="o")
    ax.set_xlabel("step k", fontsize=8)
    ax.set_ylabel("‖X − DC‖ / ‖X‖", fontsize=8)
    ax.tick_params(labelsize=7)
    for r in range(rank):
        ax = fig.add_subplot(grid[1 + r // cols, r % cols])
        ax.imshow(share[r].reshape(h, w).numpy(), cmap="magma", vmin=0, vmax=float(share.max()))
        ax.set_title(f"basis {r}", fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def run(*, model: nn.Module, dataset, indices: tuple[int, ...], out: Path, progress: bool = True) -> list[Path]:
    """One PNG per dataset image ``indices`` plus ``contact-sheet.png``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices:
        if not 0 <= i < len(dataset):
            raise ValueError(f"image index {i} is outside the split's {len(dataset)} images")
        image, label = dataset[i]
        views = ham_views(model, image)
        fig = _figure(image, label, views, f"{dataset.name} #{i}: the Hamburger's decomposition", dataset.num_classes)
        path = out / f"viz-{i}.png"
        save_figure(fig, path, dpi=70)
        paths.append(path)
        if progress:
            print(f"wrote {path} (reconstruction error {views['errors'][0]:.3f} -> {views['errors'][-1]:.3f})")
    paths.append(contact_sheet(paths, out / "contact-sheet.png"))
    return paths


def contact_sheet(paths: list[Path], path: Path, *, columns: int = 2) -> Path:
    """The per-image PNGs side by side, ``columns`` per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [plt.imread(p) for p in paths]
    rows = (len(images) + columns - 1) // columns
    aspect = images[0].shape[0] / images[0].shape[1]
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 7 * aspect * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        ax.imshow(img)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    return path


def photo(*, image: str = "camera", ham: str = "nmf", rank: int = 16, steps: int = 10, out: Path) -> Path:
    """The same views for a bare scikit-image photo through ``hamburger decompose``'s path (rows = D, columns =
    N): the photo, its rank-R reconstruction, each basis's share of every column's code (an R x N strip), and the
    error after each step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if ham not in SOLVERS:
        raise ValueError(f"ham must be one of {tuple(SOLVERS)}, got {ham!r}")
    x = load_image(image)
    check_rank(x, rank)
    errors, recon = decompose_errors(x, ham, rank, steps)
    fn, module = SOLVERS[ham]
    codes = fn(x[None], module(x.shape[0], rank=rank).eval_bases, steps, grad="none").codes[0]  # (R, N)
    share = codes / codes.abs().sum(0, keepdim=True).clamp_min(1e-12)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    axes[0].imshow(x.numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"{image} (D {x.shape[0]} x N {x.shape[1]})", fontsize=9)
    axes[1].imshow(recon.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title(f"{ham.upper()} R={rank}, K={steps}", fontsize=9)
    axes[2].imshow(share.numpy(), cmap="magma", aspect="auto", vmin=0, vmax=1)
    axes[2].set_title("each basis's share of each column's code", fontsize=9)
    axes[2].set_ylabel("basis r")
    axes[3].plot(range(len(errors)), errors, marker="o")
    axes[3].set_xlabel("step k")
    axes[3].set_title("‖X − DC‖ / ‖X‖", fontsize=9)
    for ax in axes[:2]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"viz-{image}-{ham}.png"
    save_figure(fig, path, dpi=80)
    return path
