"""Steering evaluation (published protocol) on MovieLens 100K and ml-latest-small.

Per data set: fit the base (ELSA preset by default; ``--base multvae`` for Mult-VAE) and
splice the spliced model's default SAE recipe in (``steercf.models.spliced``);
then for each concept mapping, steering rule and latents-per-concept, sweep the strength
and report personal / segment Recall@20 and the target share; steer away from each
user's dominant concept to measure suppression; time steered vs unsteered top-20.

    python benchmarks/steering.py [--quick] [--json out.json] [--plot steering.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from steercf.concepts import MAPPINGS, concept_tags
from steercf.data import load_dataset
from steercf.evaluation import split_users
from steercf.experiment import base_params, cap_factors, make_model
from steercf.models.spliced import SplicedRecommender, default_train_config
from steercf.reporting import format_table, write_records
from steercf.steering import DECODER_EFFECT, DECODER_FIT, MAX_ADDITIVE, ConceptKnobs
from steercf.steering_eval import steering_latency, steering_sweep, suppression

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGETS = [("ml-100k", "genres"), ("ml-latest-small", "genres"), ("ml-latest-small", "tags")]
# Steps of 0.05 (convex) so that the best point keeping 95 % of personal recall lies
# close to where the trade-off curve crosses that line.
STRENGTHS = {
    "convex": [round(0.05 * i, 2) for i in range(17)],  # 0 .. 0.8
    # over the rule's whole valid range (MAX_ADDITIVE): a wide spread needs large strengths
    "additive": [round(0.1 * i, 1) for i in range(26)] + [3.0, 4.0, 5.0],
}
FULL_AWAY = {"convex": -1.0, "additive": -MAX_ADDITIVE}


def best_point(sweep: list[dict]) -> dict:
    """The strength with the largest segment gain whose personal recall keeps >= 95 %."""
    base = sweep[0]
    ok = [r for r in sweep if r["personal_recall@20"] >= 0.95 * base["personal_recall@20"]]
    best = max(ok, key=lambda r: r["segment_recall@20"])
    return {
        "strength": best["strength"],
        "personal_kept": best["personal_recall@20"] / base["personal_recall@20"],
        "segment_gain": best["segment_recall@20"] / max(base["segment_recall@20"], 1e-12),
    }


def suppress(model, split, tags, knobs, rule, setting, seed, name, records) -> dict:
    """Steer each test user fully away from their list's dominant concept; record the
    share of that concept before/after and the personal recall; return the table row
    (``drop`` of the share, ``personal_kept``)."""
    away = suppression(model, split, tags.matrix, knobs, FULL_AWAY[rule], rule)
    for alpha, share, recall in (
        (0, away["suppressed_share_before@20"], away["personal_recall_before@20"]),
        (FULL_AWAY[rule], away["suppressed_share@20"], away["personal_recall@20"]),
    ):
        for metric, value in (
            ("suppressed_share@20", share),
            ("suppressed_personal_recall@20", recall),
        ):
            records.append(
                {
                    "dataset": name,
                    "model": f"{model.base.kind.lower()}+sae",
                    "metric": metric,
                    "value": value,
                    "seed": seed,
                    "setting": f"alpha={alpha},{setting}",
                    "n": split.test_input.shape[0],
                }
            )
    kept = away["personal_recall@20"] / max(away["personal_recall_before@20"], 1e-12)
    return {"dataset": name, "setting": setting, "drop": away["drop"], "personal_kept": kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="ML-100K genres, 2 mappings, tiny models"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="trade-off curves (PNG)")
    parser.add_argument(
        "--max-factors", type=int, help="cap the ELSA width (default: each data set's preset)"
    )
    parser.add_argument(
        "--base",
        choices=["elsa", "elsa_random", "multvae"],
        default="elsa",
        help="base: the ELSA preset (EASE warm starts), a random-start ELSA, or Mult-VAE",
    )
    parser.add_argument("--max-epochs", type=int, default=1000, help="SAE epoch cap")
    args = parser.parse_args(argv)
    targets = TARGETS[:1] if args.quick else TARGETS
    mappings = (
        ["best_characterizes", DECODER_FIT]
        if args.quick
        else [*MAPPINGS, DECODER_EFFECT, DECODER_FIT]
    )
    # broad concepts (a genre on a third of the catalogue) steer best spread wide
    latent_counts = [1, 8] if args.quick else [1, 8, 32, 128]

    records: list[dict] = []
    summary: list[dict] = []
    suppression: list[dict] = []  # one row per suppression run, printed as its own table
    curves: dict[str, list[dict]] = {}
    models: dict[str, tuple] = {}
    for dataset, source in targets:
        if dataset not in models:
            data = load_dataset(dataset, data_dir=SHARED_DATA)
            split = split_users(data.matrix, seed=args.seed)
            elsa_params = base_params(dataset, args.base, quick=args.quick)
            if args.max_factors:
                elsa_params = cap_factors(elsa_params, args.max_factors)
            kind = "multvae" if args.base == "multvae" else "elsa"
            base = make_model(kind, **elsa_params, seed=args.seed)
            train = default_train_config(
                max_epochs=5 if args.quick else args.max_epochs, seed=args.seed, progress=False
            )
            model = SplicedRecommender(
                base, train_config=train, augment=2 if args.quick else 8, seed=args.seed
            )
            models[dataset] = (data, split, model.fit(split.train, split.val_full))
        data, split, model = models[dataset]
        tags = concept_tags(data, source, split.train_users)
        name = f"{dataset}/{source}"
        for mapping in mappings:
            for top in latent_counts:
                knobs = ConceptKnobs.for_model(model, data, source, mapping, split.train_users, top)
                for rule, strengths in STRENGTHS.items():
                    setting = f"mapping={mapping},rule={rule},latents={top}"
                    sweep = steering_sweep(model, split, tags.matrix, knobs, strengths, rule)
                    curves[f"{name} {setting}"] = sweep
                    for point in sweep:
                        for metric in (
                            "personal_recall@20",
                            "personal_ndcg@20",
                            "segment_recall@20",
                            "segment_ndcg@20",
                            "target_share@20",
                        ):
                            records.append(
                                {
                                    "dataset": name,
                                    "model": f"{model.base.kind.lower()}+sae",
                                    "metric": metric,
                                    "value": point[metric],
                                    "seed": args.seed,
                                    "setting": f"alpha={point['strength']},{setting}",
                                    "n": point["n_users"],
                                }
                            )
                    away = suppress(
                        model, split, tags, knobs, rule, setting, args.seed, name, records
                    )
                    suppression.append(away)
                    best = best_point(sweep)
                    summary.append(
                        {
                            "dataset": name,
                            "mapping": mapping,
                            "rule": rule,
                            "latents": top,
                            "segment_0": sweep[0]["segment_recall@20"],
                            "alpha*": best["strength"],
                            "segment_gain": best["segment_gain"],
                            "personal_kept": best["personal_kept"],
                            "suppression_drop": away["drop"],
                        }
                    )
            # Removal wants every unit that lifts the concept, not just the top few.
            wide = ConceptKnobs.for_model(
                model, data, source, mapping, split.train_users, model.n_latents
            )
            for rule in STRENGTHS:
                setting = f"mapping={mapping},rule={rule},latents=all"
                suppression.append(
                    suppress(model, split, tags, wide, rule, setting, args.seed, name, records)
                )
        # latency: one user and a batch of 1,000 (test users repeated), best knob type
        knobs = ConceptKnobs.for_model(model, data, source, DECODER_EFFECT, split.train_users, 8)
        knob = knobs.knob(int(np.argmax(np.asarray(tags.matrix.sum(axis=0)).ravel())), 0.3)
        for batch in (1, 1000):
            rows = split.test_input[np.arange(batch) % split.test_input.shape[0]]
            timing = steering_latency(model, rows, knob)
            for kind in ("unsteered", "steered"):
                records.append(
                    {
                        "dataset": name,
                        "model": f"{model.base.kind.lower()}+sae",
                        "metric": "latency_ms",
                        "value": timing[f"{kind}_ms"],
                        "setting": f"{kind},batch={batch}",
                        "n": batch,
                    }
                )
            print(
                f"{name} latency batch={batch}: unsteered {timing['unsteered_ms']:.1f} ms, "
                f"steered {timing['steered_ms']:.1f} ms (+{timing['steered_ms'] / timing['unsteered_ms'] - 1:.0%})",
                file=sys.stderr,
                flush=True,
            )

    print(
        "Best strength keeping >= 95% of personal Recall@20 (segment gain = segment recall / unsteered);"
    )
    print("suppression drop = 1 - share of the suppressed tag at full strength away / unsteered:")
    print(format_table(summary))
    print("Suppression at full strength away (drop of the dominant concept's share; personal")
    print("Recall@20 kept against unsteered; an item filter keeps what the other items give):")
    print(format_table(suppression))
    if args.plot:
        plot_curves(curves, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        write_records(args.json, records)
    return 0


def plot_curves(curves: dict[str, list[dict]], path: Path) -> None:
    """Personal vs segment Recall@20 as strength grows, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({key.split(" ")[0] for key in curves})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for key, sweep in curves.items():
            if (
                not key.startswith(dataset + " ")
                or ",latents=1" in key
                and "decoder" not in key
                and "best_char" not in key
            ):
                continue
            ax.plot(
                [p["segment_recall@20"] for p in sweep],
                [p["personal_recall@20"] for p in sweep],
                marker=".",
                label=key.split(" ", 1)[1].replace("mapping=", ""),
                alpha=0.8,
            )
        ax.axhline(0.95 * sweep[0]["personal_recall@20"], color="grey", ls=":", lw=1)
        ax.set(title=dataset, xlabel="segment Recall@20", ylabel="personal Recall@20")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    sys.exit(code)
