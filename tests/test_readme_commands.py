"""Every `python jobs/<job>.py --config <recipe> key=value ...` command in README.md names a job that exists and a
recipe whose overrides validate (the jobs themselves run in their own tests; this catches a README that drifted)."""

import re
import shlex

import pytest

from raytron.config import load_config
from tests.conftest import REPO


def readme_job_commands() -> list[list[str]]:
    """The README's job commands with --config, as shell words (comments, redirections and env prefixes dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    commands = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if "python" in words and "--config" in words:
            commands.append(words[words.index("python") + 1:])
    return commands


COMMANDS = readme_job_commands()


def test_the_readme_has_job_commands():
    assert len(COMMANDS) >= 15 and {"jobs/finetune.py", "jobs/evaluate.py", "jobs/topics.py", "jobs/tune.py",
                                    "jobs/summarize.py"} <= {command[0] for command in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(command) for command in COMMANDS])
def test_readme_command_names_a_job_and_a_valid_recipe(command):
    assert (REPO / command[0]).is_file(), command[0]
    recipe = command[command.index("--config") + 1]
    overrides, words = [], iter(command[command.index("--config") + 2:])
    for word in words:
        if word.startswith("--") or word == "<":  # the job's own options (--file F, --technique T) and stdin
            next(words, None)
        elif "=" in word:
            overrides.append(word)
    load_config(REPO / recipe, overrides)
