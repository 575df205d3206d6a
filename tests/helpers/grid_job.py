"""Run a deterministic ablation grid on a tiny random model; used as a killable subprocess.

Usage: python grid_job.py STORE_DIR OUTPUT_CSV
"""

import sys

import numpy as np

from svutils.ablation import band_cells, run_grid
from svutils.data import TokenizedSet
from svutils.models import load_model


def main(store: str, output: str) -> None:
    model, _ = load_model("tiny-bert", 2, seed=5)
    rng = np.random.default_rng(0)
    input_ids = [[101, *rng.integers(1000, 5000, size=int(rng.integers(3, 30))).tolist(), 102] for _ in range(64)]
    eval_set = TokenizedSet(input_ids, None, rng.integers(0, 2, size=64), np.arange(64), "rte", 32)
    cells = band_cells(
        model,
        kinds={kind: kind for kind in ("q", "ffn_in")},
        layers={str(layer): [layer] for layer in range(6)},
        n_bands=4,
    )
    result = run_grid(model, eval_set, cells, task="rte", store=store, n_bootstrap=100, progress=False)
    result.table.drop(columns="seconds").to_csv(output, index=False)
    print(f"computed={result.n_computed} loaded={result.n_loaded}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
