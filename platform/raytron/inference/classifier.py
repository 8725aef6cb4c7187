"""Score texts with a trained sentiment model folder (a Ray Data callable class; Serve reuses it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raytron.inference.cuda_graphs import GraphedForward
from raytron.models.classifier import classifier_from_hf
from raytron.runtime import init_megatron
from raytron.store import read_head, read_meta
from raytron.train.sampler import PAD_MULTIPLE, padded_width


def graph_widths(max_length: int) -> list[int]:
    """The widths the classifier's CUDA graphs are captured at: PAD_MULTIPLE times powers of two below
    `max_length`, and `max_length` (a batch pads to at most twice its longest row or to PAD_MULTIPLE, and 512 tokens
    take 4 graphs)."""
    widths = [PAD_MULTIPLE]
    while widths[-1] * 2 < max_length:
        widths.append(widths[-1] * 2)
    return sorted({min(width, max_length) for width in widths} | {max_length})


@dataclass
class Scored:
    """A batch whose forward was issued: `wait()` blocks until its probabilities reached the host (releasing the GIL
    while the GPU works), `result()` is the scored batch."""

    batch: dict[str, np.ndarray]
    probs: torch.Tensor
    done: torch.cuda.Event | None

    def wait(self) -> None:
        if self.done is not None:
            self.done.synchronize()

    def result(self) -> dict[str, np.ndarray]:
        self.wait()
        probs = self.probs.numpy()
        return {**self.batch, "prob_positive": probs[:, 1], "prediction": probs.argmax(-1)}


class SentimentPredictor:
    """Builds the Megatron-Core classifier from `model_dir` once; each call scores an encoded batch, cut to the width
    of its longest review (rounded up to a multiple of PAD_MULTIPLE, or to the next captured graph's width): the
    encoder pads every review to the recipe's `max_length`, and a short review need not cost 512 positions."""

    def __init__(self, model_dir: str | Path):
        model_dir = Path(model_dir)
        self.meta = read_meta(model_dir)
        self.device = init_megatron()
        model, _, _ = classifier_from_hf(
            model_dir / "encoder", len(self.meta["features"]), len(self.meta["labels"]), 0.0,
            hidden_dropout=0.0, attention_dropout=0.0,
        )
        model.head.load_state_dict(read_head(model_dir))
        self.model = model.eval().to(self.device)
        self.graphed: dict[int, GraphedForward] = {}  # width -> the graphs of batches that wide

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The eager forward (bf16 autocast on a GPU) of `inputs`' tensors."""
        # no autocast weight cache: a CUDA graph must not capture casts cached outside it
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda",
                            cache_enabled=False):
            return self.model(input_ids, attention_mask, features)

    def cut_width(self, attention_mask: np.ndarray) -> int:
        """The width a batch is cut to: its longest row rounded up to a PAD_MULTIPLE, and up to a captured width."""
        width = padded_width(attention_mask.sum(1), attention_mask.shape[1])
        return min((w for w in self.graphed if w >= width), default=width)

    def inputs(self, batch: dict[str, np.ndarray], width: int | None = None) -> list[torch.Tensor]:
        """An encoded batch (`raytron.data.imdb.ReviewEncoder`) as the model's device tensors, `width` tokens wide (by
        default `cut_width`: rows are right-padded, so the cut drops padding only). To a GPU from pinned memory
        without waiting: a copy from pageable memory would wait for the batches already queued on the GPU."""
        mask = np.asarray(batch["attention_mask"])
        width = width or self.cut_width(mask)
        features = np.stack([np.asarray(batch[name], dtype=np.float32) for name in self.meta["features"]], axis=-1)
        ids, mask = np.asarray(batch["input_ids"])[:, :width], mask[:, :width]
        # To a GPU: one pinned buffer and one copy, not three (pinning and copying three arrays took 8 of the 20 profile
        # samples of a lone review's launch in a replica: docs/gpu-fast-path.md, twenty-first session); the features
        # travel as their int32 bit patterns.
        if self.device.type == "cuda":
            packed = np.concatenate([ids.astype(np.int32), mask.astype(np.int32), features.view(np.int32)], axis=1)
            moved = torch.from_numpy(packed).pin_memory().to(self.device, non_blocking=True)
            ids, mask, features = moved.split([ids.shape[1], mask.shape[1], features.shape[1]], dim=1)
            features = features.view(torch.float32)
        else:  # copies: Ray Data's arrays may be read-only, which torch.from_numpy warns about
            ids, mask = (torch.from_numpy(np.array(a, order="C")) for a in (ids, mask))
            features = torch.from_numpy(features)
        return [ids.long(), mask.long(), features]

    @torch.no_grad()
    def capture_cuda_graphs(self, example: dict[str, np.ndarray], max_rows: int) -> None:
        """From now on, batches run as CUDA graphs of up to `max_rows` rows at each of `graph_widths`
        (`raytron.inference.cuda_graphs`, one memory pool, widest first); `example` (an encoded batch) gives the
        inputs' shapes and the values the captures are checked on."""
        shared = None
        widths = graph_widths(np.asarray(example["attention_mask"]).shape[1])
        for width in reversed(widths):
            shared = GraphedForward(self.logits, self.inputs(example, width), max_rows, share=shared)
            self.graphed[width] = shared
        for width in widths[::2] + widths[1::2]:  # replayed after every capture into the pool, widths interleaved
            inputs = self.inputs(example, width)
            GraphedForward.check(self.graphed[width](*inputs), self.logits(*inputs), len(inputs[0]))

    @torch.no_grad()
    def launch(self, batch: dict[str, np.ndarray]) -> Scored:
        """Issues `batch`'s forward and the copy of its probabilities to the host, without waiting for the GPU."""
        tensors = self.inputs(batch)
        forward = self.graphed.get(tensors[0].shape[1], self.logits)
        probs = torch.softmax(forward(*tensors).float(), dim=-1)
        if self.device.type != "cuda":
            return Scored(batch, probs, None)
        host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
        host.copy_(probs, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return Scored(batch, host, done)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.launch(batch).result()
