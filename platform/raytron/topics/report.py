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
    """BERTopic's topic frequencies and keywords per date bucket, and `Share`: each topic's share of its
    bucket's documents (a partial last bucket then shows no false decline); None when a document is undated."""
    if not dates.notna().all():
        return None
    over_time = model.topics_over_time(texts, bucket_dates(dates, bucket), topics=topics, nr_bins=None)
    # every document is in one topic (-1 included): a bucket's frequencies add up to its documents
    over_time["Share"] = over_time["Frequency"] / over_time.groupby("Timestamp")["Frequency"].transform("sum")
    return over_time


PALETTE = ("#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86", "#EB663B",
           "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1",
           "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038", "#3283FE", "#85660D", "#325A9B",
           "#B10DA1", "#C075A6", "#B00068", "#479B55", "#7E7DCD", "#D62728", "#8C564B")
"""Topic colours: plotly's qualitative Dark24, then ten more of plotly's qualitative colours (Alphabet,
Light24, D3), each at least 3:1 in contrast against the white background (WCAG's minimum for graphics)
and at least 20 apart in CIELAB from every other. BERTopic's own plots cycle 7 colours."""
OTHERS_COLOUR = "#7F7F7F"
"""The "others" line (smaller topics and outliers): grey, dotted."""
OVER_TIME_TOPICS = 20
"""Topics drawn over time (the largest); the rest and the outliers are one "others" line."""


def topic_colour(topic: int) -> str:
    """The colour of `topic` in every plot of the run."""
    return PALETTE[topic % len(PALETTE)]


def over_time_figure(over_time: pd.DataFrame, names: dict[int, str], mode: str = "share",
                     top_n: int = OVER_TIME_TOPICS):
    """Topics over time as lines: the `top_n` largest topics (outliers excluded) and "others" (every other
    topic and the outliers). mode "share": each line is the topic's share of its bucket's documents, so
    the lines of a bucket add up to 1 and a partial bucket looks like a full one; "count": documents."""
    import plotly.graph_objects as go

    counts = over_time.pivot_table(index="Timestamp", columns="Topic", values="Frequency", aggfunc="sum",
                                   fill_value=0).sort_index()  # a topic absent from a bucket: 0 there
    totals = counts.sum(axis=1)
    largest = counts.drop(columns=[-1], errors="ignore").sum().sort_values(ascending=False, kind="stable")
    shown = sorted(largest.index[:top_n])
    words = over_time.set_index(["Topic", "Timestamp"])["Words"].to_dict() if "Words" in over_time else {}
    lines = [(names.get(topic, str(topic)), counts[topic], {"color": topic_colour(topic)}, topic) for topic in shown]
    lines.append(("others (smaller topics, outliers)", counts.drop(columns=shown).sum(axis=1),
                  {"color": OTHERS_COLOUR, "dash": "dot"}, None))
    figure = go.Figure()
    for name, documents, line, topic in lines:
        shares = documents / totals
        text = [f"<b>{name}</b><br>{documents[when]} of {totals[when]} documents ({shares[when]:.1%})"
                + (f"<br>{words[topic, when]}" if (topic, when) in words else "") for when in counts.index]
        figure.add_trace(go.Scatter(x=counts.index, y=shares if mode == "share" else documents, mode="lines+markers",
                                    name=name, line=line, hoverinfo="text", hovertext=text))
    share = mode == "share"
    figure.update_layout(title="Topics over time: " + ("share of each period's documents" if share else "documents"),
                         yaxis_title="share of the period's documents" if share else "documents",
                         yaxis_tickformat=".0%" if share else None, template="simple_white", width=1250, height=500,
                         legend={"title": "topic"})
    return figure


def barchart_figure(model, top_n: int = 12):
    """BERTopic's keyword bars of the `top_n` largest topics, each in its `topic_colour`."""
    freq = model.get_topic_freq()
    shown = sorted(freq.loc[freq["Topic"] != -1, "Topic"].tolist()[:top_n])
    figure = model.visualize_barchart(topics=shown)
    for trace, topic in zip(figure.data, shown, strict=True):
        trace.marker.color = topic_colour(topic)
    return figure


