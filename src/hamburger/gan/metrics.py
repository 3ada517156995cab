"""Offline GAN evaluation that says what it is: a Fréchet *classifier* distance, KID, classifier accuracy on
class-conditional samples and k-NN precision / recall, all in the feature space of a classifier trained here.

FID needs InceptionV3 weights, which cannot be downloaded here. Instead a small CNN is trained on the GAN's training
split and frozen; its penultimate features (``num_features``) replace Inception's in torchmetrics'
``FrechetInceptionDistance`` / ``KernelInceptionDistance``. The numbers are therefore **not FID** and are never
called so: every result records the classifier's held-out accuracy and the SHA-256 of its weights, and the sample
counts. With ``inception_weights`` (a local torch-fidelity Inception file) the real FID and IS are added; nothing is
ever downloaded.

    classifier, info = train_classifier(train_set, reference_set, seed=0)
    report = evaluate_samples(fake_images, fake_labels, reference_set, classifier)
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.checkpoint import read_weights

CLASSIFIER_KEY = "hamburger.gan_classifier"
MAX_SAMPLES = 50_000  # the usual FID count; the samples are held in memory (50k x 3 x 32² floats: 0.6 GB)
STANDING_BATCHES = 16  # batches of 64 own samples that set the BN statistics of the sampling generator


class FeatureClassifier(nn.Module):
    """A small CNN for (C, S, S) images in [-1, 1]: 3 conv stages -> global average -> ``num_features`` -> logits."""

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32) -> None:
        super().__init__()

        def stage(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(a, b, 3, padding=1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=True),
                nn.Conv2d(b, b, 3, padding=1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=True),
            )

        self.body = nn.Sequential(
            stage(in_channels, width),
            nn.MaxPool2d(2),
            stage(width, 2 * width),
            nn.MaxPool2d(2),
            stage(2 * width, 4 * width),
        )
        self.num_features = 4 * width
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))  # (B, 4w, S/4, S/4) -> (B, 4w)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ClassifierFeatures(nn.Module):
    """The frozen classifier's features as torchmetrics' feature extractor (it reads ``num_features``, so it never
    probes the module with a dummy 299x299 image)."""

    def __init__(self, classifier: FeatureClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = classifier.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x.float())


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of the state dict's tensors in key order (the classifier's identity in every result)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _shift(x: Tensor, gen: torch.Generator, pad: int = 2) -> Tensor:
    """Random translation by up to ``pad`` pixels (padding with the background value -1) and horizontal flips."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    out = padded[:, :, dy : dy + h, dx : dx + w]
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def accuracy(classifier: nn.Module, images: Tensor, labels: Tensor, *, batch: int = 500) -> float:
    classifier.eval()
    correct = 0
    for i in range(0, len(images), batch):
        correct += (classifier(images[i : i + batch].float()).argmax(1) == labels[i : i + batch]).sum().item()
    return correct / len(images)


def train_classifier(
    train_set, reference_set, *, seed: int = 0, epochs: int = 4, batch: int = 64, progress: bool = False
) -> tuple[FeatureClassifier, dict]:
    """Train the feature classifier on ``train_set`` (seeded; shifts and flips), freeze it, and return it with
    ``{"accuracy": held-out accuracy on reference_set, "sha256": weights hash, "epochs", "train_images"}``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = train_set.tensors()
    model = FeatureClassifier(train_set.channels, train_set.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(1, steps))
    model.train()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="feature classifier", unit="it")
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for i in range(len(images) // batch):
            idx = order[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(_shift(images[idx], gen)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    model.eval().requires_grad_(False)
    ref_images, ref_labels = reference_set.tensors()
    info = {
        "accuracy": accuracy(model, ref_images, ref_labels),
        "sha256": weights_hash(model),
        "epochs": epochs,
        "train_images": len(images),
        "reference_images": len(ref_images),
    }
    return model, info


@torch.no_grad()
def features(extractor: nn.Module, images: Tensor, *, batch: int = 500) -> Tensor:
    return torch.cat([extractor(images[i : i + batch]) for i in range(0, len(images), batch)]).double()


def knn_precision_recall(real: Tensor, fake: Tensor, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of feature sets (N, F) and (M, F): precision is
    the fraction of fakes inside some real sample's k-NN ball (radius: distance to its k-th nearest real
    neighbour), recall the fraction of reals inside some fake's k-NN ball among the fakes."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"k-NN precision/recall needs more than k = {k} samples per set, got {len(real)}, {len(fake)}")

    def radii(x: Tensor) -> Tensor:
        d = torch.cdist(x, x)  # (N, N)
        return d.kthvalue(k + 1, dim=1).values  # the 0th neighbour is the point itself

    def covered(ref: Tensor, r: Tensor, query: Tensor) -> float:
        d = torch.cdist(query, ref)  # (M, N)
        return (d <= r[None, :]).any(dim=1).double().mean().item()

    return covered(real, radii(real), fake), covered(fake, radii(fake), real)


def frechet_and_kid(
    extractor: nn.Module, real: Tensor, fake: Tensor, *, subsets: int = 50, subset_size: int = 1000, batch: int = 500
) -> dict:
    """Fréchet distance and KID (mean, std over ``subsets`` subsets, ``subset_size`` capped at the smaller count)
    through torchmetrics with ``extractor`` as the feature module."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=extractor, reset_real_features=True)
    with warnings.catch_warnings():  # "will save all extracted features": a few thousand 128-d vectors here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=extractor, subsets=subsets, subset_size=size)
    for metric in (fid, kid):
        for i in range(0, len(real), batch):
            metric.update(real[i : i + batch], real=True)
        for i in range(0, len(fake), batch):
            metric.update(fake[i : i + batch], real=False)
    kid_mean, kid_std = kid.compute()
    return {
        "frechet_distance": float(fid.compute()),
        "kid": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": size,
    }


