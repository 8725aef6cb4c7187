"""Launch a fine-tune: Ray Data splits -> Ray Train TorchTrainer of Megatron-Core workers, state in the run's storage.

The run lives at `run.output_dir/run.name` (a path or a URI, `raytron.storage`); Ray Train's storage is its
`ray/` folder. Resuming is decided here, on the driver, before any worker starts: the newest
`checkpoint_step-*` is verified and checked against the config, and its location handed to the workers
(Ray Train V2's migration advice for `resume_from_checkpoint`); Ray's own run snapshot is removed first,
since it may name checkpoints a user deleted. Within the job, a restarted worker group resumes from the
newest checkpoint Ray Train recorded.
"""

from __future__ import annotations

import logging

import pyarrow.fs as pafs
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from raytron.config import JobConfig
from raytron.errors import RaytronError
from raytron.registry import publish_run_model
from raytron.runtime import absolute_paths, connect_ray, use_gpu
from raytron.storage import delete, filesystem, join, listing, pull, reaching, shown
from raytron.train import checkpoint
from raytron.train.loop import train_worker
from raytron.train.tasks import load_task_splits, make_task

log = logging.getLogger("raytron.launcher")
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"
ORDERED_INGEST = ray.train.DataConfig.default_ingest_options()
ORDERED_INGEST.preserve_order = True  # every rank and every rerun sees a split's rows in one order (the sampler's index)


def checkpoints(fs: pafs.FileSystem, path: str) -> list[str]:
    """The run's checkpoint folders, oldest first."""
    infos = listing(fs, path)
    return sorted(i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))


def check_resumable(state: dict, cfg: JobConfig, num_train_rows: int, where: str) -> None:
    """Refuse a resume whose data position would mean other batches, whose rows would be other tokens, or whose
    optimizer state cannot be read into this layout (the LR schedule may change: it is logged). A setting the
    checkpoint predates is not compared, except those that were off before they existed."""
    state = {"bucket_by_length": False, "train.distributed_optimizer": False, **state}
    changed = {k: (state[k], v) for k, v in checkpoint.run_identity(cfg, num_train_rows).items()
               if k in state and state[k] != v}
    if changed:
        was = ", ".join(f"{k}={a}" for k, (a, _) in changed.items())
        raise RaytronError(
            f"the checkpoint {shown(where)} at step {state['step']} was trained with {was}, but this run has "
            f"{', '.join(f'{k}={b}' for k, (_, b) in changed.items())}: its step count and data position would "
            "not mean the same batches of the same tokens, or its optimizer state would not fit this layout. Rerun "
            "with the checkpoint's settings (train.global_batch_size, the data rows, train.seed, "
            "train.bucket_by_length, model.pretrained, data.max_length and the other data.* token settings, "
            "train.distributed_optimizer and, with it, parallel.tensor/pipeline), or start over with "
            "run.resume=false or a new run.name.")


def resume_point(cfg: JobConfig, fs: pafs.FileSystem, path: str, num_train_rows: int) -> str | None:
    """The location of the run's newest checkpoint, verified and compatible; None for a fresh run."""
    found = checkpoints(fs, path)
    if not found:
        return None
    where = join(cfg.run_uri, "ray", cfg.run.name, found[-1].rsplit("/", 1)[-1])
    state = checkpoint.verify(fs, found[-1], where)
    check_resumable(state, cfg, num_train_rows, where)
    if fs.get_file_info(f"{path}/{RAY_SNAPSHOT}").type == pafs.FileType.File:
        fs.delete_file(f"{path}/{RAY_SNAPSHOT}")
    log.info("resuming from %s (step %d)", shown(where), state["step"])
    return where


