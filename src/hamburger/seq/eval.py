"""`hamburger seq eval`: a run's test metric — recall accuracy (MQAR) or bits per character beside the unigram and
bigram models' (LM, with the corpus hash) — and, for the LM, text generated with the recurrent form."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..engine.checkpoint import file_sha256, load_model_weights
from ..engine.config import load_run_config
from .config import SeqTrainConfig
from .data import ngram_bits_per_char, sympy_corpus
from .train import build_model, evaluate_model, identity_of, split_data


def load_run(run: Path, weights: Path | None = None):
    """(model with the run's weights, its SeqTrainConfig) from a ``seq train`` run folder."""
    run = Path(run)
    config = load_run_config(run, SeqTrainConfig, "seq train")
    model = build_model(config)
    weights = Path(weights) if weights else run / "best.safetensors"
    load_model_weights(model, weights, identity_of(model, config))
    return model.eval(), config


def baselines() -> dict:
    """The character corpus's hash and file counts and the unigram / bigram test bits per character."""
    corpus = sympy_corpus()
    return {
        "corpus_sha256": corpus["sha256"],
        "corpus_files": corpus["files"],
        "corpus_chars": {k: len(corpus[k]) for k in ("train", "val", "test")},
        "unigram_bpc": ngram_bits_per_char(corpus["train"], corpus["test"], order=1),
        "bigram_bpc": ngram_bits_per_char(corpus["train"], corpus["test"], order=2),
    }


def test_metrics(model, config: SeqTrainConfig, *, device="cpu") -> dict:
    """The test split's metric (MQAR: 1,000 generated sequences; LM: every test character), plus the LM
    baselines."""
    metrics = evaluate_model(model.to(device), split_data(config, "test"), config.task, device=device)
    if config.task == "lm":
        metrics.update(baselines())
    return metrics


def evaluate_run(run: Path, *, weights: Path | None = None, generate: int = 200) -> dict:
    """Test metrics of a run, written to ``<run>/eval.json``; ``text`` is a printable summary."""
    model, config = load_run(run, weights)
    metrics = test_metrics(model, config)
    lines = [f"{config.task} · mixer {config.mixer} · N {config.seq_len}"]
    if config.task == "mqar":
        lines.append(f"test recall accuracy {100 * metrics['accuracy']:.1f}% ({config.pairs} pairs)")
    else:
        lines.append(
            f"test bits per character {metrics['bpc']:.3f} (unigram {metrics['unigram_bpc']:.3f}, bigram "
            f"{metrics['bigram_bpc']:.3f}; corpus sha256 {metrics['corpus_sha256'][:16]}…)"
        )
        prompt = torch.tensor([list(b"def ")], dtype=torch.int64)
        length = min(generate, config.seq_len - prompt.shape[1])
        out = model.generate(prompt, length)  # the recurrent form, greedy
        metrics["sample"] = bytes(out[0].tolist()).decode("utf-8", errors="replace")
        lines += ["generated (recurrent form, greedy):", metrics["sample"]]
    used = Path(weights) if weights else Path(run) / "best.safetensors"
    metrics.update(weights=str(used), weights_sha256=file_sha256(used))
    (Path(run) / "eval.json").write_text(json.dumps(metrics, indent=1))
    metrics["text"] = "\n".join(lines)
    return metrics
