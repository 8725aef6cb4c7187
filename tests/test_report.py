"""The report: built by `python jobs/report.py` from real tiny runs of the three tasks, its numbers equal the
runs' own files, a missing part is shown with its command, and headless Chromium renders it offline."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from raytron.config import load_config
from tests.conftest import REPO, SENTIMENT_RUN, require_tool
from tests.wandb_records import metadata, offline_runs

SENTIMENT = SENTIMENT_RUN["run.name"]
TUNED = {"task": "sentiment", "recipe": "configs/sentiment.yaml", "search": "tune-0001", "metric": "val/accuracy",
         "best": 0.875, "date": "2026-11-29T06:00:00Z", "commit": "abc123",
         "values": {"train.lr": 3.0e-5, "train.warmup_fraction": 0.1}}


@pytest.fixture(scope="module")
def runs_root(sentiment_run):
    """Real tiny runs in one folder: the shared DP=2 sentiment fine-tune (conftest.sentiment_run, this module's copy)
    evaluated; summarization's baselines and zero-shot decoder on 2 test rows without a fine-tune (a missing part);
    topics on 300 dated Reuters articles (topics over time)."""
    from raytron.evaluate import sentiment, summarization
    from raytron.topics.pipeline import run as topics

    cfg, run_dir = sentiment_run
    root = run_dir.parent
    sentiment.evaluate(cfg)
    summarization.evaluate(load_config(REPO / "configs" / "summarization.yaml", [
        f"run.output_dir={root}", "run.name=summarization-tiny", "data.train_rows=4", "data.test_rows=2",
        "data.max_length=256", "data.max_summary_tokens=64", "generation.max_new_tokens=8"]))
    topics(load_config(REPO / "configs" / "topics.yaml", [
        f"run.output_dir={root}", "run.name=topics-tiny", "data.dataset=reuters21578", "data.rows=300",
        "topics.topic_counts=[5]", "topics.seeds=[0]", "topics.lda_passes=1", "topics.min_df=2",
        "topics.time_bucket=M"]))
    return root


@pytest.fixture(scope="module")
def report(runs_root, tmp_path_factory):
    """`python jobs/report.py` over the runs, with a tuned sentiment recipe beside the hand-set ones."""
    configs = tmp_path_factory.mktemp("configs")
    for recipe in ("sentiment", "summarization", "topics"):
        shutil.copy(REPO / "configs" / f"{recipe}.yaml", configs)
    (configs / "tuned").mkdir()
    (configs / "tuned" / "sentiment.yaml").write_text(yaml.safe_dump(TUNED, sort_keys=False))
    out = runs_root / "report.html"
    done = subprocess.run([sys.executable, "jobs/report.py", "--runs", str(runs_root), "--configs", str(configs),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith(f"report: {out} (open it in a browser; it needs no network)")
    return out, configs


def cells(page: str) -> dict[str, str]:
    """The page's numbers by their data-key, as shown."""
    return {key: " ".join(html.unescape(text).split())
            for key, text in re.findall(r'data-key="([^"]+)">([^<]*)<', page)}


def test_numbers_equal_the_runs_own_files(runs_root, report):
    page = report[0].read_text()
    shown = cells(page)
    sentiment = json.loads((runs_root / SENTIMENT / "eval" / "metrics.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1"):
        assert shown[f"sentiment.{key}"] == f"{100 * sentiment[key]:.2f}%"
    rouge = json.loads((runs_root / "summarization-tiny" / "eval" / "rouge.json").read_text())
    assert set(rouge["table"]) == {"lead-3", "centroid (unsupervised)", "extractive (oracle-trained scorer)",
                                   "zero-shot decoder"}
    for name, metrics in rouge["table"].items():
        for metric, value in metrics.items():
            expected = f"{value['mean']:.2f} [{value['low']:.2f}, {value['high']:.2f}]"
            assert shown[f"summarization.{name}.{metric}"] == expected
    comparison = pd.read_csv(runs_root / "topics-tiny" / "topics" / "comparison.csv")
    overall = comparison[comparison["requested"] == "all"]
    assert set(overall["model"]) == {"BERTopic (pretrained)", "LDA (gensim)"}
    for row in overall.itertuples():
        assert shown[f"topics.{row.model}.diversity"] == f"{row.diversity:.3f}"
        assert shown[f"topics.{row.model}.npmi"] == (f"{row.npmi:.3f}" if pd.notna(row.npmi) else "—")
    # tokens/s over the optimizer steps: each log window weighs by its time
    windows = [json.loads(line) for line in (runs_root / SENTIMENT / "metrics.jsonl").read_text().splitlines()]
    windows = [w for w in windows if "train/tokens_per_s" in w]
    seconds = [w["train/step_time_ms"] * (w["step"] - p["step"]) / 1000 for p, w in zip([{"step": 0}, *windows[:-1]], windows, strict=True)]
    tokens = sum(w["train/tokens_per_s"] * s for w, s in zip(windows, seconds, strict=True))
    assert shown["sentiment.tokens_per_s"] == f"{tokens / sum(seconds):.0f}"
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)[1])
    assert data["sentiment"]["results"]["confusion_matrix"] == sentiment["confusion_matrix"]
    assert data["summarization"]["results"]["table"] == rouge["table"]
    assert data["sentiment"]["cost"]["steps"] == windows[-1]["step"]


