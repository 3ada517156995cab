"""The gradient family (one-step, bptt, none, truncated:k, phantom:k:λ) through the modules, configs and flags."""

import pytest
import torch

import hamburger as hb
from hamburger.cli import build_parser
from hamburger.engine.config import config_from_args
from hamburger.gan.config import GANTrainConfig
from hamburger.gan.models import create_gan
from hamburger.seg.config import SegTrainConfig
from hamburger.seq.config import SeqTrainConfig


@pytest.mark.parametrize("ham", ["nmf", "vq", "cd"])
def test_every_estimator_trains_the_block_and_truncated_k_equals_bptt(ham):
    x = torch.rand(2, 8, 5, 4)
    grads = {}
    for grad in ("bptt", "truncated:3", "truncated:1", "phantom:2:0.5", "one-step"):
        torch.manual_seed(0)
        block = hb.Hamburger(8, ham=ham, rank=3, train_steps=3, init="fixed", grad=grad)
        block(x).square().sum().backward()
        assert all(p.grad is not None for p in block.parameters() if p.requires_grad), grad
        grads[grad] = block.lower_bread.weight.grad.clone()
    torch.testing.assert_close(grads["truncated:3"], grads["bptt"], rtol=0, atol=0)
    assert not torch.equal(grads["truncated:1"], grads["bptt"])


def test_bad_estimators_are_refused_where_they_are_given():
    assert hb.NMF(8, grad="truncated:7").grad == "truncated:7"  # k beyond K: all K steps (BPTT), not an error
    with pytest.raises(ValueError, match="grad must be one of"):
        hb.Hamburger(8, grad="truncated")
    with pytest.raises(ValueError, match=r"λ must be in \(0, 1\]"):
        SegTrainConfig(ham_grad="phantom:2:2")
    with pytest.raises(ValueError, match="grad must be one of"):
        GANTrainConfig(ham_grad="full")
    with pytest.raises(ValueError, match="ham_grad: grad of a token mixer must be one of"):
        SeqTrainConfig(ham_grad="phantom:1:0.5")  # the token mixer: one-step, bptt and truncated:k
    with pytest.raises(ValueError, match="unrolls more steps than the solve has"):
        SeqTrainConfig(ham_grad="truncated:7", ham_steps=6)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--ham-grad", "truncated:0"])


def test_the_flags_reach_the_models():
    parser = build_parser()
    args = parser.parse_args(["seg", "train", "--ham-grad", "phantom:2:0.5"])
    assert config_from_args(SegTrainConfig, args).ham_grad == "phantom:2:0.5"
    assert parser.parse_args(["demo", "--ham-grad", "truncated:2"]).ham_grad == "truncated:2"
    assert parser.parse_args(["seg", "compare", "--ham-grad", "bptt"]).ham_grad == "bptt"
    assert parser.parse_args(["gan", "compare", "--ham-grad", "truncated:3"]).ham_grad == "truncated:3"
    assert parser.parse_args(["seq", "compare", "--ham-grad", "bptt"]).ham_grad == "bptt"
    gan_args = parser.parse_args(["gan", "train", "--ham-grad", "truncated:2"])
    assert config_from_args(GANTrainConfig, gan_args).ham_grad == "truncated:2"
    pair = create_gan("gan32", ch=4, num_classes=3, arm="ham_nmf", grad="truncated:2")
    assert pair.generator.context.ham.grad == "truncated:2"
    assert pair.discriminator.context.ham.grad == "truncated:2"


def test_the_training_gradient_does_not_stop_evaluation_but_a_damped_phantom_does(tmp_path):
    """Weights trained with any gradient load into the same model built with another one (the gradient does not
    change the outputs), except a damped phantom gradient (λ < 1), which changes the forward."""
    from hamburger.engine.checkpoint import load_model_weights, model_identity, save_weights

    def block(grad):
        torch.manual_seed(0)
        return hb.Hamburger(8, rank=3, train_steps=3, grad=grad)

    for trained, evaluated in (("bptt", "one-step"), ("truncated:2", "none"), ("phantom:2:1", "one-step")):
        path = tmp_path / f"{trained}.safetensors"
        model = block(trained)
        save_weights(model.state_dict(), path, metadata=model_identity(model, name="b", num_classes=1))
        other = block(evaluated)
        load_model_weights(other, path, model_identity(other, name="b", num_classes=1))
    model, path = block("phantom:2:0.5"), tmp_path / "p.safetensors"
    save_weights(model.state_dict(), path, metadata=model_identity(model, name="b", num_classes=1))
    other = block("one-step")
    with pytest.raises(ValueError, match=r"ham.grad = 'phantom:2:0.5', but this model has 'one-step'"):
        load_model_weights(other, path, model_identity(other, name="b", num_classes=1))


def test_bench_grad_at_a_tiny_size(tmp_path):
    from hamburger.bench import grad as grad_bench

    res = grad_bench.run(
        estimators=("one-step", "truncated:1", "bptt"),
        steps=(2, 6),
        sizes=(6,),
        channels=8,
        rank=2,
        repeats=1,
        tiny=False,
        out=tmp_path,
        progress=False,
    )
    rows = {(r["grad"], r["steps"]): r for r in res["rows"]}
    assert len(rows) == 6 and all(r["ms"] > 0 and r["peak_mib"] >= 0 for r in rows.values())
    assert rows["bptt", 6]["peak_mib"] > rows["one-step", 6]["peak_mib"]  # BPTT's activations grow with K
    assert 0 < res["residual"][6] < res["residual"][2] < 1  # the solve is still moving, less after more steps
    assert "| block | 6 | 6 |" in (tmp_path / "bench-grad.md").read_text()
    assert (tmp_path / "bench-grad.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unrolls more steps than K"):
        grad_bench.run(
            estimators=("truncated:3",),
            steps=(2,),
            sizes=(6,),
            channels=8,
            rank=2,
            tiny=False,
            out=None,
            progress=False,
        )


def test_a_gradient_is_a_typed_value_parsed_once():
    """``GradSpec`` is the gradient inside the library: ``str()`` gives the flag back, a ``GradSpec`` passes the parser
    unchanged, the block's and the mixer's gradients go through the one parser (each with its kinds), and a ham keeps
    the parsed value (its ``grad`` is the spelling)."""
    from hamburger.functional import GradSpec, parse_grad
    from hamburger.mixer import mixer_grad

    for text in ("one-step", "bptt", "none", "implicit", "implicit:2", "truncated:3", "phantom:2:0.5"):
        spec = parse_grad(text)
        assert str(spec) == text and parse_grad(spec) is spec
    assert str(mixer_grad("chunkwise")) == "chunkwise" and mixer_grad(GradSpec("truncated", 2)).k == 2
    with pytest.raises(ValueError, match="grad must be one of"):
        parse_grad("chunkwise")  # the mixer's kind, not a ham's
    with pytest.raises(ValueError, match="grad of a token mixer must be one of"):
        mixer_grad("implicit")
    with pytest.raises(ValueError, match="k must be >= 1"):
        parse_grad(GradSpec("truncated", 0))
    ham = hb.NMF(8, rank=2, grad=GradSpec("phantom", 2, 0.5))
    assert ham.grad == "phantom:2:0.5" and ham._grad == GradSpec("phantom", 2, 0.5)
    ham.grad = "truncated:1"
    assert ham._grad == GradSpec("truncated", 1)
    with pytest.raises(ValueError, match="VQ has no implicit gradient"):
        hb.VQ(8, rank=2).grad = "implicit"
