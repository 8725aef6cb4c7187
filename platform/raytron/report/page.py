"""The report as one self-contained HTML page: numbers beside published anchors, plots, tuning, cost, provenance.

Plots are the runs' own figures (the evaluator's ROUGE chart, the topic job's topics over time, the confusion
matrix PNG) with plotly.js and images inlined: the page opens without network.
"""

from __future__ import annotations

import ast
import base64
import datetime
import json
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from raytron.evaluate.rouge import METRICS
from raytron.report import anchors
from raytron.report.runs import Run
from raytron.store import git_commit

TEMPLATE = Path(__file__).with_name("page.html.j2")


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def figure_html(figure) -> str:
    """A plotly figure as a <div> and its script, drawing with the page's one inline plotly.js."""
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


def rouge_plot(run: Run) -> str | None:
    from raytron.evaluate.summarization import rouge_figure

    return figure_html(rouge_figure(run.results["table"], run.results["rows"])) if run.results else None


def topics_over_time_plot(run: Run) -> str | None:
    """The topic job's topics-over-time figure, redrawn from its topics_over_time.csv (None: undated corpus)."""
    from raytron.topics.report import over_time_figure

    if not run.results or run.results["over_time"] is None:
        return None
    over_time = pd.read_csv(run.results["over_time"], parse_dates=["Timestamp"])
    names = {row["Topic"]: str(row["Name"])[:40] for row in run.results["topics"]}
    return figure_html(over_time_figure(over_time, names, "share"))


def topic_rows(run: Run) -> dict[str, list[dict]]:
    """The sweep's mean over topic counts and seeds per model (the `all` rows), and the largest topics."""
    if not run.results:
        return {"overall": [], "largest": []}
    overall = [row for row in run.results["comparison"] if str(row["requested"]) == "all"]
    largest = sorted((row for row in run.results["topics"] if row["Topic"] != -1), key=lambda row: -row["Count"])[:10]
    # topics.csv holds each topic's keywords as a Python list literal
    largest = [{**row, "Representation": ", ".join(ast.literal_eval(row["Representation"]))} for row in largest]
    return {"overall": overall, "largest": largest}


def render(runs: dict[str, Run], tuning: dict[str, dict | None], runs_root: Path, configs: Path, tuned_dir: Path) -> str:
    """The page for the latest run of each task (`runs`) and each task's tuned recipe (`tuning`, read from
    `tuned_dir` beside the hand-set recipes in `configs`)."""
    sentiment, summarization, topics = runs["sentiment"], runs["summarization"], runs["topics"]
    plots = {"rouge": rouge_plot(summarization), "topics_over_time": topics_over_time_plot(topics)}
    confusion = sentiment.folder / "eval" / "confusion_matrix.png" if sentiment.results else None
    numbers = {task: {"folder": str(run.folder) if run.folder else None, "results": run.results, "cost": run.cost}
               for task, run in runs.items()}
    numbers["topics"]["results"] = topic_rows(topics) if topics.results else None
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE.parent), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    environment.filters["yaml"] = lambda value: yaml.safe_dump(value, sort_keys=False)
    environment.filters["pct"] = lambda value: f"{100 * value:.2f}%"
    needs_plotly = any(plots.values())
    from plotly.offline import get_plotlyjs

    return environment.get_template(TEMPLATE.name).render(
        runs=runs, tuning=tuning, anchors=anchors, metrics=METRICS, plots=plots, topic_rows=topic_rows(topics),
        confusion=data_uri(confusion, "image/png") if confusion and confusion.is_file() else None,
        plotly_js=get_plotlyjs() if needs_plotly else "", numbers=json.dumps(numbers, default=str).replace("</", "<\\/"),
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), commit=git_commit(),
        runs_root=runs_root, configs=configs, tuned_dir=tuned_dir)
