"""ROUGE of the Lead-3 baseline on the fixed CNN/DM test rows: `python jobs/rouge_baselines.py [--out runs/summarization]`."""

import argparse
import json
from pathlib import Path

from raytron.data.cnn_dailymail import read_splits
from raytron.errors import exit_on_user_error
from raytron.evaluate.rouge import bootstrap, lead3, rouge_scores


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None, help="data root (default: $RAYTRON_DATA_DIR or ../shared/data)")
    parser.add_argument("--out", default="runs/summarization", help="folder for baselines.json")
    args = parser.parse_args(argv)
    test = read_splits(args.data_dir)["test"].to_pandas()
    table = {"lead3": bootstrap(rouge_scores([lead3(a) for a in test["article"]], list(test["summary"])))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.json").write_text(json.dumps({"rows": len(test), **table}, indent=2))
    for name, metrics in table.items():
        cells = "  ".join(f"{m} {v['mean']:.2f} [{v['low']:.2f}, {v['high']:.2f}]" for m, v in metrics.items())
        print(f"{name} on {len(test)} test rows: {cells}")
    return 0
