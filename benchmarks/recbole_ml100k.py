"""steercf models inside RecBole, next to RecBole's own models, on RecBole's ml-100k.

RecBole's default protocol, unchanged: its bundled ml-100k, a random 8:1:1 split of
each user's interactions, full ranking over all items with the user's history masked,
test Recall@10 / NDCG@10 of the best-validation (MRR@10) model, seed 2020. RecBole's
built-in EASE (reg_weight 250), BPR and MultiVAE (their default settings) run through
the same runner (:func:`steercf.integrations.recbole.train_recbole`, no ray) as steercf's
EASE (same reg_weight), ELSA, Mult-VAE, and the spliced models (SAE trained inside the RecBole flow
on the trained CFAE's embeddings of the training users).

Checks printed at the end: steercf's EASE within 0.005 NDCG@10 of RecBole's EASE, and
the spliced ELSA within 0.01 Recall@10 of its base ELSA.

    python benchmarks/recbole_ml100k.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from steercf.integrations.recbole import (
    SteerCFEASE,
    SteerCFELSA,
    SteerCFMultVAE,
    SteerCFSplicedEASE,
    SteerCFSplicedELSA,
    train_recbole,
)
from steercf.models import ELSA, MultVAE
from steercf.reporting import format_table, write_records

DATASET = "ml-100k"
REG_WEIGHT = 250.0
EASE_RANK = 256  # width of the low-rank EASE that the spliced EASE builds on
METRICS = ("recall@10", "ndcg@10")
COMMON: dict[str, Any] = {"show_progress": False, "use_gpu": torch.cuda.is_available()}


def plan(quick: bool) -> list[tuple[str, Any, dict[str, Any], str]]:
    """(record name, RecBole model name or class, config, setting) per run."""
    # --quick caps the iterative models; the numbers are then only a smoke test.
    short = {"epochs": 1} if quick else {}
    elsa = {"elsa_epochs": 3} if quick else {}
    multvae = {"multvae_epochs": 3} if quick else {}
    sae = {"sae_max_epochs": 3, "sae_augment": 1, "sae_expansion": 2} if quick else {}
    runs = [
        ("recbole/EASE", "EASE", {"reg_weight": REG_WEIGHT}, f"reg_weight={REG_WEIGHT:g}"),
        ("recbole/BPR", "BPR", dict(short), "recbole defaults"),
        ("recbole/MultiVAE", "MultiVAE", dict(short), "recbole defaults"),
        ("steercf/EASE", SteerCFEASE, {"reg_weight": REG_WEIGHT}, f"reg_weight={REG_WEIGHT:g}"),
        (
            f"steercf/EASE-r{EASE_RANK}",
            SteerCFEASE,
            {"reg_weight": REG_WEIGHT, "rank": EASE_RANK},
            f"reg_weight={REG_WEIGHT:g},rank={EASE_RANK}",
        ),
        ("steercf/ELSA", SteerCFELSA, dict(elsa), _setting(SteerCFELSA, elsa)),
        (
            "steercf/MultVAE",
            SteerCFMultVAE,
            dict(multvae),
            _setting(SteerCFMultVAE, multvae, MultVAE, "multvae_"),
        ),
        ("steercf/ELSA+SAE", SteerCFSplicedELSA, {**elsa, **sae}, "base=steercf/ELSA"),
        (
            "steercf/EASE+SAE",
            SteerCFSplicedEASE,
            {"reg_weight": REG_WEIGHT, "rank": EASE_RANK, **sae},
            f"base=steercf/EASE-r{EASE_RANK}",
        ),
    ]
    if quick:  # keep the runs the two checks need, plus one iterative RecBole model
        skip = (
            "recbole/MultiVAE",
            "steercf/MultVAE",
            f"steercf/EASE-r{EASE_RANK}",
            "steercf/EASE+SAE",
        )
        runs = [r for r in runs if r[0] not in skip]
    return runs


def _setting(cls: Any, overrides: dict[str, Any], model: Any = ELSA, prefix: str = "elsa_") -> str:
    """The settings of a RecBole wrapper ``cls`` (keys ``<prefix><name>``) that differ
    from its steercf ``model``'s own defaults, as ``key=value,...``."""
    own = model.param_defaults()
    params = {k.removeprefix(prefix): v for k, v in {**cls.defaults, **overrides}.items()}
    return ",".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in params.items()
        if _listed(own.get(k)) != _listed(v)
    )


def _listed(value: Any) -> Any:
    """A tuple as a list (a RecBole config holds lists), anything else as it is."""
    return list(value) if isinstance(value, tuple) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--quick", action="store_true", help="1-3 epochs, tiny SAE, fewer models: a smoke run"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    records: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    results: dict[str, dict[str, float]] = {}
    for name, model, config, setting in plan(args.quick):
        started = time.perf_counter()
        run = train_recbole(model, DATASET, config_dict={**COMMON, **config})
        test = run.result["test_result"]
        n_test = int(run.test_data.sample_size)
        seed = int(run.config["seed"])
        results[name] = {m: float(test[m]) for m in METRICS}
        for metric in METRICS:
            records.append(
                {
                    "dataset": DATASET,
                    "model": name,
                    "metric": metric,
                    "value": float(test[metric]),
                    "seed": seed,
                    "setting": setting,
                    "n": n_test,
                }
            )
        seconds = time.perf_counter() - started
        rows.append({"model": name, **results[name], "seconds": round(seconds, 1)})
        print(f"{name}: {results[name]} ({seconds:.0f}s)", file=sys.stderr, flush=True)

    print(f"RecBole {DATASET}, default protocol (RS 8:1:1, full ranking), test users:")
    print(format_table(rows, ["model", *METRICS, "seconds"]))
    ease_gap = abs(results["steercf/EASE"]["ndcg@10"] - results["recbole/EASE"]["ndcg@10"])
    sae_drop = results["steercf/ELSA"]["recall@10"] - results["steercf/ELSA+SAE"]["recall@10"]
    print(
        f"check: |NDCG@10 steercf/EASE - recbole/EASE| = {ease_gap:.4f} "
        f"({'ok' if ease_gap <= 0.005 else 'FAILED'}, limit 0.005)"
    )
    verdict = "ok" if sae_drop <= 0.01 else "FAILED"
    if args.quick:  # a toy SAE: the figure is shown, the limit is not applied
        verdict = "not checked: --quick trains a toy SAE"
    print(
        f"check: Recall@10 steercf/ELSA - steercf/ELSA+SAE = {sae_drop:+.4f} "
        f"({verdict}, limit 0.01)"
    )
    if args.json:
        write_records(args.json, records)
    failed = ease_gap > 0.005 or (sae_drop > 0.01 and not args.quick)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
