"""Which rows each optimizer step trains on: a seeded permutation per epoch cut into global batches.

Megatron-LM's `MegatronPretrainingRandomSampler` does the same: the order depends only on (seed, epoch),
never on how many ranks read it or on which node a block of data landed, so the data position of a
checkpoint is two numbers (epoch, steps done in it) and a resumed run trains on exactly the batches an
uninterrupted one would. Every rank holds the split's encoded rows (Ray Train hands each worker the
whole materialized dataset; IMDb's 25k x 512 tokens are 100 MB) and takes its data-parallel slice of
each global batch; the ranks of one tensor-parallel group take the same slice.

Length bucketing (`train.bucket_by_length`): the epoch's permutation is cut into windows of
`SORT_WINDOW` global batches, each window is sorted by row length and cut into global batches, and the
epoch's global batches are shuffled (all seeded by (seed, epoch) again), so a global batch holds rows of
similar length while every epoch still sees other batches. Each micro-batch is then cut to its longest
row rounded up to `PAD_MULTIPLE` tokens instead of the recipe's full length (rows are right-padded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

Rows = dict[str, np.ndarray]

PAD_MULTIPLE = 64
"""A bucketed micro-batch's width is its longest row rounded up to a multiple of this (tensor-core tiles)."""
SORT_WINDOW = 16
"""Global batches whose rows are sorted by length together: larger pads less, smaller keeps batches more random
(HF Trainer's `group_by_length` sorts 50 batches; IMDb's 20k rows make 39 windows of 512, CNN/DM's 595 rows 3)."""


def load_rows(dataset, columns: tuple[str, ...]) -> Rows:
    """Every row of a Ray Train dataset iterator as numpy columns, in the dataset's (deterministic) order."""
    parts: dict[str, list[np.ndarray]] = {column: [] for column in columns}
    for batch in dataset.iter_batches(batch_size=4096, batch_format="numpy"):
        for column in columns:
            parts[column].append(np.asarray(batch[column]))
    return {column: np.concatenate(chunks) for column, chunks in parts.items()}


def row_lengths(task, rows: Rows) -> np.ndarray:
    """Real (non-padding) tokens of every row, as the task counts them."""
    return task.lengths({column: torch.from_numpy(np.array(values)) for column, values in rows.items()}).numpy()


def padded_width(lengths: np.ndarray, full_width: int) -> int:
    """The width a micro-batch of rows with these lengths is cut to: its longest, rounded up to PAD_MULTIPLE."""
    longest = max(int(lengths.max()), 1)
    return min(full_width, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)


def bucket_widths(full_width: int) -> int:
    """How many widths `padded_width` can cut a micro-batch to."""
    return -(-full_width // PAD_MULTIPLE)


def to_device(rows: Rows, index: np.ndarray, device: torch.device, lengths: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """The rows at `index` as device tensors; with `lengths` (bucketing), token columns cut to `padded_width`.
    To a GPU through pinned memory, asynchronously: a copy from pageable memory waits for the GPU's queue to drain."""
    batch = {}
    for column, values in rows.items():
        if lengths is not None and values.ndim == 2:
            values = values[:, :padded_width(lengths[index], values.shape[1])]
        host = torch.from_numpy(values[index])
        batch[column] = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
    return batch


@dataclass(frozen=True, eq=False)
class StepSampler:
    """The row indices of this data-parallel rank's micro-batches for any step of any epoch."""

    num_rows: int
    global_batch: int
    micro_batch: int
    dp_rank: int
    dp_size: int
    seed: int
    lengths: np.ndarray | None = None
    """Real tokens of each row when batches are length-bucketed; None keeps the plain seeded permutation."""

    @property
    def steps_per_epoch(self) -> int:
        return self.num_rows // self.global_batch

    @functools.lru_cache(maxsize=2)  # noqa: B019 (samplers live as long as the run): once per epoch, not per step
    def epoch_order(self, epoch: int) -> np.ndarray:
        """The epoch's row order (read-only), global batch after global batch."""
        order = self._order(epoch)
        order.flags.writeable = False
        return order

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_rows)  # 25k rows: ~0.3 ms
        if self.lengths is None:
            return order
        used = order[:self.steps_per_epoch * self.global_batch]  # the rows the epoch's full steps train on
        window = SORT_WINDOW * self.global_batch
        # within each window: longest first (stable, so ties keep the permutation's order)
        by_length = np.concatenate([chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                                    for chunk in np.split(used, range(window, len(used), window))])
        batches = by_length.reshape(self.steps_per_epoch, self.global_batch)
        return batches[rng.permutation(self.steps_per_epoch)].reshape(-1)

    def micro_batches(self, epoch: int, step_in_epoch: int) -> list[np.ndarray]:
        """This rank's `global_batch / (dp_size x micro_batch)` micro-batches of step `step_in_epoch`."""
        per_rank = self.global_batch // self.dp_size
        start = step_in_epoch * self.global_batch + self.dp_rank * per_rank
        rows = self.epoch_order(epoch)[start:start + per_rank]
        return np.split(rows, per_rank // self.micro_batch)


def validation_batches(num_rows: int, micro_batch: int, dp_rank: int, dp_size: int,
                       lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """This rank's share of a validation split (a contiguous 1/DP of it) in micro-batches: in order, or with
    `lengths` (bucketing) longest first, so that each micro-batch is cut short (the summed metrics do not
    depend on the order)."""
    rows = np.array_split(np.arange(num_rows), dp_size)[dp_rank]
    if lengths is not None:
        rows = rows[np.argsort(-lengths[rows], kind="stable")]
    return [rows[i:i + micro_batch] for i in range(0, len(rows), micro_batch)]
