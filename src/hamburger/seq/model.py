"""A causal token model with any mixer: embedding -> :class:`~hamburger.sequence.HamDecoder` -> linear head.

model = SequenceModel(256, dim=64, depth=2, mixer="ham_nmf", max_len=512, rank=16, chunk=16)
logits = model(tokens)                      # (B, N) int64 -> (B, N, vocab), teacher forcing
text = model.generate(prompt, 100)          # the recurrent form, one token at a time
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..sequence import HamDecoder

__all__ = ["SequenceModel"]


class SequenceModel(nn.Module):
    """Causal language model over a ``vocab``-symbol alphabet with the mixer ``mixer`` in every block.

    Args:
        vocab: alphabet size.
        dim: C.
        depth: blocks.
        mixer: ``ham_nmf`` | ``ham_vq`` | ``softmax`` | ``linear`` | ``none``.
        heads: mixer heads.
        max_len: longest N.
        conv: kernel of a short causal convolution before every mixer; 0 for none.
        **mixer_kwargs: the Ham's ``rank``, ``steps``, ``chunk``, ``grad``.
    """

    def __init__(
        self,
        vocab: int,
        *,
        dim: int = 64,
        depth: int = 2,
        mixer: str = "ham_nmf",
        heads: int = 1,
        max_len: int = 1024,
        conv: int = 0,
        **mixer_kwargs,
    ) -> None:
        super().__init__()
        self.vocab, self.mixer = vocab, mixer
        self.embed = nn.Embedding(vocab, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.decoder = HamDecoder(
            dim, depth=depth, max_len=max_len, mixer=mixer, heads=heads, conv=conv, **mixer_kwargs
        )
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"SequenceModel expects integer tokens (B, N), got {tokens.dtype} {tuple(tokens.shape)}")
        return self.head(self.decoder(self.embed(tokens)))  # (B, N) -> (B, N, C) -> (B, N, vocab)

    @torch.no_grad()
    def step_logits(self, tokens: Tensor) -> Tensor:
        """The logits of every position computed with the recurrent form (one token at a time): equal to
        ``forward`` up to float tolerance; the check that generation sees what training saw."""
        state = self.decoder.init_state(tokens.shape[0], device=tokens.device)
        out = []
        for t in range(tokens.shape[1]):
            y, state = self.decoder.step(self.embed(tokens[:, t]), state)  # (B, C)
            out.append(self.head(y))
        return torch.stack(out, 1)  # (B, N, vocab)

    @torch.no_grad()
    def generate(
        self, prompt: Tensor, length: int, *, temperature: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Continue ``prompt`` (B, P) by ``length`` tokens with the recurrent form (greedy at temperature 0)."""
        if prompt.shape[1] < 1:
            raise ValueError("generate needs a prompt of at least one token")
        if prompt.shape[1] + length > self.decoder.max_len:
            raise ValueError(f"prompt + length = {prompt.shape[1] + length} exceeds max_len={self.decoder.max_len}")
        state = self.decoder.init_state(prompt.shape[0], device=prompt.device)
        for t in range(prompt.shape[1]):
            y, state = self.decoder.step(self.embed(prompt[:, t]), state)
        out = [prompt]
        for _ in range(length):
            logits = self.head(y)  # (B, vocab)
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                nxt = logits.argmax(-1)
            out.append(nxt[:, None])
            y, state = self.decoder.step(self.embed(nxt), state)
        return torch.cat(out, 1)
