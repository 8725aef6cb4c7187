"""Summarization end to end on real CNN/DM rows: masked loss, a short Ray Train fine-tune of SmolLM2,
the ROUGE table of every technique, and the summarize command."""

import json
import subprocess
import sys

import numpy as np
import pytest
import ray.train
import torch
import torch.nn.functional as F
import transformers
from rouge_score import rouge_scorer

from raytron.config import load_config
from raytron.data.cnn_dailymail import IGNORE_INDEX
from raytron.errors import RaytronError
from raytron.evaluate.summarization import evaluate
from raytron.store import read_meta
from raytron.train.launcher import finetune
from raytron.train.summarization import (
    next_token_targets,
    supervised_losses,
    vocab_parallel_losses,
    whole_vocab_losses,
)
from raytron.train.tasks import make_task
from tests.conftest import REPO

RECIPE = REPO / "configs" / "summarization.yaml"


def test_loss_covers_only_labelled_positions(smollm2):
    _, _, model, _, _ = smollm2
    ids = torch.randint(100, 5000, (2, 12))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 7:10] = ids[0, 7:10]  # the "summaries": row 0 positions 7-9, predicted from positions 6-8,
    labels[1, 4:6] = ids[1, 4:6]  # row 1 positions 4-5, from positions 3-4
    losses, supervised = supervised_losses(model, ids, labels, width=4)
    assert losses.shape == supervised.shape == (2, 4) and supervised.sum(1).tolist() == [3, 2]
    assert losses[~supervised].eq(0).all()
    with torch.no_grad():
        logits = model(ids, torch.arange(12).expand(2, 12), None).float()
        # Megatron's own loss over the full vocabulary at every position (what training computed before)
        full = model(ids, torch.arange(12).expand(2, 12), None, labels=next_token_targets(labels).clamp(min=0))
    predicting = [(0, 6), (0, 7), (0, 8), (1, 3), (1, 4)]
    expected = torch.stack([F.cross_entropy(logits[row, position], ids[row, position + 1]) for row, position in predicting])
    assert torch.allclose(losses[supervised], expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(losses[supervised], torch.stack([full[r, p] for r, p in predicting]).float(), rtol=1e-6, atol=1e-6)
    # a span at the end of the row: positions past it clamp to the last one, which predicts nothing
    labels[1] = IGNORE_INDEX
    labels[1, 10:12] = ids[1, 10:12]
    losses, supervised = supervised_losses(model, ids, labels, width=4)
    assert supervised[1].tolist() == [True, True, False, False]
    expected = F.cross_entropy(logits[1, 9:11], ids[1, 10:12], reduction="none")
    assert torch.allclose(losses[1, :2], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_whole_vocabulary_loss_equals_megatrons_vocab_parallel_loss(smollm2, compiled):
    """On one TP rank the loss is `F.cross_entropy` over the whole vocabulary (compiled with train.compile):
    the same losses and gradients as Megatron's vocab-parallel cross entropy, through the checkpointed chunks."""
    _, _, model, _, _ = smollm2
    ids = torch.randint(100, 5000, (3, 20), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 5:12], labels[1, 15:20], labels[2, 2:4] = ids[0, 5:12], ids[1, 15:20], ids[2, 2:4]
    results = []
    for chunk_losses in (vocab_parallel_losses, torch.compile(whole_vocab_losses) if compiled else whole_vocab_losses):
        model.zero_grad()
        losses, supervised = supervised_losses(model, ids, labels, 8, chunk_losses)
        losses.sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])  # every parameter gets one
        results.append((losses.detach(), supervised, grads))
    (megatron, mask, megatron_grads), (ours, our_mask, our_grads) = results
    assert mask.equal(our_mask) and int(mask.sum()) == 7 + 5 + 2  # each label, predicted from the position before it
    assert megatron[mask].gt(0).all() and torch.allclose(ours, megatron, rtol=1e-5, atol=1e-6)
    # fp32 sums in another order: equal to ~4e-6 of the gradient's norm (a wrong target or position: order 1)
    assert (our_grads - megatron_grads).norm() < 2e-5 * megatron_grads.norm()
    model.zero_grad(set_to_none=True)  # the model is shared by the session's tests


def test_the_task_compiles_the_whole_vocabulary_loss_only_with_train_compile(smollm2):
    """Eagerly Megatron's in-place vocab-parallel loss is as fast and holds less memory; compiled, the whole-vocabulary
    one is 6% of an H200 step faster (docs/gpu-fast-path.md): the task picks by train.compile (TP = 1 here)."""
    assert make_task(load_config(RECIPE)).chunk_losses is vocab_parallel_losses
    compiled = make_task(load_config(RECIPE, ["train.compile=true"])).chunk_losses
    assert compiled is not whole_vocab_losses and compiled.__wrapped__ is whole_vocab_losses


