"""CUDA graphs: `raytron.inference.cuda_graphs` (the classifier replica's forward) and `raytron.train.cuda_graphs`
(`train.cuda_graphs`, the sentiment fine-tune's forward and backward). Everywhere: the batch buckets, the settings
refused, a CPU model refused with the setting that turns the graphs off. On a GPU only (capture and replay need one;
CI's machines have none, the GPU runs are in docs/gpu-fast-path.md): graphed training steps equal the eager ones,
and a capture leaves the RNG where a replay would. serve/raytron-gpu.yaml's classifier checks each of its captures
against the eager forward when a replica starts."""

import pytest
import torch

from raytron.config import SentimentConfig, SummarizationConfig, load_config
from raytron.errors import RaytronError
from raytron.inference.cuda_graphs import GraphedForward, buckets_up_to
from raytron.train.cuda_graphs import GraphedTraining, use_capture_stream
from tests.conftest import REPO

ON_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU (none here)")


def test_buckets_are_powers_of_two_covering_the_largest_batch():
    assert buckets_up_to(1) == [1]
    assert buckets_up_to(5) == [1, 2, 4, 8]
    assert buckets_up_to(128) == [1, 2, 4, 8, 16, 32, 64, 128]


def test_a_model_on_cpu_is_refused_with_the_setting_to_change():
    with pytest.raises(RaytronError, match="cuda_graphs=true needs the model on a GPU; set cuda_graphs: false"):
        GraphedForward(lambda x: x, [torch.zeros(1, 4)], max_rows=8)


@pytest.mark.parametrize("overrides, problem", [
    (["model.attention=sdpa", "train.compile=true"], "train.cuda_graphs and train.compile: choose one"),
    (["model.attention=sdpa", "parallel.tensor=2", "resources.num_workers=2"],
     "train.cuda_graphs needs parallel.tensor=1, not 2"),
    (["model.attention=local"], "train.cuda_graphs replays SDPA attention only .model.attention=local"),
    (["model.attention=auto"], "train.cuda_graphs replays SDPA attention only .model.attention=auto"),
])
def test_training_graphs_refuse_settings_they_cannot_replay(overrides, problem):
    assert load_config(REPO / "configs/sentiment.yaml", ["train.cuda_graphs=true", "model.attention=sdpa"])
    with pytest.raises(RaytronError, match=problem):
        load_config(REPO / "configs/sentiment.yaml", ["train.cuda_graphs=true", *overrides])


def test_training_graphs_refuse_a_task_whose_loss_is_not_one_forward():
    assert SentimentConfig.graphable_training and not SummarizationConfig.graphable_training
    with pytest.raises(RaytronError, match="only the sentiment task's step is graphed"):
        load_config(REPO / "configs/summarization.yaml", ["train.cuda_graphs=true"])


def test_training_graphs_refuse_a_model_on_cpu():
    for refused in (lambda: use_capture_stream(torch.device("cpu")), lambda: GraphedTraining(torch.nn.Linear(2, 2))):
        with pytest.raises(RaytronError, match="train.cuda_graphs=true needs the model on a GPU; set train.cuda_graphs=false"):
            refused()


def sentiment_training(overrides: list[str], graphs: bool):
    """The sentiment task's pretrained classifier wrapped for training as the fine-tune wraps it (bf16 on the GPU),
    and what its loss calls: (task, ddp, optimizer, scheduler, forward)."""
    from raytron.models.pretrained import pin_pretrained
    from raytron.runtime import init_megatron
    from raytron.train.optim import wrap_for_training
    from raytron.train.tasks import make_task

    cfg = pin_pretrained(load_config(REPO / "configs/sentiment.yaml",
                                     ["model.attention=sdpa", f"train.cuda_graphs={graphs}", *overrides]))
    device = init_megatron(seed=7)
    task = make_task(cfg)
    model, tconfig = task.build(device, torch.bfloat16)
    ddp, optimizer, scheduler = wrap_for_training(model, tconfig, cfg.train, total_steps=10)  # on the capture stream
    return task, ddp, optimizer, scheduler, GraphedTraining(ddp) if graphs else ddp


def sentiment_batch(rows: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    """A bucketed micro-batch: random tokens, every other row padded to half the width."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[::2, width // 2:] = 0
    batch = {"input_ids": torch.randint(1000, 30000, (rows, width), generator=generator) * mask, "attention_mask": mask,
             "label": torch.randint(0, 2, (rows,), generator=generator),
             "log_length": torch.rand(rows, generator=generator), "vader_compound": torch.rand(rows, generator=generator)}
    return {name: tensor.cuda() for name, tensor in batch.items()}


@ON_GPU
def test_graphed_training_steps_equal_the_eager_steps():
    """Dropout off (nothing random): five steps over two bucket widths, two of them accumulating two micro-batches of
    different widths (64 captured, 128 captured, both replayed, in either order within a step), give the eager
    steps' losses, and the weights after them lie far closer to the eager run's than to where both started: the
    graphed backward's gradients reach Megatron DDP's main grads and the optimizer."""
    from raytron.train.step import train_step

    steps = [[64], [128], [64, 128], [128, 64], [64]]  # each step's micro-batch widths
    runs = []
    for graphs in (False, True):
        task, ddp, optimizer, scheduler, forward = sentiment_training(
            ["model.dropout=0.0", "model.head_dropout=0.0", "train.lr=1e-3", "train.warmup_fraction=0.0"], graphs)
        start = {name: p.detach().float().clone() for name, p in ddp.named_parameters() if p.requires_grad}
        losses = [train_step(ddp, optimizer, scheduler, task,
                             [sentiment_batch(8, width, 10 * index + micro) for micro, width in enumerate(widths)],
                             forward).loss.item()
                  for index, widths in enumerate(steps)]
        runs.append((losses, {name: p.detach().float().clone() for name, p in ddp.named_parameters() if p.requires_grad}))
        if graphs:
            assert len(forward.graphed) == 2, "one capture per input shape, each replayed on its next use"
    (eager_losses, eager), (graphed_losses, graphed) = runs
    assert graphed_losses == pytest.approx(eager_losses, rel=2e-2)
    moved = sum((eager[name] - start[name]).norm() ** 2 for name in eager) ** 0.5
    apart = sum((graphed[name] - eager[name]).norm() ** 2 for name in eager) ** 0.5
    assert apart < 0.05 * moved, f"graphed weights {apart:.3g} from the eager ones, which moved {moved:.3g}"


@ON_GPU
def test_a_capture_leaves_the_rng_where_a_replay_would():
    """With dropout on, the capture's warm-up passes draw from the CUDA RNG; they are undone, so a step that captured
    and a step that only replayed advance the generator alike (a resumed run, which captures at another step,
    replays the same dropout stream)."""
    from raytron.train.step import train_step

    task, ddp, optimizer, scheduler, forward = sentiment_training([], graphs=True)
    batch = sentiment_batch(8, 64, seed=0)
    states = []
    for _ in range(2):  # the first step captures, the second replays
        torch.cuda.manual_seed(11)
        train_step(ddp, optimizer, scheduler, task, [batch], forward)
        states.append(torch.cuda.get_rng_state())
    assert torch.equal(states[0], states[1])
    torch.cuda.manual_seed(11)
    assert not torch.equal(torch.cuda.get_rng_state(), states[0]), "the step drew no random numbers: no dropout"
