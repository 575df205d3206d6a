"""Fine-tune a tiny random BERT on synthetic data; used as a killable subprocess.

Usage: python finetune_job.py DATA_DIR CACHE_DIR OUTPUT_JSON
"""

import json
import sys

import torch

from svutils.finetune import FinetuneConfig, finetune
from svutils.store import model_fingerprint


def main(data_dir: str, cache_dir: str, output: str) -> None:
    config = FinetuneConfig(
        model="tiny-bert", task="rte", data_dir=data_dir, n_train=96, n_eval=32, max_length=32,
        epochs=4, checkpoint_epochs=(1, 2, 3, 4), learning_rate=1e-3, batch_size=8, seed=3,
    )
    run = finetune(config, cache_dir=cache_dir, progress=False)
    model, _ = run.load()
    result = {
        "weights": model_fingerprint(model),
        "curve": run.curve.drop(columns=["seconds", "eval_seconds"], errors="ignore").to_dict("records"),
        "threads": torch.get_num_threads(),
    }
    with open(output, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