def test_rows_whose_labels_outrun_the_summary_span_are_refused():
    """The loss covers max_summary_tokens + 1 positions per row (the summary and its EOS): rows encoded with a longer
    summary are refused before training, never trained on in part."""
    task = make_task(load_config(RECIPE, ["data.max_summary_tokens=8"]))
    labels = np.full((3, 40), IGNORE_INDEX, dtype=np.int32)
    labels[0, 10:19] = 5  # 8 summary tokens + EOS: the most a row may have
    task.check_rows({"labels": labels}, "train")  # row 2 has no summary: nothing to cover
    labels[1, 20:30] = 5
    with pytest.raises(RaytronError, match="train row 1 has labels over 10 positions, more than .* = 9"):
        task.check_rows({"labels": labels}, "train")


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    overrides = [f"run.output_dir={root}", "run.name=tiny", "data.max_length=256", "data.max_summary_tokens=64",
                 "data.train_rows=4", "data.val_rows=2", "data.test_rows=3", "data.preprocess_actors=1",
                 "train.epochs=2", "train.lr=1e-4", "generation.max_new_tokens=24", "train.global_batch_size=4"]
    reports = str(root / "reports.jsonl")

    class ReportLog(ray.train.UserCallback):  # defined here: Ray pickles it by value into its controller actor
        """The metric names of every report Ray Train's controller takes, one JSON line each (a file on this
        machine is how the test sees what the controller actor got)."""

        def after_report(self, run_context, metrics, checkpoint):
            with open(reports, "a") as out:
                out.write(json.dumps(sorted(metrics[0])) + "\n")

    cfg = load_config(RECIPE, overrides)
    finetune(cfg, callbacks=[ReportLog()])
    return cfg, root / "tiny"


@pytest.mark.slow
def test_finetune_loss_falls_and_exports_an_hf_decoder(trained):
    _, run_dir = trained
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train/loss"] for m in metrics if "train/loss" in m]
    assert len(losses) == 2 and losses[-1] < losses[0]  # the same 4 rows, 2 epochs
    # each window says how much of what it computed was padding (a share of its positions, never more than all)
    assert all(0 < m["train/real_token_fraction"] <= 1 for m in metrics if "train/loss" in m), metrics
    assert [m["val/loss"] for m in metrics if "val/loss" in m]
    # Ray Train takes the two epoch-end reports only: the log windows go to metrics.jsonl and W&B, not through
    # ray.train.report, which waits for the controller's poll (raytron.runtime.REPORT_POLL_S) when called more often
    reports = [json.loads(line) for line in (run_dir.parent / "reports.jsonl").read_text().splitlines()]
    assert len(reports) == 2 and all("val/loss" in names for names in reports), reports
    meta = read_meta(run_dir / "model")
    assert meta["task"] == "summarization" and meta["metrics"]["val_loss"] > 0
    decoder = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "model" / "decoder")
    assert decoder.config.num_hidden_layers == 30  # a plain HF Llama folder any transformers user loads


@pytest.mark.slow
def test_rouge_table_has_every_technique(trained):
    cfg, run_dir = trained
    result = evaluate(cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_rows": 6})}))
    table = result["table"]
    assert list(table) == ["lead-3", "centroid (unsupervised)", "extractive (oracle-trained scorer)",
                           "zero-shot decoder", "fine-tuned decoder"]
    for metrics in table.values():
        for m in ("rouge1", "rouge2", "rougeLsum"):
            assert 0 < metrics[m]["mean"] < 100 and metrics[m]["low"] <= metrics[m]["mean"] <= metrics[m]["high"]
    samples = [json.loads(line) for line in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == result["rows"] == 3 and all(s["fine-tuned decoder"] for s in samples)
    assert (run_dir / "eval" / "rouge.md").read_text().count("\n|") == 7 + 4  # 5 techniques; 2 paired differences
    # every figure is ROUGE (Google's rouge-score, stemming) of the summaries written to samples.jsonl
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=True)
    per_row = {name: [scorer.score(s["reference"], s[name]) for s in samples] for name in table}
    for name, rows in per_row.items():
        for m in ("rouge1", "rouge2"):
            assert table[name][m]["mean"] == pytest.approx(100 * sum(r[m].fmeasure for r in rows) / len(rows), abs=1e-6)
    paired = result["paired"]["fine-tuned decoder - zero-shot decoder"]["rouge2"]
    differences = [100 * (a["rouge2"].fmeasure - b["rouge2"].fmeasure)
                   for a, b in zip(per_row["fine-tuned decoder"], per_row["zero-shot decoder"], strict=True)]
    assert paired["mean"] == pytest.approx(sum(differences) / len(differences), abs=1e-6)
    assert min(differences) <= paired["low"] <= paired["mean"] <= paired["high"] <= max(differences)
    assert (run_dir / "extractive" / "sentence_scorer.json").is_file()


def summarize(*args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "summarize.py"), "--config", str(RECIPE), *args],
                          input=stdin, capture_output=True, text=True, cwd=REPO, timeout=600)


def test_summarize_command_reads_files_and_stdin(tmp_path):
    article = tmp_path / "article.txt"
    article.write_text("Rain fell in Paris on Monday. Trains stopped. Schools closed. Shops stayed open late.")
    done = summarize("--technique", "lead-3", "--file", str(article), "--out", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert row == {"source": str(article), "technique": "lead-3",
                   "summary": "Rain fell in Paris on Monday.\nTrains stopped.\nSchools closed."}
    piped = summarize("--technique", "lead-3", stdin=article.read_text())
    assert json.loads(piped.stdout)["summary"] == row["summary"]


def test_summarize_command_errors_are_clear(tmp_path):
    empty = summarize("--technique", "lead-3", stdin="  \n")
    assert empty.returncode == 2 and "error: <stdin> is empty" in empty.stderr and "Traceback" not in empty.stderr
    missing = summarize("--file", str(tmp_path / "none.txt"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    no_model = summarize("--technique", "abstractive", f"run.output_dir={tmp_path}", stdin="Some article text.")
    assert no_model.returncode == 2 and "no decoder at" in no_model.stderr
