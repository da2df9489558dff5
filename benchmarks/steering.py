"""Steering: SAE knobs against the published recipe and a tag-boost re-ranker, with every
choice made on validation users and reported on test users.

Per data set and seed: split users (protocol), fit the splice base and splice the default
SAE in (``steercf.experiment.splice_base``, ``steercf.models.spliced``). Per target
(ML-100K genres, ml-latest-small genres and user tags) and tag protocol:

* ``tags=full``: steerers see every item's tags; the segment is every unseen item
  carrying the user's target concept.
* ``tags=half``: a random half of each concept's items is hidden
  (``steering_eval.hide_tag_items``); knobs, mappings and the re-ranker see only the
  visible half, and the segment counts only the hidden half: items the steerer could
  not have known.

Methods (``model`` in the records; ``--base multvae`` splices into the Mult-VAE preset
instead of the ELSA splice base, and every setting names its base):

* ``sae``: SAE knobs; mapping (``decoder_effect``, ``decoder_fit``) and spread (8, 32
  latents) under the additive rule, or ``decoder_effect`` over 32 latents under the
  convex rule, and the strength, chosen on validation users;
* ``published``: the steerable-CF recipe, TF-IDF ``best_characterizes``, convex rule,
  1, 5 or 10 latents, strength chosen on validation users;
* ``rerank``: ``score + beta * std_u(score) * has_tag`` over the visible tags, beta
  chosen on validation users;
* ``sae+rerank``: the SAE step at the library's defaults plus the re-ranker's boost,
  one knob (``steering_eval.combined_steerer``; beta = ``beta_per_strength`` x
  strength, both chosen on validation users). Its parts alone at its chosen point are
  reported apart as ``sae+rerank:sae part`` and ``sae+rerank:rerank part``;
* ``tagspace``: a TEASER-style tag-space autoencoder (``steercf.models.tagspace``)
  fitted on the training users and the visible tags, steered by raising the profile's
  entry of the concept (strength in units of the profile's largest entry) chosen on
  validation users. Its own unsteered accuracy is a record too
  (``unsteered_personal_recall@20``): its gains are relative to a weaker list.

The choice: the largest segment Recall@20 that keeps >= 95 % of the unsteered personal
Recall@20 on validation users (``steering_eval.choose_point``). Reported on test users at
that choice: ``segment_gain@20`` (segment recall / unsteered), ``personal_kept@20`` and
``in_segment_recall@20`` (the user's held-out items that are in the segment). The test
curves of each method's chosen configuration are records too (``setting`` with
``alpha=``) and, with ``--plot``, a figure with standard-error bands.

``--map`` draws a 2-D map (UMAP if installed, else PCA) of the first data set's test
users before and after steering toward a genre with the library's defaults
(``steercf.steering.steering_map``), with the genre's anchor items.

    python benchmarks/steering.py [--quick] [--seeds 5] [--json out.json] [--plot out.png]
        [--map map.png]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from steercf.concepts import concept_tags
from steercf.data import ItemTags, load_dataset
from steercf.evaluation import split_users
from steercf.experiment import base_params, make_model, splice_base, splice_train_config
from steercf.models import TagSpaceAutoencoder
from steercf.models.spliced import AUGMENT_COPIES, SplicedRecommender
from steercf.reporting import format_table, write_records
from steercf.steering import (
    DECODER_EFFECT,
    DECODER_FIT,
    DEFAULT_MAPPING,
    DEFAULT_RULE,
    DEFAULT_STRENGTH,
    DEFAULT_TOP_LATENTS,
    MAX_ADDITIVE,
    ConceptKnobs,
    concept_anchor_items,
    plot_steering_map,
    steering_map,
)
from steercf.steering_eval import (
    choose_point,
    combined_steerer,
    hide_tag_items,
    point_ratios,
    sae_steerer,
    steering_latency,
    steering_task,
    sweep,
    tag_boost_steerer,
    tag_space_steerer,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGETS = [("ml-100k", "genres"), ("ml-latest-small", "genres"), ("ml-latest-small", "tags")]
PROTOCOLS = ("full", "half")
STRENGTHS = {
    "convex": [round(0.05 * i, 2) for i in range(17)],  # 0 .. 0.8
    # over the rule's whole valid range: a wide spread needs large strengths
    "additive": [round(0.25 * i, 2) for i in range(13)] + [4.0, MAX_ADDITIVE],
}
# sae+rerank: the boost in score sds per unit of SAE strength (the SAE part at the defaults)
BETA_PER_STRENGTH = [0.25, 0.5, 1.0, 2.0]
PROFILE_STRENGTHS = [round(0.1 * i, 1) for i in range(11)] + [1.5, 2.0, 3.0, 5.0, 10.0]
BETAS = [round(0.1 * i, 1) for i in range(11)] + [1.5, 2.0, 3.0, 5.0, 10.0, 30.0]  # in score sds
# the additive grid over both mappings and spreads, and convex at the wide spread (the
# only convex configuration validation ever chose in a full grid, seed 0)
SAE_CONFIGS = [
    {"mapping": m, "rule": "additive", "latents": n}
    for m, n in itertools.product((DECODER_EFFECT, DECODER_FIT), (8, 32))
] + [{"mapping": DECODER_EFFECT, "rule": "convex", "latents": 32}]
PUBLISHED_CONFIGS = [
    {"mapping": "best_characterizes", "rule": "convex", "latents": n} for n in (1, 5, 10)
]
# the library's steering defaults (steercf.steering.defaults): the SAE part of sae+rerank
DEFAULTS_CONFIG = {"mapping": DEFAULT_MAPPING, "rule": DEFAULT_RULE, "latents": DEFAULT_TOP_LATENTS}
K = 20


def setting_of(config: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in config.items())


def pick(candidates: list[tuple[dict, Any, list[float]]], val_task, test_task) -> dict:
    """Sweep every (config, steerer, strengths) on the validation task, choose the
    config and strength there, then sweep that config on the test task.

    Returns ``config``, ``strength``, the validation point and the test curve and point."""
    best = None
    for config, steerer, strengths in candidates:
        point = choose_point(sweep(steerer, val_task, strengths, K), k=K)
        if best is None or point[f"segment_recall@{K}"] > best[1][f"segment_recall@{K}"]:
            best = (config, point, steerer, strengths)
    config, val_point, steerer, strengths = best
    curve = sweep(steerer, test_task, strengths, K)
    chosen = next(p for p in curve if p["strength"] == val_point["strength"])
    return {
        "config": config,
        "strength": val_point["strength"],
        "val": val_point,
        "curve": curve,
        "test": {**chosen, **point_ratios(chosen, curve[0], K)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="ML-100K, one seed, few settings")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="test curves with standard-error bands (PNG)")
    parser.add_argument(
        "--map", type=Path, help="2-D map of test users steered by the defaults (PNG, seed 0)"
    )
    parser.add_argument(
        "--base",
        choices=("splice", "multvae"),
        default="splice",
        help="the CFAE the SAE is spliced into: the data set's splice base "
        "(steercf.experiment.splice_base) or the Mult-VAE preset",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=[f"{d}/{s}" for d, s in TARGETS],
        help="only these targets (default: all; --quick: the first)",
    )
    args = parser.parse_args(argv)
    targets = TARGETS[:1] if args.quick else TARGETS
    if args.targets:
        targets = [t for t in TARGETS if f"{t[0]}/{t[1]}" in args.targets]
    seeds = range(1 if args.quick else args.seeds)
    sae_configs = SAE_CONFIGS[:2] if args.quick else SAE_CONFIGS
    published_configs = PUBLISHED_CONFIGS[:1] if args.quick else PUBLISHED_CONFIGS

    records: list[dict] = []
    results: list[dict] = []  # one per (target, protocol, method, seed)
    curves: dict[tuple[str, str, str], list[list[dict]]] = {}
    for seed in seeds:
        models: dict[str, tuple] = {}
        for dataset, source in targets:
            started = time.perf_counter()
            if dataset not in models:
                data = load_dataset(dataset, data_dir=SHARED_DATA)
                split = split_users(data.matrix, seed=seed)
                train = splice_train_config(
                    dataset, seed=seed, progress=False, **({"max_epochs": 5} if args.quick else {})
                )
                base = (
                    splice_base(dataset, seed=seed, quick=args.quick)
                    if args.base == "splice"
                    else make_model(
                        "multvae", **base_params(dataset, "multvae", quick=args.quick), seed=seed
                    )
                )
                model = SplicedRecommender(
                    base, train_config=train, augment=2 if args.quick else AUGMENT_COPIES, seed=seed
                ).fit(split.train, split.val_full)
                models[dataset] = (data, split, model)
            data, split, model = models[dataset]
            tags = concept_tags(data, source, split.train_users)
            target = f"{dataset}/{source}"
            for protocol in PROTOCOLS:
                if protocol == "full":
                    visible, segment_tags = tags.matrix, tags.matrix
                else:
                    visible, segment_tags = hide_tag_items(tags.matrix, 0.5, seed)
                seen = ItemTags(visible, tags.names)
                val_task = steering_task(
                    split.val_input, split.val_target, tags.matrix, segment_tags
                )
                test_task = steering_task(
                    split.test_input, split.test_target, tags.matrix, segment_tags
                )
                configs = sae_configs + published_configs + [DEFAULTS_CONFIG]
                mappings = {  # each mapping once; a spread only picks its top latents
                    c["mapping"]: ConceptKnobs.from_tags(model, seen, c["mapping"], 1).mapping
                    for c in configs
                }

                def steerer(config: dict, mappings: dict = mappings, model=model):
                    knobs = ConceptKnobs(mappings[config["mapping"]], config["latents"])
                    return sae_steerer(model, knobs, config["rule"])

                rerank = tag_boost_steerer(model, visible)
                at_defaults = steerer(DEFAULTS_CONFIG)  # sae+rerank's SAE part, encoded once
                methods = {
                    "sae": [
                        (
                            c,
                            steerer(c),
                            STRENGTHS[c["rule"]],
                        )
                        for c in sae_configs
                    ],
                    "published": [
                        (
                            c,
                            steerer(c),
                            STRENGTHS[c["rule"]],
                        )
                        for c in published_configs
                    ],
                    "rerank": [({"boost": "tag"}, rerank, BETAS)],
                    "sae+rerank": [
                        (
                            {**DEFAULTS_CONFIG, "beta_per_strength": b},
                            combined_steerer(at_defaults, rerank, b),
                            STRENGTHS[DEFAULT_RULE],
                        )
                        for b in BETA_PER_STRENGTH
                    ],
                    "tagspace": [
                        (
                            {"profile": "tag"},
                            tag_space_steerer(
                                TagSpaceAutoencoder(
                                    epochs=10 if args.quick else 100, seed=seed
                                ).fit(split.train, item_tags=visible)
                            ),
                            PROFILE_STRENGTHS,
                        )
                    ],
                }
                outcomes = {
                    method: pick(candidates, val_task, test_task)
                    for method, candidates in methods.items()
                }
                # the combination's parts alone, at its chosen point, reported apart
                chosen = outcomes["sae+rerank"]
                beta = chosen["config"]["beta_per_strength"] * chosen["strength"]
                for part, part_steerer, strength in (
                    ("sae+rerank:sae part", at_defaults, chosen["strength"]),
                    ("sae+rerank:rerank part", rerank, beta),
                ):
                    curve = sweep(part_steerer, test_task, [0.0, strength], K)
                    outcomes[part] = {
                        "config": {"part_of": "sae+rerank"},
                        "strength": strength,
                        "curve": curve,
                        "test": {**curve[1], **point_ratios(curve[1], curve[0], K)},
                    }
                for method, out in outcomes.items():
                    setting = f"base={args.base},tags={protocol},{setting_of(out['config'])},alpha={out['strength']}"
                    out["test"][f"unsteered_personal_recall@{K}"] = out["curve"][0][
                        f"personal_recall@{K}"
                    ]
                    for metric in (
                        f"segment_gain@{K}",
                        f"personal_kept@{K}",
                        f"in_segment_recall@{K}",
                        f"unsteered_personal_recall@{K}",
                        f"personal_recall@{K}",  # absolute: a weak model keeps 95 % of little
                        f"segment_recall@{K}",
                    ):
                        records.append(
                            {
                                "dataset": target,
                                "model": method,
                                "metric": metric,
                                "value": out["test"][metric],
                                "seed": seed,
                                "setting": setting,
                                "n": out["test"]["n_users"],
                            }
                        )
                    for point in out["curve"]:
                        for metric in (
                            f"personal_recall@{K}",
                            f"segment_recall@{K}",
                            f"in_segment_recall@{K}",
                        ):
                            records.append(
                                {
                                    "dataset": target,
                                    "model": method,
                                    "metric": metric,
                                    "value": point[metric],
                                    "seed": seed,
                                    "setting": f"curve,base={args.base},tags={protocol},{setting_of(out['config'])},alpha={point['strength']}",
                                    "n": point["n_users"],
                                }
                            )
                    if "part" not in method:
                        curves.setdefault((target, protocol, method), []).append(out["curve"])
                    results.append(
                        {
                            "target": target,
                            "tags": protocol,
                            "method": method,
                            "seed": seed,
                            "choice": f"{setting_of(out['config'])},alpha={out['strength']}",
                            "in_segment_before": out["curve"][0][f"in_segment_recall@{K}"],
                            "segment_before": out["curve"][0][f"segment_recall@{K}"],
                            "segment_at_choice": out["test"][f"segment_recall@{K}"],
                            "unsteered_personal": out["curve"][0][f"personal_recall@{K}"],
                            "personal_at_choice": out["test"][f"personal_recall@{K}"],
                            **{
                                key: out["test"][key]
                                for key in (
                                    f"segment_gain@{K}",
                                    f"personal_kept@{K}",
                                    f"in_segment_recall@{K}",
                                )
                            },
                        }
                    )
            if args.json:  # keep what is done if a long run is interrupted
                write_records(args.json, records)
            print(
                f"seed {seed} {target}: {time.perf_counter() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        if seed == seeds[0]:
            latency(models, records)
            if args.map:
                draw_map(models, args.map, records)

    print(
        f"Test users at the point chosen on validation users (>= 95 % personal Recall@{K} kept); mean ± sd over {len(seeds)} seed(s):"
    )
    print(format_table(summary_rows(results)))
    if not args.quick:
        print("\nChoices per seed:")
        print(
            format_table(
                [{k: r[k] for k in ("target", "tags", "method", "seed", "choice")} for r in results]
            )
        )
    if args.plot:
        plot_curves(curves, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        write_records(args.json, records)
    return 0


def summary_rows(results: list[dict]) -> list[dict]:
    """Mean ± sd over seeds per (target, protocol, method), with the SAE's segment gain
    over the re-ranker's."""
    rows = []
    keys = dict.fromkeys((r["target"], r["tags"], r["method"]) for r in results)
    for target, tags, method in keys:
        group = [
            r for r in results if (r["target"], r["tags"], r["method"]) == (target, tags, method)
        ]
        row: dict[str, Any] = {"target": target, "tags": tags, "method": method}
        for metric in (
            "unsteered_personal",
            "personal_at_choice",
            "segment_before",
            "segment_at_choice",
            f"segment_gain@{K}",
            f"personal_kept@{K}",
            "in_segment_before",
            f"in_segment_recall@{K}",
        ):
            values = np.array([r[metric] for r in group], dtype=float)
            row[metric] = float(np.nanmean(values))
            row[f"{metric} sd"] = (
                float(np.nanstd(values, ddof=1)) if len(values) > 1 else float("nan")
            )
        rows.append(row)
    by_key = {(r["target"], r["tags"], r["method"]): r for r in rows}
    for row in rows:
        rerank = by_key.get((row["target"], row["tags"], "rerank"))
        row["gain / rerank"] = (
            row[f"segment_gain@{K}"] / rerank[f"segment_gain@{K}"] if rerank else float("nan")
        )
    return rows


