"""The quick-start demo: MovieLens 100K (embedded), protocol split, three models,
one results table and one user's recommendations."""

from __future__ import annotations

import time

from steercf.data import load_ml100k
from steercf.evaluation import split_users
from steercf.experiment import fit_model, select_on_validation, test_metrics
from steercf.reporting import format_table


def run_demo(quick: bool = False, seed: int = 0, progress: bool = True) -> list[dict]:
    """Train popularity, EASE and ELSA on MovieLens 100K and print test metrics.

    Returns the table rows (one dict per model)."""
    data = load_ml100k()
    split = split_users(data.matrix, seed=seed)
    print(
        f"MovieLens 100K: {data.n_users} users x {data.n_items} items, "
        f"{data.matrix.nnz} positives (rating >= 4); split 80/10/10 with seed {seed}: "
        f"{split.train.shape[0]} train / {split.val_input.shape[0]} val / "
        f"{split.test_input.shape[0]} test users"
    )
    rows = []
    elsa_params = dict(factors=512, lr=1e-3, batch_size=64, epochs=10 if quick else 100, patience=5)
    runs = [
        ("popularity", lambda: (fit_model("popularity", split), {})),
        ("ease", lambda: _tuned("ease", split, quick, seed)),
        (
            "elsa",
            lambda: (fit_model("elsa", split, progress, seed=seed, **elsa_params), elsa_params),
        ),
    ]
    for name, run in runs:
        started = time.perf_counter()
        model, params = run()
        seconds = time.perf_counter() - started
        metrics = test_metrics(model, split)
        rows.append(
            {
                "model": name,
                "recall@20": metrics["recall@20"],
                "±": metrics["recall@20_sem"],
                "ndcg@20": metrics["ndcg@20"],
                "± ": metrics["ndcg@20_sem"],
                "fit_s": f"{seconds:.1f}",
                "params": ", ".join(f"{k}={v}" for k, v in params.items() if k != "seed"),
            }
        )
    print("\nTest users, mean ± standard error:")
    print(format_table(rows))

    user_row = int(split.test_users[0])
    history = split.test_input[0]
    ids, _ = model.recommend(history, N=5)
    print(
        f"\nUser {data.user_ids[user_row]} liked e.g.: {'; '.join(data.titles(history.indices[:5]))}"
    )
    print(f"ELSA recommends: {'; '.join(data.titles(ids[0]))}")
    return rows


def _tuned(name: str, split, quick: bool, seed: int):
    grid = {"l2": [100.0, 500.0]} if quick else None
    chosen = select_on_validation(name, split, grid=grid, seed=seed)
    return chosen.model, chosen.params
