"""`train.cuda_graphs`: the model's training forward and backward replayed from CUDA graphs, one pair per input shape.

PyTorch's `torch.cuda.make_graphed_callables` ("partial-network capture" in the CUDA semantics docs). The encoder's
small fine-tune step is host-bound: ~640 kernel launches for ~12 ms of kernels at 32 x 512, and 23-31 ms per step
(docs/gpu-fast-path.md, eleventh session), two thirds of the host time in the forward and backward. A replayed graph
issues them in one launch. Only the model is graphed: its inputs are copied into the capture's static buffers; the
loss, Megatron DDP's gradient hooks (they add each parameter's gradient into its `main_grad` when the graphed
backward hands it back), the gradient sync and the optimizer stay eager. Each forward's output and gradients are
consumed before the next forward of that shape (a step's micro-batches run forward-backward one after another).
Length-bucketed batches have a few shapes (micro-batch rows x multiples of 64): each new shape is captured on first
use, in a memory pool of its own (shapes replay in any order), after three warm-up passes whose RNG draws are undone,
so a resumed run replays the same dropout stream as an uninterrupted one. Dropout under capture draws from the
default CUDA generator: SDPA attention does with one TP rank (`raytron.models.attention`); Megatron's model-parallel
RNG tracker (TP > 1, the local and Transformer Engine attentions) is not capturable this way, and is refused.

The graphs are captured on the stream the whole training runs on (`use_capture_stream`, which `wrap_for_training`
calls before Megatron DDP wraps the model): DDP keeps every parameter's AccumulateGrad node alive from its
construction, and autograd makes that node's stream wait for the gradient's; a capture on any other stream would make
an uncaptured stream wait on the capturing one, which CUDA refuses (`cudaErrorStreamCaptureImplicit`, seen on the
first GPU run). The stream stays this thread's current one for the rest of the process.
"""

from __future__ import annotations

import logging
import warnings

import torch

from raytron.errors import RaytronError

log = logging.getLogger("raytron.train")

NEEDS_GPU = "train.cuda_graphs=true needs the model on a GPU; set train.cuda_graphs=false on CPU"


def use_capture_stream(device: torch.device) -> None:
    """From here on, run this thread's CUDA work on a new stream and capture graphs on it (call before DDP wraps)."""
    if device.type != "cuda":
        raise RaytronError(NEEDS_GPU)
    stream = torch.cuda.Stream(device)
    torch.cuda.set_stream(stream)
    torch.cuda.graph.default_capture_stream = stream  # what make_graphed_callables' captures run on


class _Forward(torch.nn.Module):
    """`model(*inputs)` as a module of its own: `make_graphed_callables` replaces the forward of the module it is
    given, and the model itself must keep its eager forward (validation, export, other shapes)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs)


class GraphedTraining:
    """Calls `model(*inputs)` in training through the forward/backward graphs captured for the inputs' shapes."""

    def __init__(self, model: torch.nn.Module):
        if not next(model.parameters()).is_cuda:
            raise RaytronError(NEEDS_GPU)
        if torch.cuda.current_stream() != torch.cuda.graph.default_capture_stream:
            raise RuntimeError("call raytron.train.cuda_graphs.use_capture_stream before Megatron DDP wraps the model")
        self.model = model
        self.graphed: dict[tuple, torch.nn.Module] = {}

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.model.training:
            raise RuntimeError("GraphedTraining replays training graphs: call the model itself in eval mode")
        shapes = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if shapes not in self.graphed:
            self.graphed[shapes] = self.capture(inputs)
        return self.graphed[shapes](*inputs)

    def capture(self, inputs: tuple[torch.Tensor, ...]) -> torch.nn.Module:
        log.info("CUDA graphs: capturing the training forward and backward for inputs %s (%d shapes so far)",
                 ", ".join("x".join(map(str, t.shape)) for t in inputs), len(self.graphed) + 1)
        rng = torch.cuda.get_rng_state()
        try:
            with warnings.catch_warnings():  # the warm-up runs on a side stream by design, not the AccumulateGrad's
                warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
                graphed = torch.cuda.make_graphed_callables(
                    _Forward(self.model), tuple(t.clone() for t in inputs),
                    allow_unused_input=True)  # a trainable parameter the forward does not reach gets no gradient
        except RuntimeError as error:
            raise RaytronError(f"CUDA graph capture of the training step failed ({error}). Likely causes: a "
                               "synchronizing op or an RNG-state swap in the model's forward or backward. Set "
                               "train.cuda_graphs=false (the eager step computes the same)") from error
        torch.cuda.set_rng_state(rng)
        return graphed