def draw_map(models: dict[str, tuple], path: Path, records: list[dict]) -> None:
    """The first data set's test users steered toward the genre most often their target,
    with the library's defaults (mapping, spread, rule, strength), on a 2-D map with the
    genre's 20 most popular items; records the share of users moved toward them."""
    dataset, (data, split, model) = next(iter(models.items()))
    tags = concept_tags(data, "genres", split.train_users)
    task = steering_task(split.test_input, split.test_target, tags.matrix)
    concept = int(np.bincount(task.concepts).argmax())
    name = str(tags.names[concept])
    popularity = np.asarray(split.train.sum(axis=0)).ravel()
    anchors = concept_anchor_items(tags.matrix, concept, popularity, 20)
    knobs = ConceptKnobs.for_model(model, data, "genres", train_users=split.train_users)
    atlas = steering_map(model, split.test_input, [knobs.knob(name, DEFAULT_STRENGTH)], anchors)
    title = f"{dataset}: test users steered +{name} (defaults), {atlas.projection.upper()}"
    plot_steering_map(atlas, path, title, list(data.titles(anchors)))
    moved = float(np.mean(atlas.toward_anchors > 0))
    records.append(
        {
            "dataset": f"{dataset}/genres",
            "model": "sae",
            "metric": "moved_toward_anchors",
            "value": moved,
            "setting": f"map,concept={name},defaults",
            "n": int(split.test_input.shape[0]),
        }
    )
    print(f"map: {path} ({moved:.0%} of test users moved toward +{name})", file=sys.stderr)


