"""The quick-start demo: MovieLens 100K (embedded), protocol split, the baselines, ELSA,
the splice base (ELSA kept to its principal score directions) with an SAE spliced in, one results table with the interpretability
tax, and one user steered toward a genre."""

from __future__ import annotations

import time

import numpy as np

from steercf.data import load_ml100k
from steercf.evaluation import evaluate, split_users
from steercf.experiment import (
    fit_model,
    select_on_validation,
    splice_base,
    splice_train_config,
    test_metrics,
)
from steercf.models.spliced import AUGMENT_COPIES, SAE_DEFAULTS, SplicedRecommender
from steercf.reporting import format_table
from steercf.steering import DEFAULT_STRENGTH, ConceptKnobs, compare

BASE_ROW = "elsa, principal directions"
SPLICED_ROW = "elsa+sae"
DEMO_SHOWN_PARAMS = ("factors", "init", "lr", "epochs")


def run_demo(quick: bool = False, seed: int = 0, progress: bool = True) -> list[dict]:
    """Train popularity, EASE, ELSA, the splice base (ELSA kept to its principal score
    directions) and base+SAE (the spliced model's
    default recipe) on MovieLens 100K, print test metrics and the interpretability tax,
    and steer one test user toward Horror.

    Returns the table rows (one dict per model)."""
    data = load_ml100k()
    split = split_users(data.matrix, seed=seed)
    print(
        f"MovieLens 100K: {data.n_users} users x {data.n_items} items, "
        f"{data.matrix.nnz} positives (rating >= 4); split 80/10/10 with seed {seed}: "
        f"{split.train.shape[0]} train / {split.val_input.shape[0]} val / "
        f"{split.test_input.shape[0]} test users"
    )
    # the splice base: the ELSA preset kept to its principal score directions
    # (steercf.experiment.splice_base); the ELSA row is the preset itself
    base = splice_base("ml-100k", seed=seed, quick=quick)
    elsa = base.base
    elsa.progress = progress
    shown = {k: v for k, v in elsa.get_params().items() if k in DEMO_SHOWN_PARAMS}
    overrides = {"max_epochs": 10} if quick else {}
    sae_train = splice_train_config("ml-100k", seed=seed, progress=progress, **overrides)
    models: dict = {}
    runs = [
        ("popularity", lambda: (fit_model("popularity", split), {})),
        ("ease", lambda: _tuned("ease", split, quick, seed)),
        ("elsa", lambda: (elsa.fit(split.train, split.val_full), shown)),
        (
            BASE_ROW,
            lambda: (base.fit(split.train), {"rank": base.rank, "of": "elsa"}),
        ),
        (
            SPLICED_ROW,
            lambda: (
                SplicedRecommender(
                    base, train_config=sae_train, augment=2 if quick else AUGMENT_COPIES, seed=seed
                ).fit(split.train, split.val_full),
                {**SAE_DEFAULTS, "latents": SAE_DEFAULTS["expansion"] * base.rank},
            ),
        ),
    ]
    rows = []
    for name, run in runs:
        started = time.perf_counter()
        model, params = run()
        models[name] = model
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
                "params": ", ".join(
                    f"{k}={v}" for k, v in params.items() if k not in ("seed", "progress", "device")
                ),
            }
        )
    print("\nTest users, mean ± standard error:")
    print(format_table(rows))
    # the splice's honest cost: against the best plain model, chosen on validation users
    val_recall = {
        name: evaluate(models[name], split.val_input, split.val_target).mean("recall@20")
        for name in ("ease", "elsa")
    }
    best = max(val_recall, key=val_recall.get)
    by_name = {row["model"]: row for row in rows}
    for metric in ("recall@20", "ndcg@20"):
        tax = by_name[best][metric] - by_name[SPLICED_ROW][metric]
        print(
            f"interpretability tax, {metric}: {tax:+.4f} (best plain model on validation "
            f"users: {best}, {by_name[best][metric]:.4f}; {SPLICED_ROW} "
            f"{by_name[SPLICED_ROW][metric]:.4f})"
        )

    spliced = models[SPLICED_ROW]
    knobs = ConceptKnobs.for_model(spliced, data, "genres", train_users=split.train_users)
    history = split.test_input[:1]
    result = compare(spliced, history, [knobs.knob("Horror", DEFAULT_STRENGTH)], N=5)
    user = data.user_ids[split.test_users[0]]
    print(f"\nUser {user} liked e.g.: {'; '.join(data.titles(history.indices[:4]))}")
    print(f"  ELSA+SAE recommends: {'; '.join(data.titles(result.before_ids[0]))}")
    print(f"  steered +Horror {DEFAULT_STRENGTH}: {'; '.join(data.titles(result.after_ids[0]))}")
    code = spliced.sparse_code(history)
    active = ", ".join(f"{n}:{v:.2f}" for n, v in code.of(0)[:6])
    print(f"  sparse code ({np.count_nonzero(code.values[0])} active latents): {active} ...")
    return rows


def _tuned(name: str, split, quick: bool, seed: int):
    grid = {"l2": [100.0, 500.0]} if quick else None
    chosen = select_on_validation(name, split, grid=grid, seed=seed)
    return chosen.model, chosen.params
