"""Published figures each task's metrics are shown beside, with their sources (full test sets, not our slices)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    """One published result."""

    system: str
    values: dict[str, float]
    """Metric name (as the run's files name it) -> published value, in the run's units."""
    source: str
    """Paper, table and where to find it."""
    url: str


IMDB = (
    Anchor("BERT-base, fine-tuned", {"accuracy": 0.9460},
           "Sun et al. 2019, How to Fine-Tune BERT for Text Classification? (test error 5.40%)",
           "https://arxiv.org/abs/1905.05583"),
    Anchor("BERT-base, fine-tuned", {"accuracy": 0.9346},
           "Sanh et al. 2019, DistilBERT, Table 2 (IMDb test accuracy)", "https://arxiv.org/abs/1910.01108"),
    Anchor("DistilBERT (66M), fine-tuned", {"accuracy": 0.9282},
           "Sanh et al. 2019, DistilBERT, Table 2 (IMDb test accuracy)", "https://arxiv.org/abs/1910.01108"),
)
"""IMDb sentiment, accuracy on the 25,000 test reviews."""

CNN_DM = (
    Anchor("Lead-3", {"rouge1": 40.34, "rouge2": 17.70, "rougeLsum": 36.57},
           "See et al. 2017, Get To The Point, Table 1", "https://arxiv.org/abs/1704.04368"),
    Anchor("Pointer-generator + coverage", {"rouge1": 39.53, "rouge2": 17.28, "rougeLsum": 36.38},
           "See et al. 2017, Get To The Point, Table 1", "https://arxiv.org/abs/1704.04368"),
    Anchor("BertSumExt (extractive)", {"rouge1": 43.25, "rouge2": 20.24, "rougeLsum": 39.63},
           "Liu & Lapata 2019, Text Summarization with Pretrained Encoders, Table 2", "https://arxiv.org/abs/1908.08345"),
    Anchor("BART-large (abstractive)", {"rouge1": 44.16, "rouge2": 21.28, "rougeLsum": 40.90},
           "Lewis et al. 2020, BART, Table 3", "https://arxiv.org/abs/1910.13461"),
)
"""CNN/DailyMail, ROUGE-1/2/L F1 x 100 on the 11,490 test articles (the papers' ROUGE-L is summary-level: rougeLsum)."""

NEWSGROUPS = (
    Anchor("BERTopic (all-mpnet-base-v2)", {"npmi": 0.166, "diversity": 0.851},
           "Grootendorst 2022, BERTopic, Table 1 (20 NewsGroups; mean over 10-50 topics, 3 runs each)",
           "https://arxiv.org/abs/2203.05794"),
    Anchor("LDA", {"npmi": 0.058, "diversity": 0.749},
           "Grootendorst 2022, BERTopic, Table 1 (20 NewsGroups; mean over 10-50 topics, 3 runs each)",
           "https://arxiv.org/abs/2203.05794"),
)
"""20 Newsgroups topics: NPMI of the top 10 words, topic diversity of the top 25."""