def prepare_datasets(cfg: JobConfig) -> tuple[dict[str, ray.data.Dataset], dict[str, int]]:
    """The task's train and val splits, encoded once (or read from the tokenized-split cache), and their row counts."""
    splits, rows = load_task_splits(cfg)
    columns = list(make_task(cfg).columns)
    # The data layer materialized each split in the object store, or left it to stream from its parquet cache
    # when large (raytron.data.cache, logged); either way every worker reads all of it, in one order (ORDERED_INGEST),
    # and takes its slices of each seeded global batch (raytron.train.sampler), so nothing is split here.
    return ({split: splits[split].select_columns(columns) for split in ("train", "val")},
            {split: rows[split] for split in ("train", "val")})


def check_split_sizes(cfg: JobConfig, rows: dict[str, int]) -> None:
    """Refuse, before any worker starts, splits the loop cannot use: fewer training rows than one global batch,
    or fewer validation rows than data-parallel ranks (each rank validates its own share, raytron.train.sampler)."""
    if rows["train"] < cfg.train.global_batch_size:
        raise RaytronError(
            f"{rows['train']} training rows make no full step of train.global_batch_size={cfg.train.global_batch_size}: "
            "lower train.global_batch_size, or give more rows (data.train_rows)")
    if rows["val"] < cfg.parallel.data:
        raise RaytronError(
            f"{rows['val']} validation rows for {cfg.parallel.data} data-parallel ranks: each rank validates its own "
            f"share, so it needs at least {cfg.parallel.data} (data.val_rows), or fewer ranks (resources.num_workers)")


def finetune(cfg: JobConfig, prepared: tuple[dict[str, ray.data.Dataset], dict[str, int]] | None = None,
             callbacks: list = ()) -> ray.train.Result:
    """Fine-tune `cfg`'s task. `prepared`: `prepare_datasets`' result, shared by Ray Tune's trials; `callbacks`: Ray
    Train callbacks (Tune's report callback, `raytron.tune.trainable`)."""
    cfg = absolute_paths(cfg)
    connect_ray()
    gpu = use_gpu(cfg)
    fs, storage = filesystem(join(cfg.run_uri, "ray"))
    run_path = f"{storage}/{cfg.run.name}"
    datasets, rows = prepared or prepare_datasets(cfg)
    check_split_sizes(cfg, rows)  # before anything of an earlier run is deleted
    num_train_rows = rows["train"]
    with reaching(cfg.run_uri, "run storage"):
        if not cfg.run.resume:
            delete(join(cfg.run_uri, "ray"))
            delete(join(cfg.run_uri, "metrics.jsonl"))
            (cfg.run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a URI run's local mirror
        fs.create_dir(run_path, recursive=True)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with reaching(cfg.run_uri, "run storage"):
        resume_from = resume_point(cfg, fs, run_path, num_train_rows)
    log.info("data: %d training rows from %s; %d workers (TP=%d, DP=%d), GPU=%s; run state in %s", num_train_rows,
             getattr(cfg.data, "prepared_dir", None) or cfg.data.data_dir, cfg.resources.num_workers,
             cfg.parallel.tensor, cfg.parallel.data, gpu, shown(cfg.run_uri))
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": cfg.model_dump(), "resume_from": resume_from},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.resources.num_workers,
            use_gpu=gpu,
            resources_per_worker={"CPU": cfg.resources.cpus_per_worker, **({"GPU": cfg.resources.gpus_per_worker} if gpu else {})},
            placement_strategy=cfg.resources.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage,
            storage_filesystem=fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=1),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=[], execution_options=ORDERED_INGEST),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise RaytronError(
            f"training failed: {error}\nThe last checkpoint is under {shown(join(cfg.run_uri, 'ray', cfg.run.name))}; "
            "rerun the same command to resume from it, or add run.resume=false to start over."
        ) from error
    with reaching(cfg.run_uri, "run storage"):
        for stale in checkpoints(fs, run_path)[:-cfg.train.keep_checkpoints]:  # a resumed run's older ones
            fs.delete_dir(stale)
        pull(cfg.run_uri, cfg.run_dir, only=("model/", "metrics.jsonl"))  # what rank 0 wrote, on whichever node
    publish_run_model(cfg, cfg.run_dir / "model", make_task(cfg).published_as)
    return result
