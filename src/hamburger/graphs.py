"""CUDA graphs of a module's *eager* forward, one per input shape, for inference.

``optimize(model, mode="graphs")`` installs a :class:`GraphRunner` as ``model.forward``. The first call at a new
input shape runs the eager forward twice on a side stream (warm-up: cuBLAS workspaces, the fused Triton steps'
one-time check), then captures a third run into a CUDA graph; later calls at that shape copy the input into the
graph's static input, replay it and return a copy of its output. The kernels are the eager ones — cuBLAS products
and :mod:`hamburger.kernels`' fused NMF steps — so a launch-bound block loses its launches and nothing else, where
``torch.compile(mode="reduce-overhead")`` also swaps in the compiler's kernels (their timings:
docs/results/crossover.md).

Graphs are used only where they are valid: a CUDA input, the module in eval mode, and no autograd graph to build
(``torch.no_grad()``/``torch.inference_mode()``, or neither the input nor a parameter requires a gradient).
Anything else — training, CPU input, a call inside ``torch.compile`` — runs the eager forward, the reference. The
graphs read the module's parameters and buffers where they are: in-place updates (``load_state_dict``) are seen;
moving the module or replacing a parameter needs :meth:`GraphRunner.clear` (or a new ``optimize`` call).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

__all__ = ["GraphRunner", "DEFAULT_GRAPH_LIMIT"]

DEFAULT_GRAPH_LIMIT = 8  # graphs (input shapes) per module, as torch._dynamo's default recompile limit

Capture = Callable[[Callable[[Tensor], Any], Tensor, int], tuple[Any, Callable[[], None]]]


def cuda_capture(fn: Callable[[Tensor], Any], static_in: Tensor, warmup: int) -> tuple[Any, Callable[[], None]]:
    """Warm ``fn`` up on a side stream, capture one call on ``static_in`` into a CUDA graph; (its output, replay)."""
    device = static_in.device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)
    return static_out, graph.replay


class GraphRunner:
    """``module``'s forward (``forward``, one tensor argument) through one CUDA graph per input shape.

    Args:
        module: the module whose mode and parameters decide whether a graph may run.
        forward: its eager forward (the bound method), the reference every fallback calls.
        limit: graphs kept; a further shape runs eagerly, with one warning (multi-scale evaluation: see
            :func:`hamburger.optimize`).
        warmup: eager calls before each capture.
        capture: the capture backend, ``(fn, static_input, warmup) -> (static_output, replay)``; the default captures
            a CUDA graph (tests pass one that replays by calling ``fn``).
        devices: device types graphs are made for.
    """

    def __init__(
        self,
        module: nn.Module,
        forward: Callable[..., Any],
        *,
        limit: int = DEFAULT_GRAPH_LIMIT,
        warmup: int = 2,
        capture: Capture = cuda_capture,
        devices: tuple[str, ...] = ("cuda",),
    ) -> None:
        if limit < 1 or warmup < 1:
            raise ValueError(f"limit and warmup must be >= 1, got {limit} and {warmup}")
        self.module, self.forward, self.limit, self.warmup = module, forward, limit, warmup
        self.capture, self.devices = capture, devices
        self.graphs: dict[tuple, tuple[Tensor, Any, Callable[[], None]]] = {}
        self.failed: set[tuple] = set()  # shapes whose capture raised: eager from then on
        self.warned = False

    @property
    def __code__(self):  # torch.export reads the forward's code object: it traces the eager forward
        return self.forward.__code__

    @property
    def __wrapped__(self):  # inspect.signature: the eager forward's parameters
        return self.forward

    def clear(self) -> None:
        """Drop every graph (and its memory); the next call at each shape captures again."""
        self.graphs.clear()
        self.failed.clear()

    def _graphable(self, args: tuple, kwargs: dict) -> bool:
        if kwargs or len(args) != 1 or not isinstance(args[0], Tensor) or args[0].device.type not in self.devices:
            return False
        if self.module.training or torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return False
        grads = args[0].requires_grad or any(p.requires_grad for p in self.module.parameters())
        return not (torch.is_grad_enabled() and grads)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._graphable(args, kwargs):
            return self.forward(*args, **kwargs)
        x = args[0]
        kind = x.device.type
        key = (tuple(x.shape), x.dtype, x.device, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        entry = self.graphs.get(key)
        if entry is None:
            if key in self.failed:
                return self.forward(x)
            if len(self.graphs) >= self.limit:
                if not self.warned:
                    self.warned = True
                    warnings.warn(
                        f"hamburger: {len(self.graphs)} CUDA graphs (the limit) already held; the input "
                        f"shape {tuple(x.shape)} runs eagerly. See hamburger.optimize on shapes.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                return self.forward(x)
            with torch.inference_mode(False):  # a plain tensor: later calls outside inference mode copy into it
                static_in = x.clone()
            try:
                static_out, replay = self.capture(self.forward, static_in, self.warmup)
            except RuntimeError as error:  # an operation a graph cannot hold: eager for this shape, not a crash
                self.failed.add(key)
                warnings.warn(
                    f"hamburger: capturing a CUDA graph at input shape {tuple(x.shape)} failed "
                    f"({str(error).splitlines()[0][:200]}); that shape runs eagerly.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return self.forward(x)
            entry = self.graphs[key] = (static_in, static_out, replay)
        static_in, static_out, replay = entry
        static_in.copy_(x)
        replay()
        # the graph's output is overwritten by its next replay: the caller gets its own copy
        return tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, static_out)