def evaluate_samples(
    fake: Tensor,
    fake_labels: Tensor | None,
    reference,
    classifier: FeatureClassifier,
    *,
    classifier_info: dict,
    k: int = 3,
    inception_weights=None,
    seed: int = 0,
) -> dict:
    """Every metric of generated images ``fake`` (M, C, S, S) in [-1, 1] against the reference split."""
    torch.manual_seed(seed)  # KID's subset draws
    real, real_labels = reference.tensors()
    extractor = ClassifierFeatures(classifier)
    out = {
        "generated": len(fake),
        "reference": len(real),
        "classifier_accuracy_real": classifier_info["accuracy"],
        "classifier_sha256": classifier_info["sha256"],
        "knn_k": k,
    }
    out.update(frechet_and_kid(extractor, real, fake))
    out["knn_precision"], out["knn_recall"] = knn_precision_recall(
        features(extractor, real), features(extractor, fake), k=k
    )
    if fake_labels is not None:
        out["classifier_accuracy_fake"] = accuracy(classifier, fake, fake_labels)
        out["relative_accuracy"] = out["classifier_accuracy_fake"] / max(classifier_info["accuracy"], 1e-12)
    if inception_weights is not None:
        out.update(inception_metrics(real, fake, inception_weights))
    return out


def check_inception(weights_path) -> Path:
    """The Inception weights file exists and torch-fidelity (which reads it) is installed; raise ValueError if not."""
    import importlib.util

    path = Path(weights_path)
    if not path.is_file():
        raise ValueError(f"--inception-weights {path} not found (a local torch-fidelity Inception weights file)")
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ValueError("FID and IS from --inception-weights need torch-fidelity: pip install torch-fidelity")
    return path


def inception_metrics(real: Tensor, fake: Tensor, weights_path) -> dict:
    """Real FID and Inception Score from a local torch-fidelity Inception weights file (never downloaded)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    path = check_inception(weights_path)

    def uint8_rgb(x: Tensor) -> Tensor:
        x = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
    inception = InceptionScore(feature_extractor_weights_path=str(path))
    for i in range(0, len(real), 200):
        fid.update(uint8_rgb(real[i : i + 200]), real=True)
    for i in range(0, len(fake), 200):
        fid.update(uint8_rgb(fake[i : i + 200]), real=False)
        inception.update(uint8_rgb(fake[i : i + 200]))
    is_mean, is_std = inception.compute()
    return {"fid": float(fid.compute()), "inception_score": float(is_mean), "inception_score_std": float(is_std)}


@torch.no_grad()
def generate(
    pair,
    count: int,
    *,
    num_classes: int,
    conditional: bool,
    seed: int,
    batch: int = 250,
    device="cpu",
    standing_batches: int = STANDING_BATCHES,
) -> tuple[Tensor, Tensor | None]:
    """``count`` samples from the sampling generator (EMA when kept) in eval mode with standing BN statistics
    (:func:`hamburger.gan.models.standing_statistics`, 0: the running ones), classes balanced (label
    i % num_classes), from a private generator seeded with ``seed`` (the global RNG is not touched)."""
    if not 2 <= count <= MAX_SAMPLES:
        raise ValueError(
            f"samples must be in 2..{MAX_SAMPLES} (a distance needs two; more are held in memory), got {count}"
        )
    gen_model = pair.sampler(standing_batches=standing_batches)
    was = gen_model.training
    gen_model.eval()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(count, gen_model.z_dim, generator=g)
    labels = torch.arange(count) % num_classes if conditional else None
    out = []
    try:
        for i in range(0, count, batch):
            y = labels[i : i + batch].to(device) if labels is not None else None
            out.append(gen_model(z[i : i + batch].to(device), y).float().cpu())
    finally:
        gen_model.train(was)
    return torch.cat(out), labels


def load_classifier(path: Path) -> tuple[FeatureClassifier, dict]:
    """A classifier written by :func:`get_classifier`; its recorded hash is checked against the loaded weights."""
    tensors, metadata = read_weights(path)
    if CLASSIFIER_KEY not in metadata:
        raise ValueError(f"{path} is not a GAN feature classifier of hamburger (no {CLASSIFIER_KEY} metadata)")
    info = json.loads(metadata[CLASSIFIER_KEY])
    model = FeatureClassifier(info["channels"], info["num_classes"])
    model.load_state_dict(tensors)
    model.eval().requires_grad_(False)
    if weights_hash(model) != info["sha256"]:
        raise ValueError(f"classifier {path}: its weights do not match the hash recorded in it; delete it to retrain")
    return model, info


@torch.no_grad()
def frechet_during_training(
    pair, classifier, reference_features, *, count: int, num_classes: int, conditional: bool, device
) -> float:
    """The Fréchet classifier distance of ``count`` samples (fixed seed) against precomputed reference features:
    the training curve's point (cheaper than :func:`evaluate_samples`)."""
    fake, _ = generate(pair, count, num_classes=num_classes, conditional=conditional, seed=1, device=device)
    return frechet_from_features(reference_features, features(ClassifierFeatures(classifier), fake))


def frechet_from_features(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½) of feature sets (N, F), (M, F) in float64 (eigenvalues of Σa Σb)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eig = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * eig)
