"""The summarization ROUGE table: Lead-3, centroid, trained extractive, zero-shot and fine-tuned decoder.

Every technique summarizes the same held-out test rows; ROUGE-1/2/Lsum with bootstrap 95% CIs.
The extractive scorer is fitted on the training rows only. Models run in Ray Data actor pools
(one GPU each when the cluster has GPUs), all techniques at once (each pool is one actor: run one after
another they would leave the cluster's other CPUs or GPUs idle). Outputs go to `<run>/eval/`
(atomically) and to W&B.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import ray
import ray.data

from raytron.atomic import replace_dir
from raytron.config import SummarizationConfig
from raytron.data.cnn_dailymail import read_splits
from raytron.evaluate.rouge import METRICS, bootstrap, lead3, paired_difference, rouge_scores
from raytron.models.pretrained import resolve_pretrained
from raytron.runtime import absolute_paths, connect_ray, use_gpu

log = logging.getLogger("raytron.evaluate")
COMPARISONS = (("fine-tuned decoder", "zero-shot decoder"), ("extractive (oracle-trained scorer)", "lead-3"))
"""The issue's two questions, answered with paired bootstrap intervals on the same test rows."""


def _predict(frame: pd.DataFrame, summarizer: type, kwargs: dict, gpu: bool) -> list[str]:
    """Run a summarizer class over the `article` column in a one-actor Ray Data pool."""
    scored = ray.data.from_pandas(frame[["id", "article"]]).map_batches(
        summarizer, fn_constructor_kwargs=kwargs, batch_format="pandas", batch_size=64 if gpu else 8,
        compute=ray.data.ActorPoolStrategy(size=1), num_gpus=1 if gpu else 0, num_cpus=0.5,
    )
    by_id = scored.select_columns(["id", "prediction"]).to_pandas().set_index("id")["prediction"]
    return [by_id[i] for i in frame["id"]]  # actor pools may return rows out of order


@ray.remote
def _fit_extractive(encoder: str, articles: list[str], references: list[str], out_dir: str, cfg: dict) -> dict:
    from raytron.inference.extractive import ExtractiveSummarizer

    summarizer = ExtractiveSummarizer(encoder, None, cfg["sentences"], cfg["max_sentence_tokens"])
    return summarizer.fit(articles, references, out_dir)


