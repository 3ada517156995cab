"""`hamburger gan eval`: every offline metric of one trained run (:mod:`hamburger.gan.metrics`), with the
feature classifier trained once per dataset and cached beside the data (or where ``--classifier`` says)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..data.silhouettes import default_root
from ..engine.checkpoint import file_sha256, save_weights
from .data import build_gan_dataset
from .metrics import CLASSIFIER_KEY, check_inception, evaluate_samples, generate, load_classifier, train_classifier
from .train import load_run, resolution_of


def default_classifier_path(dataset: str, data_root, size: int) -> Path:
    """``<data cache>/gan-classifier-<dataset>-<size>[-<hash of data_root>].safetensors``."""
    tag = f"-{hashlib.sha256(str(Path(data_root).resolve()).encode()).hexdigest()[:8]}" if data_root else ""
    return default_root() / f"gan-classifier-{dataset}-{size}{tag}.safetensors"


def get_classifier(
    dataset: str, data_root, size: int, *, path: Path | None = None, progress: bool = True, epochs: int = 4
):
    """Load the feature classifier at ``path`` (default :func:`default_classifier_path`), or train it on the
    dataset's training split (seed 0), record its held-out accuracy and hash, and save it there."""
    path = Path(path) if path else default_classifier_path(dataset, data_root, size)
    reference = build_gan_dataset(dataset, data_root, "reference", size=size)
    if path.is_file():  # the training split is read only to train one
        model, info = load_classifier(path)
        if (info["dataset"], info["size"], info["num_classes"]) != (dataset, size, reference.num_classes):
            raise ValueError(f"classifier {path} was trained for {info['dataset']} at {info['size']}², not {dataset}")
        return model, info, reference
    train_set = build_gan_dataset(dataset, data_root, "train", size=size)
    if progress:
        print(f"training the feature classifier on {dataset} ({len(train_set)} images) -> {path}", flush=True)
    model, info = train_classifier(train_set, reference, seed=0, epochs=epochs, progress=progress)
    info.update(dataset=dataset, size=size, channels=train_set.channels, num_classes=train_set.num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model.state_dict(), path, metadata={CLASSIFIER_KEY: json.dumps(info)})
    return model, info, reference


def evaluate_run(
    run: Path,
    *,
    weights: Path | None = None,
    samples: int = 2000,
    seed: int = 0,
    classifier: Path | None = None,
    inception_weights=None,
    progress: bool = True,
) -> dict:
    """Every metric of the run's generator (``last.safetensors`` unless ``weights``), written to ``eval.json``."""
    if inception_weights is not None:  # before the minutes of sampling and the other metrics
        check_inception(inception_weights)
    pair, config, num_classes = load_run(run, weights)
    size = resolution_of(config.model)
    model, info, reference = get_classifier(config.dataset, config.data_root, size, path=classifier, progress=progress)
    fake, labels = generate(pair, samples, num_classes=num_classes, conditional=config.conditional, seed=seed)
    report = evaluate_samples(
        fake, labels, reference, model, classifier_info=info, inception_weights=inception_weights, seed=seed
    )
    used = Path(weights) if weights else Path(run) / "last.safetensors"
    report.update(
        run=str(run),
        arm=config.arm,
        seed_of_samples=seed,
        classifier_test_images=info["reference_images"],
        weights=str(used),
        weights_sha256=file_sha256(used),
    )
    (Path(run) / "eval.json").write_text(json.dumps(report, indent=1))
    return report


def format_report(report: dict) -> str:
    lines = [
        f"Fréchet classifier distance {report['frechet_distance']:.2f} (NOT FID: features of a classifier trained "
        f"here, held-out accuracy {100 * report['classifier_accuracy_real']:.1f}%, sha256 "
        f"{report['classifier_sha256'][:12]}…)",
        f"KID {report['kid']:.4f} ± {report['kid_std']:.4f} (subsets of {report['kid_subset_size']})",
        f"k-NN precision {report['knn_precision']:.3f}, recall {report['knn_recall']:.3f} (k = {report['knn_k']})",
    ]
    if "classifier_accuracy_fake" in report:
        fake, rel = 100 * report["classifier_accuracy_fake"], 100 * report["relative_accuracy"]
        lines.append(
            f"classifier accuracy on class-conditional samples {fake:.1f}% ({rel:.0f}% of its accuracy on "
            "real held-out images)"
        )
    if "fid" in report:
        lines.append(f"FID {report['fid']:.2f}, Inception Score {report['inception_score']:.2f}")
    lines.append(f"counts: {report['generated']} generated vs {report['reference']} held-out reference images")
    return "\n".join(lines)
