"""HamMixer and the sequence stacks: causality, parallel == recurrent, masks, any N, gradients, compile, determinism."""

import pytest
import torch

import hamburger as hb
from conftest import assert_ignores_the_future, stepped
from hamburger.sequence import MIXERS, RECURRENT, create_mixer


def _tokens(b=2, n=11, c=16, seed=0):
    return torch.randn(b, n, c, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ham", ["nmf", "vq"])
@pytest.mark.parametrize("n", [3, 8, 11])  # N < L, N a multiple of L, N not a multiple
def test_causal_outputs_ignore_the_future(ham, n):
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=4).eval()
    x = _tokens(n=n)
    assert_ignores_the_future(mixer, x)
    y = mixer(x)
    # and it does mix: tokens of an earlier chunk move a later token's output
    if n > 4:
        earlier = x.clone()
        earlier[:, 0] += 3.0
        assert not torch.allclose(mixer(earlier)[:, -1], y[:, -1])


@pytest.mark.parametrize(
    "ham, norm, memory",
    [
        ("nmf", "unit", "dict"),
        ("nmf", "none", "dict"),
        ("vq", "unit", "dict"),
        ("nmf", "unit", "stats"),
        ("vq", "unit", "stats"),
    ],
)
@pytest.mark.parametrize("n, chunk", [(11, 4), (3, 4), (8, 1), (9, 3)])
def test_recurrent_form_equals_the_parallel_form(ham, norm, memory, n, chunk):
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=chunk, norm=norm, memory=memory).eval()
    x = _tokens(n=n)
    torch.testing.assert_close(stepped(mixer, x), mixer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_padded_tokens_change_nothing(ham, causal):
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=causal, chunk=4).eval()
    x = _tokens(n=9)
    padded = torch.cat([x, torch.randn(2, 5, 16)], 1)
    mask = torch.zeros(2, 14, dtype=torch.bool)
    mask[:, :9] = True
    y = mixer(padded, mask)
    torch.testing.assert_close(y[:, :9], mixer(x), rtol=1e-5, atol=1e-5)  # right padding == no padding
    other = padded.clone()
    other[:, 9:] = 100 * torch.randn(2, 5, 16)
    torch.testing.assert_close(mixer(other, mask)[:, :9], y[:, :9], rtol=0, atol=0)
    # padding inside the sequence: the padded values still do not matter
    mask[0, 2] = False
    inner = padded.clone()
    inner[0, 2] = 50.0
    torch.testing.assert_close(mixer(inner, mask)[mask], mixer(padded, mask)[mask], rtol=0, atol=0)


@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_non_causal_mixer_is_permutation_equivariant_and_global(ham):
    mixer = hb.HamMixer(16, ham=ham, rank=4).eval()
    x = _tokens(n=10)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mixer(x[:, perm]), mixer(x)[:, perm], rtol=1e-5, atol=1e-5)
    moved = x.clone()
    moved[:, -1] += 3.0
    assert not torch.allclose(mixer(moved)[:, 0], mixer(x)[:, 0])  # the last token reaches the first


@pytest.mark.parametrize(
    "name, causal",
    [(n, c) for c in (False, True) for n in MIXERS if c or n not in RECURRENT],  # those: causal only
)
def test_every_mixer_in_a_stack_gets_gradients_and_is_deterministic(name, causal):
    torch.manual_seed(0)
    cls = hb.HamDecoder if causal else hb.HamEncoder
    kw = {"rank": 4, "chunk": 4} if name.startswith("ham_") else {}
    model = cls(16, depth=2, mixer=name, heads=2, max_len=32, **kw)
    x = _tokens(n=13)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 10:] = False
    model(x, mask).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if name == "none":  # no mixer: its blocks' first LayerNorm feeds nothing
        missing = [n for n in missing if "norm1" not in n]
    assert not missing, missing
    model.eval()
    assert torch.equal(model(x, mask), model(x, mask))


@pytest.mark.parametrize("name", MIXERS)
def test_decoder_recurrent_form_matches_teacher_forcing(name):
    kw = {"rank": 4, "chunk": 3} if name.startswith("ham_") else {}
    model = hb.HamDecoder(16, depth=2, mixer=name, heads=2, max_len=16, **kw).eval()
    x = _tokens(n=10)
    torch.testing.assert_close(stepped(model, x), model(x), rtol=1e-4, atol=1e-4)


