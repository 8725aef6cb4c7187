"""The topic job: embed with Ray Data, sweep BERTopic and LDA over topic counts and seeds as Ray
tasks, compare NPMI/diversity; beside the sweep, fit the run's BERTopic model (keywords, topics over
time on dated corpora, interactive HTML plots) and save it with safetensors. Outputs go to
`<run>/topics/` and `<run>/topic_model/` (both atomically) and to W&B."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import ray.data

from raytron.atomic import replace_dir
from raytron.config import TopicModelConfig, TopicsConfig
from raytron.data.news import blocks, load_documents
from raytron.inference.embedder import SentenceEmbedder
from raytron.models.pretrained import resolve_pretrained
from raytron.registry import publish_run_model
from raytron.runtime import absolute_paths, connect_ray, use_gpu
from raytron.store import write_model_folder
from raytron.topics.metrics import diversity, npmi, tokenize, vocabulary
from raytron.topics.models import bertopic_words, cluster, fit_bertopic, fit_lda, merge

log = logging.getLogger("raytron.topics")
SINGLE_THREADED = {"env_vars": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
"""Sweep tasks run side by side, one core each: no nested thread pools."""
fit_in_worker = ray.remote(num_cpus=1, runtime_env=SINGLE_THREADED)(fit_bertopic)
"""Every BERTopic fit runs in a Ray worker: in the driver, after ray.init, pynndescent's numba kernels
(UMAP's neighbour search above 4,096 documents) fail to compile."""


def embed(docs: pd.DataFrame, encoder_dir: Path, cfg: TopicsConfig, gpu: bool) -> np.ndarray:
    """Unit-length sentence embeddings of every document, in order, from a Ray Data actor pool of
    `resources.num_workers` encoders (a GPU each, or on CPU the worker's cores as threads).

    Documents go shortest first (batches pad to their longest) in blocks of one batch each (Ray
    Data's progress moves batch by batch, and the pool's actors share the work)."""
    rows = pd.DataFrame({"row": np.arange(len(docs)), "text": docs["text"].to_numpy()})
    rows = rows.iloc[np.argsort(rows["text"].str.len().to_numpy(), kind="stable")]
    embedded = ray.data.from_pandas(blocks(rows, -(-len(rows) // cfg.topics.embed_batch_size))).map_batches(
        SentenceEmbedder, fn_constructor_kwargs={"encoder_dir": str(encoder_dir), "max_length": cfg.data.max_length},
        batch_size=cfg.topics.embed_batch_size, compute=ray.data.ActorPoolStrategy(size=cfg.resources.num_workers),
        num_gpus=1 if gpu else 0, num_cpus=0.5 if gpu else cfg.resources.cpus_per_worker,
    ).select_columns(["row", "embedding"]).to_pandas().sort_values("row")["embedding"]
    return np.stack(embedded.to_list()).astype(np.float32)


def embeddings_key(docs: pd.DataFrame, encoder_dir: Path, max_length: int) -> str:
    """Fingerprint of what embeddings depend on: the documents' ids, the encoder's weights, the token limit."""
    digest = hashlib.sha1(json.dumps([max_length, docs["id"].astype(str).tolist()]).encode())
    for weights in sorted(Path(encoder_dir).glob("*.safetensors")):
        digest.update(weights.read_bytes())
    return digest.hexdigest()[:16]


def cached_embed(docs: pd.DataFrame, name: str, encoder_dir: Path, cfg: TopicsConfig, gpu: bool) -> np.ndarray:
    """`embed`, kept in `<run>/embeddings/<name>.npz` with its `embeddings_key`: a rerun (a resumed
    sweep, a refit) with the same documents, weights and token limit reuses them."""
    path = cfg.run_dir / "embeddings" / f"{name}.npz"
    key = embeddings_key(docs, encoder_dir, cfg.data.max_length)
    if path.is_file():
        try:
            with np.load(path) as stored:
                if str(stored["key"]) == key:
                    log.info("%s embeddings reused from %s", name, path)
                    return stored["embeddings"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # unreadable: computed again
            log.warning("%s is unreadable (%s): embedding again", path, error)
    log.info("embedding %d documents with the %s encoder %s (GPU=%s)", len(docs), name, encoder_dir, gpu)
    vectors = embed(docs, encoder_dir, cfg, gpu)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{name}.partial.npz")
    np.savez(partial, embeddings=vectors, key=key)
    partial.replace(path)
    return vectors


def bucket_dates(dates: pd.Series, bucket: str) -> list[pd.Timestamp]:
    """Each date's bucket start: the day, the Monday of its week, or the first of its month."""
    return list(pd.to_datetime(dates).dt.to_period(bucket).dt.start_time)


def _scores(words: list[list[str]], tokens, dictionary, cfg: TopicModelConfig) -> dict:
    return {"topics": len(words), "npmi": npmi(words, tokens, dictionary, cfg.top_words),
            "diversity": diversity(words, cfg.diversity_words)}


@ray.remote(num_cpus=1, runtime_env=SINGLE_THREADED)
def _score_bertopic(texts, embeddings, vocab, tokens, dictionary, cfg: TopicModelConfig, seed: int,
                    counts: list[int]) -> list[dict]:
    """One UMAP + HDBSCAN fit, merged to every topic count."""
    clustered = cluster(texts, embeddings, cfg, seed, vocab)
    return [{"requested": count, **_scores(bertopic_words(merge(clustered, texts, count)[0]), tokens, dictionary, cfg)}
            for count in counts]


@ray.remote(num_cpus=1, runtime_env=SINGLE_THREADED)
def _score_lda(tokens, dictionary, cfg: TopicModelConfig, seed: int, count: int) -> list[dict]:
    words = fit_lda(tokens, dictionary, count, seed, cfg.lda_passes, cfg.diversity_words)
    return [{"requested": count, **_scores(words, tokens, dictionary, cfg)}]


def setup_key(texts: list[str], embeddings: dict[str, np.ndarray], cfg: TopicModelConfig) -> str:
    """What a sweep result depends on besides model, count and seed: the documents, every encoder's
    embeddings (a re-tuned encoder) and the fitting settings. A journal row with another key is stale."""
    settings = cfg.model_dump(exclude={"topic_counts", "seeds", "main_topics", "time_bucket", "embed_batch_size",
                                       "encoder"})
    digest = hashlib.sha1(json.dumps([texts, settings], sort_keys=True).encode())
    for name in sorted(embeddings):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(embeddings[name]).tobytes())
    return digest.hexdigest()[:12]


def sweep(texts: list[str], vocab: list[str], embeddings: dict[str, np.ndarray], cfg: TopicModelConfig,
          journal: Path) -> pd.DataFrame:
    """NPMI and diversity of BERTopic (per encoder) and LDA at every topic count and seed.

    A Ray task per BERTopic encoder and seed (one UMAP + HDBSCAN fit, merged to each count) and per
    LDA count and seed. Results are appended to `journal` (JSON lines) as they finish, and a rerun
    skips those already there: an interrupted sweep resumes instead of starting over.
    """
    from gensim.corpora import Dictionary

    key = setup_key(texts, embeddings, cfg)
    done = [json.loads(line) for line in journal.read_text().splitlines()] if journal.is_file() else []
    done = [r for r in done if r.get("setup") == key]
    finished = {(r["model"], r["requested"], r["seed"]) for r in done}
    tokens = tokenize(texts, vocab)
    dictionary = Dictionary(tokens)
    shared = {name: ray.put(value) for name, value in
              {"texts": texts, "vocab": vocab, "tokens": tokens, "dictionary": dictionary}.items()}
    pending = {}
    for encoder, vectors in embeddings.items():
        stored = ray.put(vectors)
        for seed in cfg.seeds:
            counts = [c for c in cfg.topic_counts if (f"BERTopic ({encoder})", c, seed) not in finished]
            if counts:
                pending[_score_bertopic.remote(shared["texts"], stored, shared["vocab"], shared["tokens"],
                                               shared["dictionary"], cfg, seed, counts)] = (f"BERTopic ({encoder})", seed)
    for count in cfg.topic_counts:
        for seed in cfg.seeds:
            if ("LDA (gensim)", count, seed) not in finished:
                pending[_score_lda.remote(shared["tokens"], shared["dictionary"], cfg, seed, count)] = (
                    "LDA (gensim)", seed)
    log.info("sweep: %d Ray tasks over %d documents and %d words (%d results already in %s)", len(pending),
             len(texts), len(vocab), len(done), journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        model, seed = pending.pop(ready[0])
        for result in ray.get(ready[0]):
            row = {"model": model, "seed": seed, "setup": key, **result}
            with open(journal, "a") as out:
                out.write(json.dumps(row) + "\n")
            done.append(row)
            log.info("%s, %d topics, seed %d: NPMI %.3f, diversity %.3f (%d tasks left)", model, row["topics"], seed,
                     row["npmi"], row["diversity"], len(pending))
    wanted = {(m, c, s) for c in cfg.topic_counts for s in cfg.seeds
              for m in [*(f"BERTopic ({e})" for e in embeddings), "LDA (gensim)"]}
    return pd.DataFrame([r for r in done if (r["model"], r["requested"], r["seed"]) in wanted])


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds, per model and requested topic count, plus each model's average."""
    by_count = results.groupby(["model", "requested"]).agg(
        topics=("topics", "mean"), npmi=("npmi", "mean"), npmi_sd=("npmi", "std"), diversity=("diversity", "mean"),
        diversity_sd=("diversity", "std")).reset_index()
    overall = results.groupby("model").agg(npmi=("npmi", "mean"), diversity=("diversity", "mean")).reset_index()
    overall["requested"] = "all"
    return pd.concat([by_count, overall], ignore_index=True).fillna(0.0)


def markdown(table: pd.DataFrame, docs: int, seeds: int) -> str:
    lines = [f"NPMI (top-10 words) and topic diversity (top-25 words) on {docs} documents; mean (sd) over "
             f"{seeds} seed(s)", "", "| model | topics requested | topics found | NPMI | diversity |", "|---|---|---|---|---|"]
    for row in table.itertuples():
        found = f"{row.topics:.1f}" if row.requested != "all" else ""
        npmi_sd = f" ({row.npmi_sd:.3f})" if row.requested != "all" else ""
        div_sd = f" ({row.diversity_sd:.3f})" if row.requested != "all" else ""
        lines.append(f"| {row.model} | {row.requested} | {found} | {row.npmi:.3f}{npmi_sd} | {row.diversity:.3f}{div_sd} |")
    return "\n".join(lines) + "\n"


def write_plots(model, docs: list[str], over_time: pd.DataFrame | None, out: Path) -> list[str]:
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


def run(cfg: TopicsConfig) -> dict:
    cfg = absolute_paths(cfg)
    connect_ray()
    gpu = use_gpu(cfg)
    docs = load_documents(cfg.data)
    texts = list(docs["text"])
    encoders = {"pretrained": resolve_pretrained(cfg.model.pretrained)}
    tuned = cfg.run_dir / "model" / "encoder"
    if (tuned / "config.json").is_file():
        encoders["fine-tuned"] = tuned
    else:
        log.warning("no fine-tuned encoder at %s (jobs/finetune.py --config ...): comparing the pretrained one only", tuned)
    embeddings = {}
    for name, folder in encoders.items():
        embeddings[name] = cached_embed(docs, name, folder, cfg, gpu)
    journal = cfg.run_dir / "topics-sweep.jsonl"
    if not cfg.run.resume:
        journal.unlink(missing_ok=True)
    vocab = vocabulary(texts, cfg.topics.min_df, cfg.topics.max_df)
    log.info("vocabulary: %d words in %d+ documents and at most %.0f%% of them", len(vocab), cfg.topics.min_df,
             100 * cfg.topics.max_df)
    main_encoder = Path(cfg.topics.encoder) if cfg.topics.encoder else encoders.get("fine-tuned", encoders["pretrained"])
    main_name = next((n for n, f in encoders.items() if f == main_encoder), "given")
    vectors = embeddings[main_name] if main_name in embeddings else cached_embed(docs, main_name, main_encoder, cfg, gpu)
    log.info("fitting the run's BERTopic model on %d documents (%s encoder), a Ray task beside the sweep's", len(docs),
             main_name)
    main_fit = fit_in_worker.remote(texts, vectors, cfg.topics, cfg.topics.seeds[0], cfg.topics.main_topics, vocab)
    results = sweep(texts, vocab, embeddings, cfg.topics, journal) if cfg.topics.topic_counts else pd.DataFrame()
    table = comparison_table(results) if len(results) else pd.DataFrame()
    model, topics = ray.get(main_fit)
    info = model.get_topic_info()
    over_time = None
    if docs["date"].notna().all():
        stamps = bucket_dates(docs["date"], cfg.topics.time_bucket)
        over_time = model.topics_over_time(texts, stamps, topics=topics, nr_bins=None)
    out = cfg.run_dir / "topics"
    with replace_dir(out) as staging:
        if len(results):
            results.to_csv(staging / "sweep.csv", index=False)
            table.to_csv(staging / "comparison.csv", index=False)
            (staging / "comparison.md").write_text(markdown(table, len(docs), len(cfg.topics.seeds)))
        info.drop(columns=["Representative_Docs"], errors="ignore").to_csv(staging / "topics.csv", index=False)
        pd.DataFrame({"id": docs["id"], "topic": topics, "label": docs["label"]}).to_parquet(staging / "assignments.parquet")
        if over_time is not None:
            over_time.to_csv(staging / "topics_over_time.csv", index=False)
        plots = write_plots(model, texts, over_time, staging / "plots")

    def fill(staging: Path) -> None:  # self-contained: the encoder travels with the topics it was fitted on
        model.save(staging / "bertopic", serialization="safetensors", save_ctfidf=True, save_embedding_model=False)
        shutil.copytree(main_encoder, staging / "encoder")

    meta = {"task": "topics", "encoder": "encoder", "encoder_source": str(main_encoder), "max_length": cfg.data.max_length,
            "dataset": cfg.data.dataset, "documents": len(docs), "topics": int((info["Topic"] != -1).sum()),
            "comparison": table.to_dict("records") if len(table) else [], "config": cfg.model_dump()}
    write_model_folder(cfg.run_dir / "topic_model", fill, meta)
    publish_run_model(cfg, cfg.run_dir / "topic_model", "topics")
    log.info("topics in %s; model in %s", out, cfg.run_dir / "topic_model")
    if len(table):
        log.info("comparison:\n%s", markdown(table, len(docs), len(cfg.topics.seeds)))
    log_to_wandb(cfg, table, info, out, plots)
    return {"documents": len(docs), "topics": meta["topics"], "table": table, "plots": plots,
            "over_time": over_time}


def log_to_wandb(cfg: TopicsConfig, table: pd.DataFrame, info: pd.DataFrame, out: Path, plots: list[str]) -> None:
    import wandb

    from raytron.tracking import start_run

    run = start_run(cfg.wandb, cfg.run_dir, cfg.run.name, "topics", cfg.model_dump())
    if len(table):
        run.log({"topics/comparison": wandb.Table(dataframe=table.astype({"requested": str}))})
    keywords = info.assign(Representation=info["Representation"].map(lambda words: ", ".join(words[:10])))
    run.log({"topics/keywords": wandb.Table(dataframe=keywords[["Topic", "Count", "Name", "Representation"]])})
    for name in plots:
        run.log({f"topics/{name}": wandb.Html(str(out / "plots" / f"{name}.html"))})
    run.finish()
