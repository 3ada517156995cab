"""Offline GAN metrics (Fréchet classifier distance, KID, k-NN precision/recall, classifier accuracy), `gan eval`
and `gan compare` at a tiny size on the scikit-learn digits."""

import json

import pytest
import torch

from hamburger.cli import main
from hamburger.gan.data import build_gan_dataset
from hamburger.gan.eval import get_classifier
from hamburger.gan.metrics import (
    ClassifierFeatures,
    features,
    frechet_and_kid,
    frechet_from_features,
    inception_metrics,
    knn_precision_recall,
    load_classifier,
)


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "classifier.safetensors"
    model, info, reference = get_classifier("digits", None, 32, path=path, progress=False, epochs=2)
    return path, model, info, reference


def test_knn_precision_recall_by_hand():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    assert knn_precision_recall(real, real.clone(), k=1) == (1.0, 1.0)
    far = real + 100
    assert knn_precision_recall(real, far, k=1) == (0.0, 0.0)
    # real radii (k=1): 1 each, so only the fake at 0.5 is inside: precision 1/4. The fake at 0.5 has radius 9.5
    # (its nearest fake is 10), a ball that holds every real: recall 1 (the outlier sensitivity of the method)
    fake = torch.tensor([[0.5], [10.0], [10.5], [11.0]], dtype=torch.float64)
    assert knn_precision_recall(real, fake, k=1) == (0.25, 1.0)
    fake[0] = 20.0  # now every fake ball is far from the reals
    assert knn_precision_recall(real, fake, k=1) == (0.0, 0.0)
    with pytest.raises(ValueError, match="more than k = 3"):
        knn_precision_recall(real[:3], fake, k=3)


