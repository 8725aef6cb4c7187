"""What the topic job reports: the comparison table (NPMI, diversity) and its markdown, the run's
topics, assignments and topics over time, interactive plots, all in `<run>/topics/`, and W&B."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from raytron.atomic import replace_dir
from raytron.config import TopicsConfig

log = logging.getLogger("raytron.topics")


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds, per model and requested topic count, plus each model's average."""
    by_count = results.groupby(["model", "requested"]).agg(
        topics=("topics", "mean"), npmi=("npmi", "mean"), npmi_sd=("npmi", "std"), npmi_skipped=("npmi_skipped", "mean"),
        diversity=("diversity", "mean"), diversity_sd=("diversity", "std")).reset_index()
    overall = results.groupby("model").agg(npmi=("npmi", "mean"), npmi_skipped=("npmi_skipped", "mean"),
                                           diversity=("diversity", "mean")).reset_index()
    overall["requested"] = "all"
    # sd of one seed, and topics found of the "all" rows: 0; an NPMI with no topic to score stays NaN
    return pd.concat([by_count, overall], ignore_index=True).fillna({"topics": 0.0, "npmi_sd": 0.0, "diversity_sd": 0.0})


def markdown(table: pd.DataFrame, docs: int, seeds: int) -> str:
    """The comparison table as markdown: mean (sd) per model and topic count, then each model's average;
    beside NPMI, the topics it left out (fewer than 2 of their words in the reference corpus)."""
    lines = [f"NPMI (top-10 words) and topic diversity (top-25 words) on {docs} documents; mean (sd) over "
             f"{seeds} seed(s)", "", "| model | topics requested | topics found | NPMI | topics left out of NPMI | "
             "diversity |", "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        found = f"{row.topics:.1f}" if row.requested != "all" else ""
        npmi_sd = f" ({row.npmi_sd:.3f})" if row.requested != "all" else ""
        div_sd = f" ({row.diversity_sd:.3f})" if row.requested != "all" else ""
        lines.append(f"| {row.model} | {row.requested} | {found} | {row.npmi:.3f}{npmi_sd} | {row.npmi_skipped:g} | "
                     f"{row.diversity:.3f}{div_sd} |")
    return "\n".join(lines) + "\n"


OUTLIERS = "-1_outliers"
"""Name of topic -1: the documents HDBSCAN left out that `merge` could place in no topic (c-TF-IDF)."""


def topic_table(model) -> pd.DataFrame:
    """BERTopic's topic info (Topic, Count, Name, Representation): blank padding words dropped from the
    keywords, and topic -1 named `OUTLIERS` (BERTopic names it by its keywords as if it were a topic,
    "-1____" when they are all blank)."""
    info = model.get_topic_info().drop(columns=["Representative_Docs"], errors="ignore")
    info["Representation"] = info["Representation"].map(lambda words: [w for w in words if w])
    info.loc[info["Topic"] == -1, "Name"] = OUTLIERS
    return info


def bucket_dates(dates: pd.Series, bucket: str) -> list[pd.Timestamp]:
    """Each date's bucket start: the day, the Monday of its week, or the first of its month."""
    return list(pd.to_datetime(dates).dt.to_period(bucket).dt.start_time)


def topics_over_time(model, texts: list[str], topics: list[int], dates: pd.Series, bucket: str) -> pd.DataFrame | None:
    """BERTopic's topic frequencies and keywords per date bucket; None when a document is undated."""
    if not dates.notna().all():
        return None
    return model.topics_over_time(texts, bucket_dates(dates, bucket), topics=topics, nr_bins=None)


def write_plots(model, over_time: pd.DataFrame | None, out: Path) -> list[str]:
    """Interactive HTML (plotly, self-contained): topic map, keyword bars, hierarchy, topics over time."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {"topic_map": lambda: model.visualize_topics(), "barchart": lambda: model.visualize_barchart(top_n_topics=12),
               "hierarchy": lambda: model.visualize_hierarchy()}
    if over_time is not None:
        figures["topics_over_time"] = lambda: model.visualize_topics_over_time(over_time, top_n_topics=10)
    written = []
    for name, draw in figures.items():
        try:
            draw().write_html(out / f"{name}.html", include_plotlyjs=True)
            written.append(name)
        except (ValueError, TypeError, IndexError) as error:  # e.g. too few topics for a 2-D map
            log.warning("plot %s skipped: %s", name, error)
    return written


def write_report(out: Path, docs: pd.DataFrame, results: pd.DataFrame, table: pd.DataFrame, model, topics: list[int],
                 over_time: pd.DataFrame | None, seeds: int) -> list[str]:
    """`out` (atomically): sweep.csv, comparison.csv and .md (when swept), topics.csv, assignments.parquet,
    topics_over_time.csv (dated corpora) and plots/; returns the plots written."""
    with replace_dir(out) as staging:
        if len(results):
            results.to_csv(staging / "sweep.csv", index=False)
            table.to_csv(staging / "comparison.csv", index=False)
            (staging / "comparison.md").write_text(markdown(table, len(docs), seeds))
        topic_table(model).to_csv(staging / "topics.csv", index=False)
        pd.DataFrame({"id": docs["id"], "topic": topics, "label": docs["label"]}).to_parquet(staging / "assignments.parquet")
        if over_time is not None:
            over_time.to_csv(staging / "topics_over_time.csv", index=False)
        return write_plots(model, over_time, staging / "plots")


def log_to_wandb(cfg: TopicsConfig, table: pd.DataFrame, model, out: Path, plots: list[str]) -> None:
    """The comparison table, every topic's keywords and the plots, as one W&B run."""
    import wandb

    from raytron.tracking import start_run

    run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "topics", cfg.model_dump())
    if len(table):
        run.log({"topics/comparison": wandb.Table(dataframe=table.astype({"requested": str}))})
    info = topic_table(model)
    keywords = info.assign(Representation=info["Representation"].map(lambda words: ", ".join(words[:10])))
    run.log({"topics/keywords": wandb.Table(dataframe=keywords[["Topic", "Count", "Name", "Representation"]])})
    for name in plots:
        run.log({f"topics/{name}": wandb.Html(str(out / "plots" / f"{name}.html"))})
    run.finish()