def test_arms_have_the_same_parameter_count():
    counts = {
        m: sum(p.numel() for p in hb.HamTransformerBlock(64, mixer=m, heads=4, causal=m in RECURRENT).parameters())
        for m in MIXERS
    }
    counts["ham_nmf W 32"] = sum(p.numel() for p in hb.HamTransformerBlock(64, mixer="ham_nmf", width=32).parameters())
    delta = hb.HamTransformerBlock(64, mixer="ham_nmf", heads=4, causal=True, fit="delta", query=True)
    counts["ham_nmf delta, query"] = sum(p.numel() for p in delta.parameters())
    assert max(counts.values()) / min(counts.values()) < 1.01, counts


@pytest.mark.parametrize("ham", ["nmf", "vq"])
@pytest.mark.parametrize("causal", [False, True])
def test_compile_matches_eager(ham, causal):
    torch._dynamo.reset()
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=causal, chunk=4).eval()
    x = _tokens(n=10)
    torch.testing.assert_close(torch.compile(mixer, dynamic=False)(x), mixer(x), rtol=1e-5, atol=1e-5)


def test_bptt_and_one_step_agree_forward_and_differ_backward():
    x = _tokens(n=8).requires_grad_()
    one = hb.HamMixer(16, rank=4, causal=True, chunk=4, grad="one-step")
    full = hb.HamMixer(16, rank=4, causal=True, chunk=4, grad="bptt")
    assert hb.HamMixer(16).grad == "chunkwise"  # the default, chosen by the recall and stability evidence
    full.load_state_dict(one.state_dict())
    torch.testing.assert_close(one(x), full(x))
    g1 = torch.autograd.grad(one(x).sum(), x)[0]
    g2 = torch.autograd.grad(full(x).sum(), x)[0]
    assert not torch.allclose(g1, g2)


def _grads(mixer, x, loss):
    x = x.clone().requires_grad_()
    return torch.autograd.grad(loss(mixer(x)), x)[0]


