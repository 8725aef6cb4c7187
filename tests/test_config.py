"""Config loading: overrides apply, and each mistake names the key and what is allowed."""

import subprocess
import sys

import pytest

from raytron.config import SentimentConfig, load_config
from raytron.errors import RaytronError
from raytron.models.pretrained import pin_pretrained
from tests.conftest import REPO

RECIPE = REPO / "configs" / "sentiment.yaml"


def driver_config(recipe, overrides):
    """What a job does on the driver: validate the recipe, then resolve and check its pretrained model."""
    return pin_pretrained(load_config(recipe, overrides))


def test_config_module_is_pure():
    """Validating a recipe imports neither torch nor Megatron-Core and reads no model (workers re-validate)."""
    probe = ("import sys; from raytron.config import load_config; "
             f"load_config({str(RECIPE)!r}, ['model.pretrained=/nonexistent']); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'megatron', 'transformers', 'ray'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_recipe_loads_and_override_applies():
    cfg = load_config(RECIPE, ["train.lr=3e-5", "data.train_rows=100"])
    assert isinstance(cfg, SentimentConfig)
    assert cfg.train.lr == 3e-5 and cfg.data.train_rows == 100
    assert cfg.parallel.data == cfg.resources.num_workers  # derived DP


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lrr=1"], "train.lrr: unknown key; allowed here: epochs"),
        (["train.lr=fast"], "train.lr: Input should be a valid number"),
        (["bogus.x=1"], "bogus: unknown key"),
        (["resources.num_workers=3", "parallel.tensor=2"], "num_workers=3 is not a multiple"),
        (["resources.num_workers=4", "parallel.tensor=2", "parallel.data=3"], "TP x PP x DP = 2 x 1 x 3 != resources.num_workers=4"),
        (["parallel.tensor=5", "resources.num_workers=5", "train.micro_batch_size=10", "train.global_batch_size=10"],
         "does not divide the model's 12 attention heads"),
        (["parallel.pipeline=2", "resources.num_workers=2"], "parallel.pipeline"),
        (["model.pretrained=/nonexistent"], "neither a Hugging Face model folder"),
        (["train.lr"], "is not of the form key.path=value"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(RaytronError, match=None) as error:
        driver_config(RECIPE, overrides)
    assert message in str(error.value)


def test_missing_data_dir_is_named(tmp_path):
    from raytron.data.sources import data_root

    with pytest.raises(RaytronError, match=f"data.data_dir={tmp_path}/nope is not a folder"):
        data_root(str(tmp_path / "nope"))
    assert data_root(str(tmp_path)) == str(tmp_path.resolve())


def test_missing_config_file():
    with pytest.raises(RaytronError, match="does not exist"):
        load_config(REPO / "configs" / "nope.yaml")


@pytest.mark.parametrize("recipe, kind", [("summarization.yaml", "SummarizationConfig"), ("topics.yaml", "TopicsConfig"),
                                          ("summarization-gpu.yaml", "SummarizationConfig"),
                                          ("topics-gpu.yaml", "TopicsConfig"), ("sentiment-gpu.yaml", "SentimentConfig")])
def test_every_recipe_picks_its_task_config(recipe, kind):
    assert type(load_config(REPO / "configs" / recipe)).__name__ == kind


@pytest.mark.parametrize("recipe, overrides, message", [
    ("summarization.yaml", ["parallel.tensor=2", "resources.num_workers=2"], "does not divide the model's 9 attention heads"),
    ("summarization.yaml", ["generation.strategy=nucleus"], "generation.strategy: Input should be 'greedy', 'sample' or 'beam'"),
    ("summarization.yaml", ["data.max_summary_tokens=300"], "max_summary_tokens must be below data.max_length / 2"),
    ("topics.yaml", ["topics.cluster_selection=best"], "topics.cluster_selection"),
    ("summarization.yaml", ["train.compile_static_shapes=true"],
     "train.compile_static_shapes=true needs train.compile=true (it says how the layers compile)"),
    ("sentiment.yaml", ["task=translation"], "task: unknown task 'translation'; allowed: sentiment, summarization, topics"),
])
def test_task_specific_mistakes(recipe, overrides, message):
    with pytest.raises(RaytronError) as error:
        driver_config(REPO / "configs" / recipe, overrides)
    assert message in str(error.value)