def markdown_table(table: dict[str, dict], rows: int) -> str:
    lines = [f"ROUGE F1 x 100 on {rows} held-out test rows (mean [95% bootstrap CI])", "",
             "| technique | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, metrics in table.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{metrics[m]['mean']:.2f} [{metrics[m]['low']:.2f}, {metrics[m]['high']:.2f}]" for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def evaluate(cfg: SummarizationConfig, model_dir: Path | None = None) -> dict:
    """Summarize the test rows with every technique, score, write `<run>/eval/` and log to W&B."""
    from raytron.inference.abstractive import AbstractiveSummarizer
    from raytron.inference.extractive import ExtractiveSummarizer, publish_scorer

    cfg = absolute_paths(cfg)
    model_dir = Path(model_dir or cfg.run_dir / "model").resolve()
    connect_ray()
    gpu = use_gpu(cfg)
    splits = read_splits(cfg.data.data_dir, {"train": cfg.data.train_rows, "test": cfg.data.test_rows})
    train, test = splits["train"].to_pandas(), splits["test"].to_pandas()
    encoder = str(resolve_pretrained(cfg.extractive.encoder))
    extractive_kwargs = dict(encoder_dir=encoder, sentences_per_summary=cfg.extractive.sentences,
                             max_sentence_tokens=cfg.extractive.max_sentence_tokens)
    scorer_dir = cfg.run_dir / "extractive"
    log.info("fitting the extractive sentence scorer on %d training rows (oracle labels)", len(train))
    fitting = _fit_extractive.options(num_gpus=1 if gpu else 0).remote(
        encoder, list(train["article"]), list(train["summary"]), str(scorer_dir), cfg.extractive.model_dump())

    def trained_extractive() -> list[str]:
        fit = ray.get(fitting)
        log.info("scorer fitted on %d sentences (%.1f%% oracle-selected)", fit["sentences"], 100 * fit["oracle_share"])
        return _predict(test, ExtractiveSummarizer, {**extractive_kwargs, "scorer_dir": str(scorer_dir)}, gpu)

    decoder_kwargs = dict(generation=cfg.generation.model_dump(), max_length=cfg.data.max_length,
                          batch_size=16 if gpu else 4)
    pretrained = str(resolve_pretrained(cfg.model.pretrained))
    techniques = {"lead-3": lambda: [lead3(a) for a in test["article"]],
                  "centroid (unsupervised)": lambda: _predict(test, ExtractiveSummarizer, extractive_kwargs, gpu),
                  "extractive (oracle-trained scorer)": trained_extractive,
                  "zero-shot decoder": lambda: _predict(test, AbstractiveSummarizer, {**decoder_kwargs, "decoder_dir": pretrained}, gpu)}
    if (model_dir / "decoder").is_dir():
        techniques["fine-tuned decoder"] = lambda: _predict(
            test, AbstractiveSummarizer, {**decoder_kwargs, "decoder_dir": str(model_dir / "decoder")}, gpu)
    else:
        log.warning("no fine-tuned decoder at %s (run jobs/finetune.py first): leaving it out of the table", model_dir)
    scores, table = {}, {}
    with ThreadPoolExecutor(len(techniques)) as pool:
        running = {}
        for name, run in techniques.items():
            log.info("summarizing %d test rows: %s%s", len(test), name,
                     f" ({cfg.generation.strategy})" if "decoder" in name else "")
            running[name] = pool.submit(run)
        predictions = {name: future.result() for name, future in running.items()}
    fit = ray.get(fitting)  # done by now: the trained extractive technique waited for it
    for name in techniques:
        scores[name] = rouge_scores(predictions[name], list(test["summary"]))
        table[name] = bootstrap(scores[name])
        log.info("%s: %s", name, ", ".join(f"{m} {table[name][m]['mean']:.2f}" for m in METRICS))
    comparisons = {f"{a} - {b}": {m: paired_difference(scores[a][m], scores[b][m]) for m in METRICS}
                   for a, b in COMPARISONS if a in scores and b in scores}
    samples = pd.DataFrame({"id": test["id"], "article": test["article"].str.slice(0, 1500),
                            "reference": test["summary"], **predictions})
    result = {"rows": len(test), "generation": cfg.generation.model_dump(), "table": table, "paired": comparisons}
    out_dir = cfg.run_dir / "eval"
    with replace_dir(out_dir) as staging:
        (staging / "rouge.json").write_text(json.dumps(result, indent=2))
        (staging / "rouge.md").write_text(markdown_table(table, len(test)) + "\nPaired differences (95% paired bootstrap):\n\n"
                                          + markdown_table(comparisons, len(test)).split("\n", 2)[2])
        samples.to_json(staging / "samples.jsonl", orient="records", lines=True)
    log.info("ROUGE table in %s:\n%s", out_dir / "rouge.md", markdown_table(table, len(test)))
    if cfg.run.store:  # the Serve Summarizer's extractive mode serves this scorer
        version = publish_scorer(scorer_dir, cfg.run.store, f"{cfg.run.model_name or 'summarization'}-extractive",
                                 cfg.extractive.model_dump(), fit, {m: v["mean"] for m, v in
                                                                    table["extractive (oracle-trained scorer)"].items()})
        log.info("extractive scorer published to %s as version %s", cfg.run.store, version)
    log_to_wandb(cfg, model_dir, out_dir, table, samples)
    return result


def rouge_figure(table: dict[str, dict], rows: int):
    """Grouped bars of ROUGE-1/2/Lsum per technique with their 95% bootstrap intervals as error bars (plotly)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for name, metrics in table.items():
        means = [metrics[m]["mean"] for m in METRICS]
        figure.add_trace(go.Bar(name=name, x=list(METRICS), y=means, error_y={
            "type": "data", "symmetric": False, "array": [metrics[m]["high"] - metrics[m]["mean"] for m in METRICS],
            "arrayminus": [metrics[m]["mean"] - metrics[m]["low"] for m in METRICS]}))
    figure.update_layout(barmode="group", template="simple_white", yaxis_title="F1 x 100", legend_title="technique",
                         title=f"ROUGE on {rows} held-out test rows (mean, 95% bootstrap CI)")
    return figure


def log_to_wandb(cfg: SummarizationConfig, model_dir: Path, out_dir: Path, table: dict, samples: pd.DataFrame) -> None:
    """Each technique's ROUGE means, the bar chart with CIs, the table and sample summaries, and the evaluation
    artifact."""
    import wandb

    from raytron.tracking import finish_run, log_evaluation, start_run

    run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "evaluate", cfg.model_dump())
    run.log({f"test/{name}/{metric}": values["mean"] for name, metrics in table.items()
             for metric, values in metrics.items()})
    rows = [[name, *(metrics[m][k] for m in METRICS for k in ("mean", "low", "high"))] for name, metrics in table.items()]
    columns = ["technique", *(f"{m}_{k}" for m in METRICS for k in ("mean", "low", "high"))]
    run.log({"test/rouge": wandb.Table(columns=columns, data=rows),
             "test/rouge_chart": wandb.Plotly(rouge_figure(table, len(samples))),
             "test/samples": wandb.Table(dataframe=samples.head(20))})
    log_evaluation(run, cfg, model_dir, out_dir)
    finish_run(run)