def latency(models: dict[str, tuple], records: list[dict]) -> None:
    """Median ms of an unsteered and a steered top-20 (one user, a batch of 1,000)."""
    for dataset, (data, split, model) in models.items():
        knobs = ConceptKnobs.for_model(model, data, "genres", train_users=split.train_users)
        tags = concept_tags(data, "genres", split.train_users)
        knob = knobs.knob(int(np.argmax(np.asarray(tags.matrix.sum(axis=0)).ravel())), 0.3)
        for batch in (1, 1000):
            rows = split.test_input[np.arange(batch) % split.test_input.shape[0]]
            timing = steering_latency(model, rows, knob, repeats=10)
            for kind in ("unsteered", "steered"):
                records.append(
                    {
                        "dataset": dataset,
                        "model": "sae",
                        "metric": "latency_ms",
                        "value": timing[f"{kind}_ms"],
                        "setting": f"{kind},batch={batch}",
                        "n": batch,
                    }
                )
            print(
                f"{dataset} latency batch={batch}: unsteered {timing['unsteered_ms']:.1f} ms, "
                f"steered {timing['steered_ms']:.1f} ms",
                file=sys.stderr,
                flush=True,
            )


def plot_curves(curves: dict[tuple[str, str, str], list[list[dict]]], path: Path) -> None:
    """Personal vs segment Recall@20 along each method's chosen test curve (mean over
    seeds), with standard-error bands; one panel per (target, protocol)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((t, p) for t, p, _ in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (target, protocol) in zip(axes[0], panels, strict=True):
        for (t, p, method), runs in curves.items():
            if (t, p) != (target, protocol):
                continue
            length = min(len(run) for run in runs)
            seg = np.array([[pt[f"segment_recall@{K}"] for pt in run[:length]] for run in runs])
            per = np.array([[pt[f"personal_recall@{K}"] for pt in run[:length]] for run in runs])
            se = np.array([[pt[f"personal_recall@{K}_se"] for pt in run[:length]] for run in runs])
            x, y, band = seg.mean(0), per.mean(0), se.mean(0)
            ax.plot(x, y, marker=".", label=method)
            ax.fill_between(x, y - band, y + band, alpha=0.2)
            ax.axhline(0.95 * y[0], color="grey", ls=":", lw=1)
        ax.set(
            title=f"{target}, tags={protocol}",
            xlabel=f"segment Recall@{K}",
            ylabel=f"personal Recall@{K}",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    sys.exit(code)