@pytest.mark.parametrize("ham", ["nmf", "vq"])
@pytest.mark.parametrize("causal, memory", [(True, "dict"), (True, "stats"), (False, "stats")])
def test_truncated_k_equals_bptt_and_every_gradient_keeps_the_forward(ham, causal, memory):
    x = _tokens(n=12, seed=3).abs()
    mixers = {
        g: hb.HamMixer(16, ham=ham, rank=4, steps=3, heads=2, causal=causal, chunk=4, grad=g, memory=memory).double()
        for g in ("one-step", "bptt", "truncated:3", "truncated:1", "chunkwise")
    }
    for m in mixers.values():
        m.load_state_dict(mixers["bptt"].state_dict())
    x = x.double()
    ref = mixers["bptt"](x)
    for g, m in mixers.items():
        torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12, msg=g)  # the gradient never moves the forward
    loss = lambda y: (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum()  # noqa: E731
    grads = {g: _grads(m, x, loss) for g, m in mixers.items()}
    torch.testing.assert_close(grads["truncated:3"], grads["bptt"], rtol=0, atol=0)  # truncated:K is BPTT
    if ham == "vq" and causal:  # each causal VQ solve is one closed-form step: any k is all of it
        torch.testing.assert_close(grads["truncated:1"], grads["bptt"], rtol=0, atol=0)
    else:
        assert not torch.allclose(grads["truncated:1"], grads["bptt"])
    if ham == "nmf":  # VQ has no code iterations: its truncated:1 and one-step differ in the dictionary only
        assert not torch.allclose(grads["truncated:1"], grads["one-step"])
    if causal and memory == "dict":  # the chain across chunks cut: not BPTT's, though every solve is differentiated
        assert not torch.allclose(grads["chunkwise"], grads["bptt"])
    else:  # one solve, or dictionaries rebuilt from the statistics: no chain to cut
        torch.testing.assert_close(grads["chunkwise"], grads["bptt"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("memory", ["dict", "stats"])
@pytest.mark.parametrize("ham", ["nmf", "vq"])
@pytest.mark.parametrize("grad", ["bptt", "chunkwise", "truncated:1", "truncated:2", "one-step"])
def test_a_late_loss_reaches_earlier_chunks_and_never_later_ones(ham, grad, memory):
    """Issue 27: under every gradient that reaches the dictionary, the loss at the last chunk has a gradient on the
    tokens of every earlier chunk; under one-step (the dictionary a constant) on its own chunk only; never on a later
    token. With either memory: the previous dictionary or the prefix statistics alone."""
    mixer = hb.HamMixer(16, ham=ham, rank=4, steps=3, causal=True, chunk=4, grad=grad, memory=memory)
    x = _tokens(n=16, seed=5).requires_grad_()
    for t in (9, 15):  # a position in the third chunk, and the last one
        g = torch.autograd.grad(mixer(x)[:, t].pow(2).sum(), x)[0].abs().sum(dim=(0, 2))  # (N,) per position
        assert torch.all(g[t + 1 :] == 0), (grad, t)  # causal: nothing from the future
        own = t // 4 * 4
        assert g[own : t + 1].sum() > 0
        earlier = g[:own].reshape(-1, 4).sum(1)  # per earlier chunk
        if grad == "one-step":
            assert torch.all(earlier == 0), earlier
        else:
            assert torch.all(earlier > 0), (grad, t, earlier)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="ham must be one of"):
        hb.HamMixer(16, ham="cd")
    with pytest.raises(ValueError, match="divisible by heads"):
        hb.HamMixer(16, heads=3)
    with pytest.raises(ValueError, match=r"width \(10\) must be divisible by heads"):
        hb.HamMixer(16, width=10, heads=4)
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        hb.HamMixer(16, width=0)
    with pytest.raises(ValueError, match=r"expects \(B, N, 16\)"):
        hb.HamMixer(16)(torch.randn(2, 16))
    with pytest.raises(ValueError, match="empty sequence"):
        hb.HamMixer(16)(torch.randn(2, 0, 16))
    with pytest.raises(ValueError, match="mask must be a bool"):
        hb.HamMixer(16)(torch.randn(2, 5, 16), torch.ones(2, 5))
    with pytest.raises(ValueError, match="causal mixer"):
        hb.HamMixer(16).init_state(1)
    with pytest.raises(ValueError, match="grad of a token mixer must be one of"):
        hb.HamMixer(16, grad="implicit")
    with pytest.raises(ValueError, match="norm must be one of"):
        hb.HamMixer(16, norm="l1")
    with pytest.raises(ValueError, match="unrolls more steps"):
        hb.HamMixer(16, steps=2, grad="truncated:3")
    with pytest.raises(ValueError, match="longer than max_len"):
        hb.HamEncoder(16, max_len=4)(torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match="unknown mixer"):
        create_mixer("mamba", 16)


def test_recurrent_state_sizes_are_measured_and_the_ham_is_within_linear_attentions():
    """Issue 27's fair state: softmax's KV cache grows with N (2·N·C), linear attention holds d² + d per head, the
    Ham its prefix statistics and the pending chunk's tokens (D·R + R² + (L − 1)·D per head; with a carried
    dictionary, memory="dict", 2·D·R + R²) — not more than linear's."""
    from hamburger.sequence import state_floats

    assert state_floats(create_mixer("softmax", 64, causal=True), 10) == 2 * 10 * 64
    assert state_floats(create_mixer("linear", 64, heads=2, causal=True), 10) == 2 * (32 * 32 + 32)
    ham = create_mixer("ham_nmf", 64, causal=True, rank=16, chunk=4)
    assert state_floats(ham, 3) == state_floats(ham, 9) == 64 * 16 + 16 * 16 + 3 * 64  # constant in N from L − 1
    assert state_floats(ham, 2) == 64 * 16 + 16 * 16 + 2 * 64
    carried = create_mixer("ham_nmf", 64, causal=True, rank=16, chunk=4, memory="dict")
    assert state_floats(carried, 3) == state_floats(carried, 9) == 2 * 64 * 16 + 16 * 16
    assert state_floats(ham, 9) <= state_floats(create_mixer("linear", 64, causal=True), 9)
    assert state_floats(create_mixer("none", 64, causal=True), 5) == 0
    # R 32 at C 64 and chunk 16 fits linear attention's 4,160: 2,048 + 1,024 + 15 · 64 = 4,032
    wide = create_mixer("ham_nmf", 64, causal=True, rank=32, chunk=16)
    linear = state_floats(create_mixer("linear", 64, causal=True), 9)
    assert state_floats(wide, 40) == 64 * 32 + 32 * 32 + 15 * 64 <= linear
    # a narrower solve (W 32) holds more bases in the same state
    narrow = create_mixer("ham_nmf", 64, causal=True, rank=40, width=32, chunk=4)
    assert state_floats(narrow, 9) == 32 * 40 + 40 * 40 + 3 * 32


@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_a_narrow_solve_is_causal_and_its_recurrent_form_equals_the_parallel_one(ham):
    """width W != C: C -> W in, the solve on W/S channels per head, W -> C out; the twin forms still agree."""
    mixer = hb.HamMixer(16, ham=ham, rank=6, width=8, heads=2, causal=True, chunk=3).eval()
    assert mixer.in_proj.weight.shape == (8, 16) and mixer.out_proj.weight.shape == (16, 8)
    assert mixer.start.shape == (2, 4, 6) and "width=8" in repr(mixer)
    x = _tokens(n=10)
    y = mixer(x)
    assert y.shape == x.shape
    torch.testing.assert_close(stepped(mixer, x), y, rtol=1e-5, atol=1e-5)
    later = x.clone()
    later[:, 6:] += 1.0
    torch.testing.assert_close(mixer(later)[:, :6], y[:, :6], rtol=0, atol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_keys_code_a_token_by_its_key_channels_and_read_out_every_channel(ham, causal):
    """keys=Dk: a token's code is solved from its first Dk channels against the dictionary's first Dk rows; the
    read-out D·c returns all D rows. keys=D is the plain mixer."""
    torch.manual_seed(0)
    plain = hb.HamMixer(8, ham=ham, rank=4, causal=causal, chunk=3).eval()
    full = hb.HamMixer(8, ham=ham, rank=4, keys=8, causal=causal, chunk=3).eval()
    full.load_state_dict(plain.state_dict())
    x = _tokens(n=9, c=8)
    torch.testing.assert_close(full(x), plain(x), rtol=0, atol=0)
    keyed = hb.HamMixer(8, ham=ham, rank=4, keys=3, causal=causal, chunk=3).eval()
    assert "keys=3" in repr(keyed)
    with torch.no_grad():  # the in projection the identity: token channels are the solve's channels
        keyed.in_proj.weight.copy_(torch.eye(8))
        keyed.in_proj.bias.zero_()
    x = x.abs() + 0.1  # positive, so NMF's ReLU keeps every channel
    d = keyed._start(2, x)  # (G, D, R): the last token's chunk is the first one's in a 3-token sequence
    h = x[:, :3]
    codes = keyed._code(h, d)
    moved = h.clone()
    moved[..., 3:] *= 5.0  # the value channels: not what codes a token
    torch.testing.assert_close(keyed._code(moved, d), codes, rtol=0, atol=0)
    moved[..., :3] = moved.flip(1)[..., :3]  # the first and last tokens swap keys: their codes swap
    torch.testing.assert_close(keyed._code(moved, d), codes.flip(1), rtol=1e-6, atol=1e-6)
    assert (codes[:, 0] - codes[:, 2]).abs().max() > 1e-3
    # the read-out returns the value rows too: a token with the same key but other values gets the same output
    # when the dictionary does not depend on it (the causal form's first chunk)
    if causal:
        y = keyed(x[:, :3])
        other = x[:, :3].clone()
        other[..., 3:] += 1.0
        torch.testing.assert_close(keyed(other), y, rtol=0, atol=0)
        torch.testing.assert_close(stepped(keyed, x), keyed(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"keys must be an integer in \[1, width/heads = 4\]"):
        hb.HamMixer(8, heads=2, keys=5)


def test_ridge_fit_recovers_the_dictionary_and_keeps_the_twin_forms_equal():
    """fit="ridge": D = (A + λ·D_start)(B + λI)⁻¹ clipped at zero — the least-squares dictionary of the prefix. Tokens
    made exactly as X = D_true·C give back D_true at a small λ; with no statistics the start; the recurrent form
    equals the parallel one and a late loss reaches every earlier chunk."""
    from hamburger.mixer import _ridge_dict

    gen = torch.Generator().manual_seed(0)
    d_true = torch.rand(2, 8, 4, generator=gen)  # (G, D, R)
    codes = torch.rand(2, 4, 30, generator=gen)  # (G, R, T): 30 tokens with overlapping codes
    x = d_true @ codes  # (G, D, T)
    start = torch.rand(2, 8, 4, generator=gen)
    fitted = _ridge_dict(start, x @ codes.mT, codes @ codes.mT, 1e-6)
    torch.testing.assert_close(fitted, d_true, rtol=1e-3, atol=1e-3)
    assert torch.equal(_ridge_dict(start, torch.zeros(2, 8, 4), torch.zeros(2, 4, 4), 1.0), start)
    mixer = hb.HamMixer(16, rank=4, heads=2, causal=True, chunk=3, fit="ridge").eval()
    assert "fit='ridge', ridge=1.0" in repr(mixer)
    tokens = _tokens(n=11)
    torch.testing.assert_close(stepped(mixer, tokens), mixer(tokens), rtol=1e-5, atol=1e-5)
    tokens.requires_grad_(True)
    mixer.train()(tokens)[:, -1].sum().backward()  # position 10, chunk 3: every earlier chunk, not position 9
    reach = tokens.grad.abs().sum((0, 2))
    assert (reach[:9] > 0).all() and reach[9] == 0
    with pytest.raises(ValueError, match="fit must be one of"):
        hb.HamMixer(16, fit="lsq")
    with pytest.raises(ValueError, match="ridge must be > 0"):
        hb.HamMixer(16, fit="ridge", ridge=0.0)
    for ham, causal in (("vq", True), ("nmf", False)):
        with pytest.raises(ValueError, match="fits the causal NMF mixer's dictionary"):
            hb.HamMixer(16, ham=ham, causal=causal, fit="ridge")


@pytest.mark.parametrize("grad", ["chunkwise", "truncated:2", "bptt"])
def test_a_short_run_at_n_1024_stays_finite(grad):
    """Issue 27: finite losses and gradients over a short training run at N 1024 (64 chunks) on random tokens, and the
    last position's loss reaches the first chunk's tokens (the full 1,000-step check: benchmarks/long_sequences.py)."""
    from hamburger.seq.model import SequenceModel

    torch.manual_seed(0)
    model = SequenceModel(16, dim=16, depth=1, mixer="ham_nmf", max_len=1024, rank=8, steps=3, chunk=16, grad=grad)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    tokens = torch.randint(0, 16, (2, 1025), generator=torch.Generator().manual_seed(1))
    for _ in range(4):
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 16), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
    x = model.embed(tokens[:, :-1]).detach().requires_grad_()
    y = model.head(model.decoder(x))
    (g,) = torch.autograd.grad(y[:, -1].square().sum(), x)
    assert g[:, :16].abs().sum() > 0 and torch.isfinite(g).all()


def test_unit_norm_keeps_every_chunks_dictionary_at_unit_columns():
    """norm="unit": after a chunk's dictionary update the columns have unit norm whatever the tokens' scale (the
    codes carry it); under norm="none" the columns follow the statistics' scale, the drift that overflowed."""
    for scale in (1.0, 100.0):
        x = scale * _tokens(b=1, n=6, c=8)
        norms = {}
        for norm in ("unit", "none"):
            mixer = hb.HamMixer(8, rank=4, causal=True, chunk=2, norm=norm)
            h = mixer._groups(x)
            d0 = mixer._start(1, h)
            a, b = mixer._stats(h, mixer._code(h, d0))
            norms[norm] = mixer._update(d0, a, b).norm(dim=1)  # (1, R)
        torch.testing.assert_close(norms["unit"], torch.ones(1, 4), atol=1e-5, rtol=0)
        assert (norms["none"] - 1).abs().max() > 0.1
    assert "norm='unit'" in repr(hb.HamMixer(8, causal=True))


def test_stats_memory_makes_the_dictionary_a_function_of_the_prefix_statistics():
    """memory="stats": chunk j+1's dictionary is K updates of the fixed start from (A_j, B_j) — so under it chunkwise
    equals BPTT (no chain from chunk to chunk but the statistics'). The second chunk's dictionary is the same under
    both memories (D_1 starts from D_0 either way); from the third chunk on they differ."""
    x = _tokens(b=1, n=12, c=8, seed=3).requires_grad_()
    grads = {}
    for grad in ("chunkwise", "bptt"):
        torch.manual_seed(0)  # the same projections
        mixer = hb.HamMixer(8, rank=4, steps=3, causal=True, chunk=4, grad=grad, memory="stats")
        grads[grad] = torch.autograd.grad(mixer(x)[:, -1].pow(2).sum(), x)[0]
    torch.testing.assert_close(grads["chunkwise"], grads["bptt"], rtol=1e-5, atol=1e-7)
    outputs = {}
    for memory in ("stats", "dict"):  # the first two chunks are coded alike; from the third on the dictionaries differ
        torch.manual_seed(0)
        with torch.no_grad():
            outputs[memory] = hb.HamMixer(8, rank=4, causal=True, chunk=4, memory=memory)(x.detach())
    torch.testing.assert_close(outputs["stats"][:, :8], outputs["dict"][:, :8], rtol=0, atol=0)
    assert not torch.allclose(outputs["stats"][:, 8:], outputs["dict"][:, 8:])
    with pytest.raises(ValueError, match="memory must be one of"):
        hb.HamMixer(8, causal=True, memory="cache")


@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_local_read_out_adds_the_chunks_earlier_tokens_by_code_overlap(ham):
    """local=True: y_t = D_j c_t + g · Σ_{s<t in t's chunk} w_ts x_s / (1 + Σ w_ts), w_ts = c_t·c_s. Against the same
    weights without it the difference is that term through the out projection — zero at a chunk's first token and at
    g = 0; the recurrent form equals the parallel one; a late loss now reaches its own chunk's earlier tokens, still
    no later ones."""
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=4, local=True).eval()
    plain = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=4).eval()
    plain.load_state_dict({k: v for k, v in mixer.state_dict().items() if k != "local_gain"})
    with torch.no_grad():
        mixer.local_gain.copy_(torch.tensor([0.5, 2.0]))
    tokens = _tokens(n=11)
    with torch.no_grad():
        diff = mixer(tokens) - plain(tokens)  # (B, N, C)
        h = mixer._groups(tokens)  # (B*S, N, D)
        xj = h[:, 4:8]  # chunk 1
        start = mixer._start(h.shape[0], h)
        d1 = mixer._update(start, *mixer._stats(h[:, :4], mixer._code(h[:, :4], start)))  # chunk 1's dictionary
        c = mixer._code(xj, d1)  # (G, 4, R)
        t = 2  # position 6: tokens 4 and 5 before it in its chunk
        w = (c[:, t : t + 1] @ c[:, :t].mT)[:, 0]  # (G, t)
        term = (w[..., None] * xj[:, :t]).sum(1) / (1 + w.sum(-1, keepdim=True))  # (G, D)
        term = term * torch.tensor([0.5, 2.0]).repeat(2)[:, None]
        expected = term.reshape(2, -1) @ mixer.out_proj.weight.mT  # (B, S·D) -> (B, C)
    torch.testing.assert_close(diff[:, 6], expected, rtol=1e-5, atol=1e-6)
    assert (diff[:, [0, 4, 8]].abs() < 1e-6).all() and (diff[:, [1, 5, 9]].abs() > 1e-6).any()
    torch.testing.assert_close(stepped(mixer, tokens), mixer(tokens), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        mixer.local_gain.zero_()
        assert torch.equal(mixer(tokens), plain(tokens))
        mixer.local_gain.fill_(1.0)
    assert "local" in repr(mixer)
    tokens.requires_grad_(True)
    mixer.train()(tokens)[:, 10].sum().backward()  # position 10 of chunk 2 (8..10): its own 8 and 9 as well now
    reach = tokens.grad.abs().sum((0, 2))
    assert (reach[:11] > 0).all()
    tokens.grad = None
    mixer(tokens)[:, 9].sum().backward()
    assert tokens.grad[:, 10].abs().sum() == 0
    for kwargs in ({"causal": False}, {"causal": True, "memory": "dict"}):
        with pytest.raises(ValueError, match="local is the causal stats form's read-out"):
            hb.HamMixer(16, local=True, **kwargs)
    with pytest.raises(ValueError, match="local must be False, True, 'chunk' or 'window'"):
        hb.HamMixer(16, causal=True, local="all")


@pytest.mark.parametrize("ham", ["nmf", "vq"])
@pytest.mark.parametrize("chunk", [1, 4, 5])
def test_local_window_reads_the_last_l_minus_1_tokens_across_the_chunk_boundary(ham, chunk):
    """local="window": the read-out of position t covers t − L + 1 … t − 1, the previous chunk's tail coded against
    t's dictionary. At a chunk's first token (position 4, L 4) the term is over positions 1-3 by hand; the recurrent
    form, whose state holds the last L − 1 tokens instead of the pending chunk's (as many floats), equals the parallel
    one, padded or not; nothing later is reached."""
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=chunk, local="window").eval()
    tokens = _tokens(n=11)
    torch.testing.assert_close(stepped(mixer, tokens), mixer(tokens), rtol=1e-5, atol=1e-5)
    state = mixer.init_state(2)
    for t in range(11):
        _, state = mixer.step(tokens[:, t], state)
    assert state["recent"].shape == (4, min(11, chunk - 1), 8) and "pending" not in state
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False  # padding changes nothing before it
    torch.testing.assert_close(mixer(tokens, mask)[1, :7], mixer(tokens[1:2, :7])[0], rtol=1e-5, atol=1e-6)
    if chunk == 4:
        plain = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=4).eval()
        plain.load_state_dict({k: v for k, v in mixer.state_dict().items() if k != "local_gain"})
        with torch.no_grad():
            diff = mixer(tokens) - plain(tokens)
            h = mixer._groups(tokens)
            start = mixer._start(h.shape[0], h)
            d1 = mixer._update(start, *mixer._stats(h[:, :4], mixer._code(h[:, :4], start)))
            c, cp = mixer._code(h[:, 4:5], d1), mixer._code(h[:, 1:4], d1)  # position 4; positions 1-3 against D_1
            w = (c @ cp.mT)[:, 0]  # (G, 3)
            term = (w[..., None] * h[:, 1:4]).sum(1) / (1 + w.sum(-1, keepdim=True))  # (G, D), gain 1
            expected = term.reshape(2, -1) @ mixer.out_proj.weight.mT
        torch.testing.assert_close(diff[:, 4], expected, rtol=1e-5, atol=1e-6)
        assert "local='window'" in repr(mixer)
    tokens.requires_grad_(True)
    mixer.train()(tokens)[:, 6].sum().backward()
    assert tokens.grad[:, 7:].abs().sum() == 0 and (tokens.grad[:, :7].abs().sum((0, 2)) > 0).all()