def test_missing_parts_tuning_and_provenance_are_shown(runs_root, report):
    out, configs = report
    page = html.unescape(out.read_text())
    assert (f"no exported model in {runs_root / 'summarization-tiny' / 'model'}: python jobs/finetune.py --config "
            f"configs/summarization.yaml run.name=summarization-tiny run.output_dir={runs_root}") in page
    tuned = re.search(r'<h3>sentiment</h3>(.*?)<h3>', page, re.S)[1]
    assert "search <code>tune-0001</code>" in tuned and "best <code>0.875</code>" in tuned
    assert re.search(r"<td>train.lr</td><td>3e-05</td><td>0.0001</td>", tuned)  # best trial vs configs/sentiment.yaml
    assert re.search(r"<td>train.warmup_fraction</td><td>0.1</td><td>0.06</td>", tuned)  # vs the default
    assert f"not tuned (no {configs}/tuned/topics.yaml): <code>python jobs/tune.py --config configs/topics.yaml" in page
    meta = json.loads((runs_root / SENTIMENT / "model" / "raytron.json").read_text())
    assert f"Provenance: commit {meta['commit']}, data imdb" in page
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(?!data:)', page)  # nothing fetched: all inline


def test_topics_run_logs_its_model_and_evaluation_artifacts(runs_root):
    (run,) = offline_runs(runs_root / "topics-tiny", "topics")
    assert {"topics/topics_over_time", "topics/barchart"} <= {key.rsplit("/", 1)[0] for step in run.history
                                                              for key in step if key.endswith("/_type")}
    model, evaluation = run.artifacts["topics-tiny-topic-model"], run.artifacts["topics-tiny-topics"]
    assert (model.type, evaluation.type) == ("model", "evaluation")
    assert [i["name"] for i in metadata(evaluation)["inputs"]] == ["reuters21578"]


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = require_tool("chromium", "`make chromium` installs Debian's chromium")
    from PIL import Image, ImageStat
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("request", lambda request: problems.append(f"fetched {request.url}")
                if not request.url.startswith(("file:", "data:")) else None)
        page.goto(report[0].as_uri())
        page.wait_for_selector("#rouge-plot .main-svg", timeout=60_000)
        page.wait_for_selector("#topics-over-time .main-svg", timeout=60_000)
        assert page.eval_on_selector("#confusion-matrix", "image => image.naturalWidth") > 100
        assert page.locator("#rouge-plot g.trace.bars").count() == 4  # one bar series per technique
        page.screenshot(path=tmp_path / "report.png", full_page=True)
        browser.close()
    assert problems == []
    image = Image.open(tmp_path / "report.png").convert("L")
    assert image.height > 1500 and ImageStat.Stat(image).stddev[0] > 20  # a drawn page, not a blank one


def test_missing_runs_are_listed_with_their_commands(tmp_path):
    (tmp_path / "runs").mkdir()
    done = subprocess.run([sys.executable, "jobs/report.py", "--runs", str(tmp_path / "runs")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = html.unescape((tmp_path / "runs" / "report.html").read_text())
    assert page.count('class="missing"') == 3 and "python jobs/topics.py --config configs/topics.yaml" in page
    gone = subprocess.run([sys.executable, "jobs/report.py", "--runs", str(tmp_path / "nowhere")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    assert gone.stderr.strip().splitlines()[-1] == (f"error: --runs {tmp_path / 'nowhere'}: no such folder; run a job "
                                                    "first (make demo) or give run.output_dir")


def test_demo_steps_are_jobs_with_valid_recipes():
    """Each step of `make demo` (jobs/demo.py) is a job script here, and its recipe with its overrides validates.
    The demo's runs are not the recipes' own: the README's publish commands (the recipes as they are) would otherwise
    try to resume the demo's smaller runs and be refused (data.max_length 256 vs 384)."""
    from raytron.jobs.demo import STEPS

    for _, command in STEPS:
        assert (REPO / command[0]).is_file(), command
        if "--config" in command:
            at = command.index("--config")
            demo, recipe = load_config(REPO / command[at + 1], command[at + 2:]), load_config(REPO / command[at + 1])
            assert demo.run.name != recipe.run.name, command
    assert [command[0] for _, command in STEPS][-1] == "jobs/report.py"
