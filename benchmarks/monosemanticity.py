"""Monosemanticity of SAE latents vs two controls, on MovieLens concepts.

Per data set and seed: split users 80/10/10, fit the data set's splice base
(``steercf.experiment.splice_base``) and splice the default SAE recipe in
(``steercf.models.spliced``), once trained on reconstruction only (``train=recon``) and
once with the splice-aware fine-tune after it (``train=e2e``, kept only if validation
recall rises), take the SAE codes of every one-hot item, and measure how specific the
units are to the concepts (``steercf.concepts.report``) for

* ``sae``: the SAE latents;
* ``dense``: the base's embedding dimensions, each split into its positive and negative
  half (2d non-negative units);
* ``random_rotation``: the SAE item codes times a random orthogonal matrix, split the
  same way (the SAE's information in a random basis).

Concepts: ml-100k genres and knowledge-graph relations (>= 10 items), ml-latest-small
genres and user tags (>= 5 applications by *training* users). Records (all higher is
better): ``entropy_decrease_mean`` and ``kl_mean`` with setting ``latents`` (each unit's
distribution over concepts; KL in nats) or ``concepts`` (each concept's distribution
over units; KL divided by ln(#units) because the models have different unit counts),
``label_precision@10``, ``distinct_best_latents``, ``labelled_concepts``, ``coverage``.
Labels judged on items the labeller did not see (``steercf.concepts.evidence``), on the
concepts labels may name (``steercf.concepts.label_concepts``: the knowledge graph
without its unnamed entities on 10 % of the items or more): the items are split
60/20/20; ``label_precision@10_held_out`` and ``label_coverage_held_out`` (share of live
units labelled), read on two kinds of item activations, the setting naming which:
``items=audience`` (what the default labeller reads: each item's mean activation over
the training users who hold it, shrunk toward the all-user mean,
``steercf.concepts.audience_activations``; the controls average the split dense user
embeddings and the split rotated codes the same way) and ``items=one_hot`` (the
published one-hot item codes above); with setting ``labeller=evidence`` (expected precision of
the top items above chance on the training items, threshold chosen on the validation
items for precision@10 >= 0.6) or ``labeller=best_characterizes`` (every live unit
labelled by its TF-IDF concept from the training items), for the SAE and both controls.
Their coverage-precision curves on the same held-out items (``steercf.concepts.evidence.
held_out_curves``), with the former p-value rule as ``evidence_pvalue``: the same metrics
with setting ``curve,labeller=...,threshold=T`` (the expected-precision threshold, or the
share of live units labelled by p-value or TF-IDF strength), and with ``--plots`` a
figure per data set (``DATASET_label_curves.png``). ``label_precision@10_ceiling``
(setting ``coverage=C,items=...``; table rows ``ceiling@C``): the held-out precision@10
no labeller can beat at coverage C (``steercf.concepts.evidence.precision_ceiling``:
each live unit labelled by the concept that holds best on its own held-out top 10, the
best C of them kept), for every model: where it is below a target, no labeller reaches
the target there.
The full run adds the same records over units active on >= 10 items (setting suffix
``,min_items=10``), since units firing on one or two items are trivially specific.
``explanation_agreement`` (SAE only: controls explain nothing): each test user's top 10
recommendations are explained by their top 3 latents (``steering.explain_items``); of
the reasons with a label, the share whose label the explained item carries, counting
only items outside the 60 % the labels were fitted on. Labellers: ``evidence`` (labelled
latents only, threshold as above), ``evidence_best_guess`` (each latent's best-evidence
concept, labelled or not; both under the 10 % concept cap of
``steercf.concepts.evidence.capped_concepts``) and ``best_characterizes``.

    python benchmarks/monosemanticity.py [--quick] [--seeds 1] [--json out.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from steercf.concepts import (
    concept_tags,
    format_report,
    label_concepts,
    model_activations,
    monosemanticity_report,
    plot_label_curves,
    plot_reports,
)
from steercf.concepts.evidence import (
    DEFAULT_TARGET_PRECISION,
    DEFAULT_TOP_K,
    held_out_curves,
    held_out_labelling,
    judging_depth,
    pair_evidence,
    precision_ceiling,
    split_items,
)
from steercf.concepts.labels import evidence_threshold
from steercf.concepts.mapping import best_characterizes
from steercf.concepts.report import (
    CONTROLS,
    DIAGNOSTIC_METRICS,
    SPECIFICITY_KEYS,
    SUMMARY_METRICS,
    MonosemanticityReport,
)
from steercf.data import load_dataset
from steercf.evaluation import split_users
from steercf.experiment import splice_base, splice_train_config
from steercf.models.spliced import AUGMENT_COPIES, SplicedRecommender
from steercf.reporting import format_table, write_records
from steercf.steering import explain_items

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCES = {"ml-100k": ["genres", "kg"], "ml-latest-small": ["genres", "tags"]}
FULL: dict[str, Any] = {"sae": {}, "train": {}, "augment": AUGMENT_COPIES, "finetune_epochs": 10}
QUICK: dict[str, Any] = {
    "sae": {"k": 8, "expansion": 4},
    "train": {"max_epochs": 20},
    "augment": 2,
    "finetune_epochs": 2,
}
TRAININGS = ("recon", "e2e")
ROBUST_MIN_ITEMS = 10


def train(
    data: Any, seed: int, config: dict[str, Any], training: str, quick: bool
) -> tuple[SplicedRecommender, Any]:
    """The data set's splice base + an SAE (``training``: ``recon`` or ``e2e``) on the
    training users of a seeded split."""
    split = split_users(data.matrix, seed=seed)
    base = splice_base(data.name, seed=seed, quick=quick).fit(split.train, split.val_full)
    model = SplicedRecommender(
        base,
        config["sae"] or None,
        splice_train_config(data.name, **config["train"], seed=seed, progress=False),
        augment=config["augment"],
        seed=seed,
        progress=False,
        finetune_epochs=config["finetune_epochs"] if training == "e2e" else 0,
    ).fit(split.train, split.val_full)
    return model, split


def explanation_agreement(
    model: SplicedRecommender,
    users: Any,
    item_acts: np.ndarray,
    tags: Any,
    seed: int,
    n_recommend: int = 10,
    top_reasons: int = 3,
) -> dict[str, tuple[float, int]]:
    """``{labeller: (agreement, reasons counted)}``: of the labelled reasons explaining
    the users' top-``n_recommend`` items, the share whose label the item carries.

    Labels are fitted on a seeded 60 % of the items and only items outside it count, so
    the judge (the item's own tags) was not seen by the labeller.
    """
    matrix = sp.csr_matrix(tags.matrix if hasattr(tags, "matrix") else tags) > 0
    fit, val, _ = split_items(item_acts.shape[0], seed)
    live = (item_acts > 0).any(axis=0)
    # read at the depth the threshold was chosen at (steercf.concepts.evidence_threshold)
    pairs = pair_evidence(item_acts, matrix, fit, judging_depth(DEFAULT_TOP_K, len(fit), len(val)))
    # the library's own rule (what `steercf latent` shows): LABELLING_OFF when none reaches;
    # both evidence labellers hand out labels under the 10 % concept cap
    threshold = evidence_threshold(item_acts, matrix, live, seed=seed)
    concepts = {
        "evidence": pairs.capped(threshold),
        "evidence_best_guess": pairs.capped(None),
        "best_characterizes": np.where(
            live, best_characterizes(item_acts[fit], matrix[fit]).top_concepts(), -1
        ),
    }
    seen = np.zeros(item_acts.shape[0], bool)
    seen[fit] = True
    ids, _ = model.recommend(users, N=n_recommend)
    hits = {name: [] for name in concepts}
    for row in range(users.shape[0]):
        items = [int(i) for i in ids[row] if i >= 0 and not seen[i]]
        if not items:
            continue
        reasons = explain_items(model, users[row], items, top=top_reasons)
        for item, item_reasons in zip(items, reasons, strict=True):
            for latent, _ in item_reasons:
                for name, label in concepts.items():
                    if label[latent] >= 0:
                        hits[name].append(bool(matrix[item, label[latent]]))
    return {name: (float(np.mean(v)) if v else float("nan"), len(v)) for name, v in hits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="small models, one seed")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write flat records here")
    parser.add_argument("--plots", type=Path, help="write distribution plots into this folder")
    parser.add_argument("--details", action="store_true", help="print each SAE report too")
    parser.add_argument(
        "--train", nargs="+", choices=TRAININGS, default=list(TRAININGS), help="SAE trainings"
    )
    parser.add_argument(
        "--datasets", nargs="+", choices=list(SOURCES), default=list(SOURCES), help="data sets"
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    seeds = range(1 if args.quick else args.seeds)

    records: list[dict[str, Any]] = []
    reports: list[tuple[str, int, str, MonosemanticityReport]] = []
    labelling: list[tuple[str, str, str, str, dict[str, float]]] = []
    agreements: list[tuple[str, str, str, float, int]] = []
    for dataset, sources in SOURCES.items():
        if dataset not in args.datasets:
            continue
        data = load_dataset(dataset, data_dir=SHARED_DATA)
        label_curves: dict[tuple[str, str, str], list[dict[str, float]]] = {}
        for seed, training in itertools.product(seeds, args.train):
            started = time.perf_counter()
            model, split = train(data, seed, config, training, args.quick)
            acts = model_activations(model, seed=seed)
            # what the default labeller reads: each item's mean code over its training users
            audience = model_activations(model, seed=seed, user_items=split.train)
            setting = (
                f"{model.base.kind.lower()}{model.base.d_}+sae{model.n_latents}"
                f"/k{model.sae_.config.k},train={training}"
            )
            for source in sources:
                # user tags from training users only: no held-out user's tags leak in
                tags = concept_tags(data, source, train_users=split.train_users)
                # what labels may name (steercf.concepts.label_concepts: no unnamed
                # knowledge-graph entity on 10 % of the items or more)
                labelled_tags = label_concepts(data, source, train_users=split.train_users)
                for name, item_acts in acts.items():
                    report = monosemanticity_report(item_acts, tags, model=name, source=source)
                    reports.append((dataset, seed, training, report))
                    for record in report.records(dataset, seed=seed):
                        record["setting"] = ",".join(filter(None, [record["setting"], setting]))
                        records.append(record)
                    # labels fitted on training items, judged on held-out items, on
                    # the audience activations (the default labeller's) and the one-hot
                    # codes (the published S), every model through the same code
                    for items, labelled_acts in (
                        ("audience", audience[name]),
                        ("one_hot", np.asarray(item_acts)),
                    ):
                        live = (labelled_acts > 0).any(axis=0)
                        where = {
                            "dataset": f"{dataset}/{source}",
                            "model": name,
                            "seed": seed,
                            "n": int(live.sum()),
                        }
                        results = held_out_labelling(labelled_acts, labelled_tags, live, seed=seed)
                        for labeller, result in results.items():
                            records += held_out_records(
                                result, where, f"labeller={labeller},items={items},{setting}"
                            )
                            labelling.append(
                                (
                                    f"{dataset}/{source}",
                                    training,
                                    name,
                                    f"{labeller},{items}",
                                    result,
                                )
                            )
                        # what no labeller can beat on these activations (each latent
                        # labelled by the concept best on its own held-out top 10)
                        ceiling = precision_ceiling(labelled_acts, labelled_tags, live, seed)
                        for coverage, value in ceiling.items():
                            records.append(
                                {
                                    **where,
                                    "metric": "label_precision@10_ceiling",
                                    "value": value,
                                    "setting": f"coverage={coverage:g},items={items},{setting}",
                                }
                            )
                            labelling.append(
                                (
                                    f"{dataset}/{source}",
                                    training,
                                    name,
                                    f"ceiling@{coverage:g},{items}",
                                    {
                                        "precision@10": value,
                                        "coverage": coverage,
                                        "threshold": np.nan,
                                    },
                                )
                            )
                        # the coverage-precision curve of each labeller, same split
                        curves = held_out_curves(labelled_acts, labelled_tags, live, seed)
                        for labeller, curve in curves.items():
                            if (
                                seed == seeds[0]
                                and training == args.train[0]
                                # the figure: the evidence labeller on both item
                                # activations, the published mapping for the SAE
                                and (
                                    labeller == "evidence"
                                    or (labeller == "best_characterizes" and name == "sae")
                                )
                            ):
                                label_curves[(source, name, f"{labeller},{items}")] = curve
                            for point in curve:
                                records += held_out_records(
                                    point,
                                    where,
                                    f"curve,labeller={labeller},items={items},"
                                    f"threshold={point['threshold']:g},{setting}",
                                )
                    if name == "sae":
                        agreement = explanation_agreement(
                            model, split.test_input, audience[name], labelled_tags, seed
                        )
                        for labeller, (value, n) in agreement.items():
                            records.append(
                                {
                                    "dataset": f"{dataset}/{source}",
                                    "model": name,
                                    "metric": "explanation_agreement",
                                    "value": value,
                                    "seed": seed,
                                    "setting": f"labeller={labeller},items=audience,{setting}",
                                    "n": n,
                                }
                            )
                            agreements.append((f"{dataset}/{source}", training, labeller, value, n))
                    if args.details and name == "sae":
                        print(format_report(report, titles=data.titles(np.arange(data.n_items))))
                    if not args.quick:
                        robust = monosemanticity_report(
                            item_acts, tags, model=name, source=source, min_items=ROBUST_MIN_ITEMS
                        )
                        for record in robust.records(dataset, seed=seed):
                            record["setting"] = ",".join(
                                filter(
                                    None,
                                    [record["setting"], f"min_items={ROBUST_MIN_ITEMS}", setting],
                                )
                            )
                            records.append(record)
            kept = getattr(model, "finetune_gain_", None)
            print(
                f"{dataset} seed {seed} train={training}: {model.n_latents} latents, "
                f"{time.perf_counter() - started:.0f}s"
                + ("" if kept is None else f", fine-tune val recall gain {kept:+.4f}"),
                file=sys.stderr,
                flush=True,
            )
        if args.plots:
            chosen = [
                r for d, s, t, r in reports if d == dataset and s == seeds[0] and t == args.train[0]
            ]
            path = plot_reports(chosen, args.plots / f"{dataset}.png", title=dataset)
            print(f"plots: {path}", file=sys.stderr)
            path = plot_label_curves(
                label_curves,
                args.plots / f"{dataset}_label_curves.png",
                target_precision=DEFAULT_TARGET_PRECISION,
                title=f"{dataset}: labels fitted on 60 % of items, judged on 20 % held out",
            )
            print(f"plots: {path}", file=sys.stderr)

    rows, wins = summary_rows(reports)
    print(format_table(rows))
    print("\nExplanation agreement (labelled reasons whose label the item carries; SAE):")
    print(format_table(agreement_rows(agreements)))
    if len(args.train) == 2:  # side by side: what splice-aware training does to specificity
        print("\nSAE latents, e2e minus recon (mean over seeds):")
        print(format_table(training_deltas(rows)))
    print(
        "\nLabels fitted on 60 % of the items, judged on 20 % held out (mean over seeds; "
        "nan: nothing labelled; items=audience is what the default labeller reads):"
    )
    print(format_table(labelling_rows(labelling)))
    worst = min(wins, key=lambda w: w[2])
    print(
        f"\nSAE beats both controls on every specificity measure ({', '.join(SPECIFICITY_KEYS)}) "
        f"on every data set: {'yes' if worst[2] > 0 else 'NO'}; smallest margin "
        f"{worst[2]:.4f} ({worst[0]}, {worst[1]})"
    )
    if args.json:
        write_records(args.json, records)
        print(f"wrote {len(records)} records to {args.json}", file=sys.stderr)
    return 0


def held_out_records(
    point: dict[str, float], where: dict[str, Any], setting: str
) -> list[dict[str, Any]]:
    """A labelling point's held-out precision@10 and coverage as records (``where``:
    dataset, model, seed, n)."""
    return [
        {**where, "metric": metric, "value": point[key], "setting": setting}
        for metric, key in (
            ("label_precision@10_held_out", "precision@10"),
            ("label_coverage_held_out", "coverage"),
        )
    ]


def summary_rows(
    reports: list[tuple[str, int, str, MonosemanticityReport]],
) -> tuple[list[dict[str, Any]], list[tuple[str, str, float]]]:
    """Mean over seeds per (data set/source, training, metric, model), the SAE's margin
    over the better control, and the specificity margins (for the verdict line)."""
    grouped: dict[tuple[str, str, str], dict[str, list[dict[str, float]]]] = {}
    for dataset, _, training, report in reports:
        key = (dataset, report.source, training)
        grouped.setdefault(key, {}).setdefault(report.model, []).append(report.summary)
    rows, wins = [], []
    for (dataset, source, training), models in grouped.items():
        for key, (metric, setting) in (SUMMARY_METRICS | DIAGNOSTIC_METRICS).items():
            row: dict[str, Any] = {
                "dataset": f"{dataset}/{source}",
                "train": training,
                "metric": metric + (f" ({setting})" if setting else ""),
            }
            for name, summaries in models.items():
                row[name] = float(np.mean([s[key] for s in summaries]))
            best_control = max(row[c] for c in CONTROLS)
            row["margin"] = row["sae"] - best_control
            row["ratio"] = row["sae"] / best_control if best_control > 0 else float("inf")
            rows.append(row)
            if key in SPECIFICITY_KEYS:
                wins.append((f"{dataset}/{source},{training}", row["metric"], row["margin"]))
    return rows, wins


def labelling_rows(labelling: list[tuple[str, str, str, str, dict[str, float]]]) -> list[dict]:
    """Held-out label precision@10 and coverage per (target, training, labeller, model)."""
    keys = dict.fromkeys(entry[:4] for entry in labelling)
    rows = []
    for key in keys:
        results = [entry[4] for entry in labelling if entry[:4] == key]
        rows.append(
            {
                "dataset": key[0],
                "train": key[1],
                "model": key[2],
                "labeller,items": key[3],
                "precision@10 held out": finite_mean([r["precision@10"] for r in results]),
                # not the report's "coverage" (a share of concepts): a share of latents
                "labelled share of live units": float(np.mean([r["coverage"] for r in results])),
                # expected-precision threshold (1.0 for the TF-IDF labeller, which has none)
                "threshold": finite_mean([r["threshold"] for r in results]),
            }
        )
    return rows


def finite_mean(values: list[float]) -> float:
    """Mean of the finite values; nan (without numpy's empty-slice warning) if none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def agreement_rows(agreements: list[tuple[str, str, str, float, int]]) -> list[dict]:
    """Mean explanation agreement over seeds per (target, training, labeller)."""
    keys = dict.fromkeys(entry[:3] for entry in agreements)
    rows = []
    for key in keys:
        values = [entry[3] for entry in agreements if entry[:3] == key]
        counted = [entry[4] for entry in agreements if entry[:3] == key]
        rows.append(
            {
                "dataset": key[0],
                "train": key[1],
                "labeller": key[2],
                "agreement": float(np.nanmean(values))
                if np.isfinite(values).any()
                else float("nan"),
                "reasons": int(np.sum(counted)),
            }
        )
    return rows


def training_deltas(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (data set/source, metric): the SAE's value under recon and e2e and their
    difference (positive: splice-aware training made the latents more specific)."""
    by_key = {(r["dataset"], r["metric"], r["train"]): r["sae"] for r in rows}
    out = []
    for dataset, metric in dict.fromkeys((r["dataset"], r["metric"]) for r in rows):
        recon, e2e = by_key.get((dataset, metric, "recon")), by_key.get((dataset, metric, "e2e"))
        if recon is not None and e2e is not None:
            out.append(
                {
                    "dataset": dataset,
                    "metric": metric,
                    "recon": recon,
                    "e2e": e2e,
                    "delta": e2e - recon,
                }
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