def test_classifier_is_accurate_recorded_and_checked(digits_classifier, tmp_path):
    path, model, info, reference = digits_classifier
    assert info["accuracy"] > 0.8 and len(info["sha256"]) == 64 and info["reference_images"] == len(reference) == 450
    again, again_info = load_classifier(path)
    assert again_info["sha256"] == info["sha256"]
    x = reference.tensors()[0][:8]
    torch.testing.assert_close(again(x), model(x))
    from hamburger.engine.checkpoint import read_weights, save_weights

    tensors, metadata = read_weights(path)
    tensors["head.bias"] = tensors["head.bias"] + 1
    save_weights(tensors, tmp_path / "tampered.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match="do not match the hash"):
        load_classifier(tmp_path / "tampered.safetensors")
    save_weights(tensors, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not a GAN feature classifier"):
        load_classifier(tmp_path / "plain.safetensors")


def test_distance_sanity_real_halves_noise_and_determinism(digits_classifier):
    _, model, _, reference = digits_classifier
    real = reference.tensors()[0]
    extractor = ClassifierFeatures(model)
    halves = frechet_and_kid(extractor, real[::2], real[1::2])
    noise = frechet_and_kid(
        extractor, real, torch.rand(450, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    )
    # stated bound: two disjoint halves of the 450 held-out digits (225 vs 225) are within 5, noise is 20x further
    assert halves["frechet_distance"] < 5.0 and noise["frechet_distance"] > 20 * max(halves["frechet_distance"], 1)
    assert noise["kid"] > 10 * abs(halves["kid"]) and halves["kid_subset_size"] == 225
    torch.manual_seed(0)
    again = frechet_and_kid(extractor, real[::2], real[1::2])
    torch.manual_seed(0)
    third = frechet_and_kid(extractor, real[::2], real[1::2])
    assert again == third and again["frechet_distance"] == halves["frechet_distance"]
    mine = frechet_from_features(features(extractor, real[::2]), features(extractor, real[1::2]))
    assert abs(mine - halves["frechet_distance"]) < 1e-3 * max(1.0, mine)  # == torchmetrics' FID formula


def test_inception_weights_are_never_downloaded(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        inception_metrics(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), tmp_path / "pt_inception.pth")


def test_gan_eval_and_compare_at_a_tiny_size(digits_classifier, tmp_path, capsys):
    path, *_ = digits_classifier
    run = tmp_path / "run"
    main(
        [
            "gan",
            "train",
            "--dataset",
            "digits",
            "--ch",
            "8",
            "--batch-size",
            "4",
            "--iters",
            "2",
            "--quiet",
            "--no-tensorboard",
            "--out",
            str(run),
            "--eval-classifier",
            str(path),
            "--val-interval",
            "1",
            "--eval-samples",
            "20",
        ]
    )
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["val_frechet_distance"] > 0 for r in log)
    main(["gan", "eval", "--run", str(run), "--samples", "40", "--classifier", str(path)])
    text = capsys.readouterr().out
    assert "Fréchet classifier distance" in text and "NOT FID" in text and "40 generated vs 450" in text
    report = json.loads((run / "eval.json").read_text())
    assert report["generated"] == 40 and 0 <= report["classifier_accuracy_fake"] <= 1 and "fid" not in report

    from hamburger.gan.experiments import compare as gan_compare

    out = tmp_path / "compare"
    (out).mkdir()
    (out / "classifier.safetensors").write_bytes(path.read_bytes())
    kw = dict(
        arms=("ham_nmf", "none"),
        seeds=(0, 1),
        iters=2,
        batch=4,
        out=out,
        dataset="digits",
        samples=40,
        timing_repeats=2,
        progress=False,
    )
    assert gan_compare.run(**kw, shard=(1, 2)) == {"runs": 2}  # (seed 0, none), (seed 1, none); no tables
    assert sorted(p.parent.name + p.parent.parent.name for p in out.glob("*/seed*/result.json")) == [
        "seed0none",
        "seed1none",
    ]
    assert not (out / "gan-compare.md").exists()
    result = gan_compare.run(**kw, jobs=2)  # two processes train the rest, then the tables
    call = json.loads((out / "shards.json").read_text())  # what they read: the call, not a rebuilt command line
    assert call["entry"] == "hamburger.gan.experiments.compare:run" and call["kwargs"]["arms"] == ["ham_nmf", "none"]
    assert (call["kwargs"]["batch"], call["kwargs"]["samples"], call["kwargs"]["curve_points"]) == (4, 40, 6)
    assert "ham_nmf/seed1" in (out / "shard0of2.log").read_text()  # shard 0 of 2: (seed 0, ham), (seed 1, ham)
    md = (out / "gan-compare.md").read_text()
    assert "| Hamburger (NMF) |" in md and "| no context block |" in md and "not FID" in md and "## Checks" in md
    for name in ("gan-compare.json", "gan-compare-curves.png", "grid-ham_nmf.png", "grid-none.png"):
        assert (out / name).stat().st_size > 500, name
    assert set(result["step_seconds"]) == {"ham_nmf", "none"} and result["costs"]["none"]["gflops_g"] > 0
    assert result["costs"]["ham_nmf"]["params_g"] > result["costs"]["none"]["params_g"]
    assert len(result["rows"]["ham_nmf"]) == 2 and result["rows"]["none"][1]["curve"]
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/result.json")}
    untrained, times = (out / "untrained.json").stat().st_mtime_ns, (out / "step_times.json").stat().st_mtime_ns
    gan_compare.run(**kw)  # resumable: nothing retrained, nothing recomputed
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/result.json")} == done
    assert (out / "untrained.json").stat().st_mtime_ns == untrained
    assert (out / "step_times.json").stat().st_mtime_ns == times
    # another recipe: the runs' results are refused by name; the derived caches would be recomputed, not reused
    with pytest.raises(ValueError, match=r"another recipe \(samples: 40 -> 30\)"):
        gan_compare.run(**{**kw, "samples": 30})
    with pytest.raises(ValueError, match=r"another recipe \(batch_size: 4 -> 8; iters: 2 -> 3\)"):
        gan_compare.run(**{**kw, "iters": 3, "batch": 8})
    with pytest.raises(SystemExit, match="unknown arms"):
        main(["gan", "compare", "--arms", "ham_nmf,transformer", "--out", str(out)])


def test_reference_split_of_a_gan_dataset_is_what_metrics_compare_against():
    ref = build_gan_dataset("digits", None, "reference")
    images, labels = ref.tensors()
    assert images.shape == (450, 1, 32, 32) and labels.bincount().min() >= 44
