"""Shared fixtures: the data root, a local Ray cluster, small job configs."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("RAYTRON_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def environment():
    if not (DATA_ROOT / "imdb" / "imdb_50k.jsonl.gz").is_file():
        pytest.exit(f"the real corpora are missing under {DATA_ROOT}: set RAYTRON_DATA_DIR", returncode=2)
    os.environ["RAYTRON_DATA_DIR"] = str(DATA_ROOT)
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-tag writes to the GCS from tests
    from raytron.runtime import set_ray_train_defaults

    set_ray_train_defaults()  # before ray.init, as connect_ray: the test clusters' processes (Tune's trials too) inherit them


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs, as on a laptop) for every test that needs Ray."""
    import ray

    # address="local": always a fresh cluster, never one a `ray start` left behind on this machine
    # log_to_driver=False: Ray's log-printing thread has hung ray.shutdown() at session end here;
    # tests assert on files and return values, not on worker logs.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    stop_ray(ray)


_session = {}


def stop_ray(ray) -> None:
    """ray.shutdown(), bounded: in Ray 2.60 its disconnect has waited forever on a listener thread at the end of
    this suite (CI 2026-12-02: tests/test_tensor_parallel.py's teardown waited out the whole 60 s this bound was then;
    the other modules' last teardowns, shutdown included, took 1.4-2.2 s). Then the cluster's processes are killed
    directly, and pytest exits without running Ray's atexit shutdown (which would wait the same way)."""
    stopper = threading.Thread(target=ray.shutdown, daemon=True)
    stopper.start()
    stopper.join(20)
    if stopper.is_alive():
        node = ray._private.worker._global_node
        if node is not None:
            node.kill_all_processes(check_alive=False, allow_graceful=False)
        _session["ray_hung"] = True


def pytest_sessionfinish(session, exitstatus):
    _session["status"] = int(exitstatus)


def pytest_unconfigure(config):
    if _session.get("ray_hung"):  # the summary is printed by now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_session.get("status", 1))


def tiny_overrides(run_dir: Path, **extra) -> list[str]:
    """A fine-tune small enough for a 2-core CI machine: 48 reviews of 64 tokens."""
    values = {
        "run.output_dir": str(run_dir),
        "data.max_length": 64,
        "data.head_tokens": 16,
        "data.train_rows": 48,
        "data.val_rows": 32,
        "data.test_rows": 40,
        "data.preprocess_actors": 1,
        "train.micro_batch_size": 8,
        "train.global_batch_size": 16,
        "train.lr": 3.0e-4,
        "train.warmup_fraction": 0.0,
        "train.log_every": 1,
        "resources.cpus_per_worker": 0.5,
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


PROMPT = "The capital of France is Paris. The capital of Germany is"


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct converted to Megatron-Core (fp32, TP=1), its HF twin, weights, tokenizer."""
    import transformers

    from raytron.models.llama.gguf import smollm2_folder
    from raytron.models.llama.model import decoder_from_hf
    from raytron.models.llama.state_dict_adapter import read_hf_folder
    from raytron.runtime import init_megatron

    init_megatron()
    folder = smollm2_folder()
    ours, _, config = decoder_from_hf(folder)
    weights = read_hf_folder(folder)[1]
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return config, weights, ours.eval(), reference, tokenizer


SHARED_BUILDS = "RAYTRON_TEST_SHARED"
"""tests/run_modules.py sets it to one folder for all the modules of its run: what `built_once` builds is kept there."""


@pytest.fixture(scope="session")
def shared_builds(tmp_path_factory) -> Path:
    """Where `built_once` keeps what it builds: the folder tests/run_modules.py shares with all its modules, else one of
    this pytest process's own (for the modules it runs)."""
    return Path(os.environ.get(SHARED_BUILDS) or tmp_path_factory.mktemp("shared-builds"))


def built_once(shared: Path, name: str, build: Callable[[Path], None], into: Path) -> Path:
    """`into`, filled as `build(folder)` fills a folder, which happens once per `shared` folder (`shared_builds`): the
    first module to ask builds it there (the others wait for it, on a file lock) and each module gets its own copy, so
    what a test changes stays in its module. What the build recorded by absolute path (the files of W&B's offline
    artifact manifests) still points into `shared`, which outlives the modules."""
    folder, built = shared / name, shared / f"{name}.built"
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when this process ends, however it ends
        if not built.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a module that died building it left
            build(folder)
            built.touch()
    shutil.copytree(folder, into, symlinks=True, dirs_exist_ok=True)  # W&B's links are relative
    return into


SENTIMENT_RUN = {"train.epochs": 3, "run.name": "dp2"}


@pytest.fixture(scope="module")
def sentiment_run(ray_cluster, shared_builds, tmp_path_factory):
    """A real 2-worker (DP=2) IMDb fine-tune, 3 epochs of 48 reviews, built once per test run (`built_once`): this
    module's copy, its config and run folder."""
    from raytron.config import load_config
    from raytron.train.launcher import finetune

    def config(root: Path):
        return load_config(REPO / "configs" / "sentiment.yaml", tiny_overrides(root, **SENTIMENT_RUN))

    root = built_once(shared_builds, "sentiment-run", lambda folder: finetune(config(folder)),
                      tmp_path_factory.mktemp("runs"))
    cfg = config(root)
    assert cfg.resources.num_workers == 2 and cfg.parallel.data == 2
    return cfg, root / "dp2"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto) on 127.0.0.1 with a bucket, AWS credentials in the environment
    (tests/s3_server.py); `s3_server.store_uri()` gives a fresh `s3://` prefix on it."""
    from tests.s3_server import MotoServer

    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


def require_tool(name: str, install: str) -> str:
    """The path of a command-line tool a test needs. Missing, the test skips with the command that
    installs it, except under CI=true, where it fails: CI must prove what it claims."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {name} is not installed: {install}")
        pytest.skip(f"{name} is not installed ({install})")
    return path