PLOTLY_JS = "plotly.min.js"
"""The run's one copy of plotly.js, beside its plots (each HTML file refers to it: 4.7 MB once, not per plot)."""


def write_plots(model, over_time: pd.DataFrame | None, out: Path, over_time_plots: str = "both") -> list[str]:
    """Interactive HTML (plotly): topic map, keyword bars, hierarchy, and on dated corpora topics over
    time as shares of each period (`topics_over_time`) and/or as documents (`topics_over_time_counts`), as
    `over_time_plots` (topics.over_time) says; all of them load the one `PLOTLY_JS` in `out` (works offline)."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {"topic_map": lambda: model.visualize_topics(), "barchart": lambda: barchart_figure(model),
               "hierarchy": lambda: model.visualize_hierarchy()}
    if over_time is not None:
        names = topic_table(model).set_index("Topic")["Name"].map(lambda name: name[:40]).to_dict()
        if over_time_plots in ("shares", "both"):
            figures["topics_over_time"] = lambda: over_time_figure(over_time, names, "share")
        if over_time_plots in ("counts", "both"):
            figures["topics_over_time_counts"] = lambda: over_time_figure(over_time, names, "count")
    written = []
    for name, draw in figures.items():
        try:
            figure = draw()
        except (ValueError, TypeError, IndexError) as error:  # e.g. too few topics for a 2-D map
            log.warning("plot %s skipped: %s", name, error)
            continue
        # "directory": a <script src="plotly.min.js"> tag; plotly copies the bundle there once, if absent
        figure.write_html(out / f"{name}.html", include_plotlyjs="directory")
        written.append(name)
    return written


def write_report(out: Path, docs: pd.DataFrame, results: pd.DataFrame, table: pd.DataFrame, model, topics: list[int],
                 over_time: pd.DataFrame | None, seeds: int, over_time_plots: str = "both") -> list[str]:
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
        return write_plots(model, over_time, staging / "plots", over_time_plots)


def log_to_wandb(cfg: TopicsConfig, table: pd.DataFrame, model, out: Path, plots: list[str],
                 encoders: dict[str, Path]) -> None:
    """The comparison table, every topic's keywords and the plots (HTML), as one W&B run, with the topic model
    and the topics report as artifacts (inputs: the corpus and the run's fine-tuned encoder when used)."""
    import wandb

    from raytron.tracking import (
        dataset_artifact,
        evaluation_artifact,
        finish_run,
        log_with_inputs,
        model_artifact,
        start_run,
    )

    run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "topics", cfg.model_dump())
    if len(table):
        run.log({"topics/comparison": wandb.Table(dataframe=table.astype({"requested": str}))})
    info = topic_table(model)
    keywords = info.assign(Representation=info["Representation"].map(lambda words: ", ".join(words[:10])))
    run.log({"topics/keywords": wandb.Table(dataframe=keywords[["Topic", "Count", "Name", "Representation"]])})
    for name in plots:  # W&B shows one file: plotly.js from its CDN (the W&B page is online anyway)
        html = (out / "plots" / f"{name}.html").read_text()
        run.log({f"topics/{name}": wandb.Html(html.replace(LOCAL_SCRIPT, cdn_script()), data_is_not_path=True)})
    tuned = [model_artifact(cfg, folder.parent) for name, folder in encoders.items() if name == "fine-tuned"]
    log_with_inputs(run, [model_artifact(cfg, cfg.run_dir / "topic_model"), evaluation_artifact(cfg, out)],
                    [dataset_artifact(cfg), *tuned])
    finish_run(run)


LOCAL_SCRIPT = f'<script charset="utf-8" src="{PLOTLY_JS}"></script>'
"""How `write_plots`' files load plotly.js (plotly's include_plotlyjs="directory")."""


def cdn_script() -> str:
    """The script tag that loads the installed plotly.js version from plotly's CDN."""
    from plotly.offline import get_plotlyjs_version

    return f'<script charset="utf-8" src="https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"></script>'

