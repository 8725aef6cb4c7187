"""The topic job: embed, sweep BERTopic vs LDA beside the run's own BERTopic fit, report, save."""

from __future__ import annotations

import logging

import pandas as pd
import ray

from raytron.config import TopicModelConfig, TopicsConfig
from raytron.data.news import load_documents
from raytron.runtime import absolute_paths, connect_ray, use_gpu
from raytron.topics.embed import cached_embed, encoder_folders, main_encoder
from raytron.topics.export import save_topic_model
from raytron.topics.metrics import vocabulary
from raytron.topics.report import comparison_table, log_to_wandb, markdown, topics_over_time, write_report
from raytron.topics.sweep import Journal, fit_main_task, sweep

log = logging.getLogger("raytron.topics")


def count_bounds(cfg: TopicModelConfig) -> tuple[int | None, int | None]:
    """Floor and cap of the automatic topic count: min_topics and max_topics, each defaulting to the sweep's
    smallest and largest topic count (None: no bound)."""
    counts = cfg.topic_counts
    return (cfg.min_topics if cfg.min_topics is not None else min(counts, default=None),
            cfg.max_topics if cfg.max_topics is not None else max(counts, default=None))


def run(cfg: TopicsConfig) -> dict:
    """Embed the corpus with every encoder (Ray Data), fit the run's BERTopic model as a Ray task while
    the sweep's tasks score BERTopic and LDA, then write `<run>/topics/`, `<run>/topic_model/` and W&B."""
    cfg = absolute_paths(cfg)
    connect_ray()
    gpu = use_gpu(cfg)
    docs = load_documents(cfg.data)
    texts = list(docs["text"])
    encoders = encoder_folders(cfg)
    embeddings = {name: cached_embed(docs, name, folder, cfg, gpu) for name, folder in encoders.items()}
    journal = Journal(cfg.run_dir / "topics-sweep.jsonl", resume=cfg.run.resume)
    vocab = vocabulary(texts, cfg.topics.min_df, cfg.topics.max_df)
    log.info("vocabulary: %d words in %d+ documents and at most %.0f%% of them", len(vocab), cfg.topics.min_df,
             100 * cfg.topics.max_df)

    main_name, main_folder = main_encoder(cfg, encoders)
    vectors = embeddings.get(main_name)
    if vectors is None:
        vectors = cached_embed(docs, main_name, main_folder, cfg, gpu)
    counts = cfg.topics.topic_counts
    floor, cap = count_bounds(cfg.topics)
    log.info("fitting the run's BERTopic model on %d documents (%s encoder), a Ray task beside the sweep's; its topic "
             "count: %s", len(docs), main_name,
             f"topics.main_topics={cfg.topics.main_topics}" if cfg.topics.main_topics is not None else
             f"automatic (main_topics=null), floor {floor}, cap {cap} (topics.min_topics, max_topics; unset: the "
             "sweep's topic_counts)")
    main_fit = fit_main_task.remote(texts, vectors, cfg.topics, cfg.topics.seeds[0], cfg.topics.main_topics, vocab,
                                    floor, cap)
    results = sweep(texts, vocab, embeddings, cfg.topics, journal) if counts else pd.DataFrame()
    table = comparison_table(results) if len(results) else pd.DataFrame()
    model, topics, how = ray.get(main_fit)
    log.info("the run's model: %s", how)

    over_time = None if cfg.topics.over_time == "none" else topics_over_time(model, texts, topics, docs["date"],
                                                                             cfg.topics.time_bucket)
    out = cfg.run_dir / "topics"
    plots = write_report(out, docs, results, table, model, topics, over_time, len(cfg.topics.seeds),
                         cfg.topics.over_time)
    meta = save_topic_model(cfg, model, main_folder, len(docs), table, how)
    log.info("topics in %s; model in %s", out, cfg.run_dir / "topic_model")
    if len(table):
        log.info("comparison:\n%s", markdown(table, len(docs), len(cfg.topics.seeds)))
    log_to_wandb(cfg, table, model, out, plots, encoders)
    return {"documents": len(docs), "topics": meta["topics"], "table": table, "plots": plots, "over_time": over_time}
