"""implicit's ALS and BPR next to steercf models, all evaluated by implicit.

Per seed: ml-latest-small (ratings >= 4, users with >= 5 positives), implicit's
``train_test_split(0.8)``, every model fitted on the training matrix and scored with
``implicit.evaluation.ranking_metrics_at_k(K=10)`` (precision@10 pooled over users,
nDCG@10), plus the wall time of ``fit``. steercf models go through
:class:`steercf.integrations.implicit.SteerCFImplicit` unchanged; their metrics are also
recomputed by steercf's own evaluator (:func:`steercf_metrics_at_k`) and the largest
difference is printed.

Settings: implicit ALS / BPR with 64 factors and otherwise implicit's defaults; steercf
EASE l2=100 (steercf's ml-latest-small preset); ELSA and ELSA+SAE with the settings used
for RecBole's ml-100k (``steercf.integrations.recbole``): no per-data-set tuning for
any model. All models use the same number of CPU threads (``--threads``, default 1).

    python benchmarks/implicit_compare.py [--quick] [--seeds 3] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from implicit.als import AlternatingLeastSquares
from implicit.bpr import BayesianPersonalizedRanking
from implicit.evaluation import ranking_metrics_at_k, train_test_split
from threadpoolctl import threadpool_limits

from steercf.data import load_dataset
from steercf.integrations.implicit import SteerCFImplicit, steercf_metrics_at_k
from steercf.models import EASE, ELSA
from steercf.models.spliced import AUGMENT_COPIES, SplicedRecommender
from steercf.reporting import format_table, write_records
from steercf.sae import TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASET = "ml-latest-small"
K = 10


def elsa(seed: int, quick: bool) -> ELSA:
    return ELSA(
        factors=256,
        lr=1e-3,
        batch_size=64,
        epochs=2 if quick else 15,
        input_dropout=0.7,
        seed=seed,
        progress=False,
    )


def models(seed: int, quick: bool, threads: int) -> dict[str, tuple[Callable[[], Any], str]]:
    """name -> (factory of an unfitted implicit-API model, setting)."""
    iterations = {"als": 3 if quick else 15, "bpr": 10 if quick else 100}
    sae_epochs = 3 if quick else 60
    out: dict[str, tuple[Callable[[], Any], str]] = {
        "implicit/ALS": (
            lambda: AlternatingLeastSquares(
                factors=64, iterations=iterations["als"], num_threads=threads, random_state=seed
            ),
            f"factors=64,iterations={iterations['als']}",
        ),
        "implicit/BPR": (
            lambda: BayesianPersonalizedRanking(
                factors=64, iterations=iterations["bpr"], num_threads=threads, random_state=seed
            ),
            f"factors=64,iterations={iterations['bpr']}",
        ),
        "steercf/EASE": (lambda: SteerCFImplicit(EASE(l2=100.0)), "l2=100"),
        "steercf/ELSA": (
            lambda: SteerCFImplicit(elsa(seed, quick)),
            f"factors=256,epochs={elsa(seed, quick).epochs},input_dropout=0.7",
        ),
        "steercf/ELSA+SAE": (
            lambda: SteerCFImplicit(
                SplicedRecommender(
                    elsa(seed, quick),
                    {"k": 32, "expansion": 8},
                    TrainConfig(max_epochs=sae_epochs, seed=seed, progress=False),
                    augment=1 if quick else AUGMENT_COPIES,
                    seed=seed,
                    progress=False,
                )
            ),
            f"base=steercf/ELSA,k=32,width=8x,max_epochs={sae_epochs}",
        ),
    }
    if quick:  # a dense 9k x 9k solve is not a smoke test
        del out["steercf/EASE"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs, no EASE")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every model")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = range(1 if args.quick else args.seeds)
    data = load_dataset(DATASET, data_dir=SHARED_DATA)
    matrix = data.matrix

    records: list[dict[str, Any]] = []
    per_model: dict[str, dict[str, list[float]]] = {}
    max_gap, compared = 0.0, 0
    for seed in seeds:
        train, test = train_test_split(matrix, train_percentage=0.8, random_state=seed)
        n_test = int((np.diff(test.indptr) > 0).sum())
        for name, (factory, setting) in models(seed, args.quick, args.threads).items():
            # implicit checks the BLAS thread count when a model is built: limit it first.
            with threadpool_limits(args.threads):
                model = factory()
                started = time.perf_counter()
                model.fit(train, show_progress=False)
                fit_seconds = time.perf_counter() - started
                metrics = ranking_metrics_at_k(model, train, test, K=K, show_progress=False)
            values = {
                f"precision@{K}": float(metrics["precision"]),
                f"ndcg@{K}": float(metrics["ndcg"]),
                "fit_seconds": fit_seconds,
            }
            if isinstance(model, SteerCFImplicit):
                own = steercf_metrics_at_k(model.model, train, test, K=K)
                if own["users"] == n_test:  # steercf skips users with an empty train row
                    gap = max(
                        abs(own["precision"] - metrics["precision"]),
                        abs(own["ndcg"] - metrics["ndcg"]),
                    )
                    max_gap, compared = max(max_gap, gap), compared + 1
            for metric, value in values.items():
                records.append(
                    {
                        "dataset": DATASET,
                        "model": name,
                        "metric": metric,
                        "value": value,
                        "seed": seed,
                        "setting": setting,
                        "n": n_test,
                    }
                )
                per_model.setdefault(name, {}).setdefault(metric, []).append(value)
            print(f"seed {seed} {name}: {values}", file=sys.stderr, flush=True)

    rows = [
        {"model": name, **{m: float(np.mean(v)) for m, v in metrics.items()}}
        for name, metrics in per_model.items()
    ]
    print(
        f"{DATASET}, implicit train_test_split(0.8), ranking_metrics_at_k(K={K}), "
        f"mean over {len(seeds)} seed(s), {args.threads} thread(s):"
    )
    print(format_table(rows, ["model", f"precision@{K}", f"ndcg@{K}", "fit_seconds"]))
    print(
        f"steercf models: implicit's ranking_metrics_at_k vs steercf's evaluator, "
        f"largest difference {max_gap:.2e} over {compared} fitted model(s)"
    )
    if args.json:
        write_records(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
