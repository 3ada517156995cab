"""`hamburger bench seg`: CPU/GPU throughput (images/s) of segmentation variants, training and inference."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..engine.common import machine_info, write_results
from ..engine.measure import median_time, synchronizer
from ..seg.models import create_model


def run(
    *,
    models: tuple[str, ...] = ("hamnet_r50_d8", "nonlocal_r50_d8", "fcn_r50_d8"),
    crops: tuple[int, ...] = (256, 512),
    train_batch: int = 2,
    repeats: int = 3,
    num_classes: int = 21,
    device: str = "cpu",
    out: Path | None = Path("results/bench-seg"),
    progress: bool = True,
) -> dict:
    dev = torch.device(device)
    sync = synchronizer(dev)
    info = {**machine_info(), "device": str(dev), "train_batch": train_batch}
    rows = []
    for crop in crops:
        for name in models:
            if progress:
                print(f"{name} at {crop}x{crop} ...", flush=True)
            torch.manual_seed(0)
            model = create_model(name, num_classes=num_classes).to(dev)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            x = torch.randn(train_batch, 3, crop, crop, device=dev)
            y = torch.randint(0, num_classes, (train_batch, crop, crop), device=dev)

            def step(model=model, opt=opt, x=x, y=y):
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = F.cross_entropy(out["out"], y)
                if "aux" in out:
                    loss = loss + 0.4 * F.cross_entropy(out["aux"], y)
                loss.backward()
                opt.step()

            model.train()
            train_s = median_time(step, repeats=repeats, sync=sync)
            model.eval()
            x1 = x[:1]

            def infer(model=model, x1=x1):
                with torch.no_grad():
                    return model(x1)

            eval_s = median_time(infer, repeats=repeats, sync=sync)
            rows.append(
                {
                    "model": name,
                    "crop": crop,
                    "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                    "train_images_per_s": train_batch / train_s,
                    "eval_images_per_s": 1.0 / eval_s,
                    "train_step_s": train_s,
                    "eval_image_s": eval_s,
                }
            )
    md = [
        f"## Segmentation throughput ({info['device']}, fp32, {info['threads']} threads, train batch {train_batch})",
        "",
        "| model | crop | params (M) | train images/s | eval images/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {r['crop']} | {r['params_m']:.1f} | {r['train_images_per_s']:.3f} | "
            f"{r['eval_images_per_s']:.3f} |"
        )
    if out is not None:
        write_results(Path(out), "bench-seg", info, {"rows": rows}, md)
    if progress:
        print("\n".join(md))
    return {"machine": info, "rows": rows}