@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_decay_weighs_earlier_chunks_by_a_learned_gamma(ham):
    """decay=γ_0: the prefix statistics are A_j = γ A_{j-1} + X_j C_jᵀ (B alike) with γ = sigmoid(θ) per head, learned.
    Chunk 2's output equals the pieces put together by hand with γ applied once to chunk 0's statistics; the recurrent
    form equals the parallel one; θ gets a gradient; bad values are refused."""
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=4, decay=0.6).eval()
    with torch.no_grad():
        mixer.decay_logit.copy_(torch.tensor([0.3, 0.8]).logit())
    tokens = _tokens(n=11)
    with torch.no_grad():
        h = mixer._groups(tokens)  # (B*S, N, D)
        start = mixer._start(h.shape[0], h)
        a0, b0 = mixer._stats(h[:, :4], mixer._code(h[:, :4], start))
        d1 = mixer._update(start, a0, b0)
        a1, b1 = mixer._stats(h[:, 4:8], mixer._code(h[:, 4:8], d1))
        gamma = torch.tensor([0.3, 0.8]).repeat(2)  # (G,): heads 0, 1 of batch 0, then of batch 1
        g = gamma.view(-1, *([1] * (b0.ndim - 1)))
        d2 = mixer._update(start, gamma[:, None, None] * a0 + a1, g * b0 + b1)
        expected = mixer._ungroup(mixer._code(h[:, 8:], d2) @ d2.mT, 2)  # (B, 3, C)
        torch.testing.assert_close(mixer(tokens)[:, 8:], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stepped(mixer, tokens), mixer(tokens), rtol=1e-5, atol=1e-5)
    assert "decay=0.6" in repr(mixer)
    mixer.train()(tokens)[:, 10].sum().backward()
    assert mixer.decay_logit.grad is not None and (mixer.decay_logit.grad != 0).all()
    for bad in (0.0, 1.0, 1.5, True):
        with pytest.raises(ValueError, match="decay must be None or a float in"):
            hb.HamMixer(16, causal=True, decay=bad)
    for kwargs in ({"causal": False}, {"causal": True, "memory": "dict"}):
        with pytest.raises(ValueError, match="decay weighs the causal stats form's statistics"):
            hb.HamMixer(16, decay=0.9, **kwargs)
