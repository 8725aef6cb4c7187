"""Print pyproject.toml's dependencies, less those named (`--without torch`: the GPU image keeps its base's torch)."""

import argparse
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(without: list[str]) -> list[str]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return [dep for dep in dependencies if re.split(r"[\s<>=!~\[;]", dep, maxsplit=1)[0].lower() not in without]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--without", nargs="*", default=[])
    print("\n".join(requirements([name.lower() for name in parser.parse_args().without])))
