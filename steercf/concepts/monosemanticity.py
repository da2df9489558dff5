"""How monosemantic are a model's units? The specificity report of one activation matrix.

:func:`monosemanticity_report` takes an ``(n_items, n_units)`` non-negative activation
matrix, so SAE latents and the controls of :mod:`steercf.concepts.controls` are measured
by the very same code. ``A`` and ``tfidf`` are as in :mod:`steercf.concepts.mapping`; the
measures (entropy, relative entropy decrease, KL from the mean) are those of
:mod:`steercf.concepts.specificity`.

Two directions:

* **latents**: each live unit's row of ``tfidf(A^T)`` (its distribution over the
  concepts). ``m`` = number of concepts, the same for every model, so raw values
  compare fairly; ``kl_mean`` is in nats.
* **concepts**: each concept's row of ``tfidf(A)`` (its distribution over the live
  units). ``m`` differs between models (dense has 2d units, the rotation 2x the
  SAE's), and KL grows with ``ln m``, so ``kl_mean`` here is divided by ``ln m``
  (the decrease is already a ratio).

Summary (all higher = better): ``entropy_decrease_mean`` and ``kl_mean`` per direction;
``label_precision@10`` (mean over live units of the share of the unit's 10 most active
items carrying its label, the unit's top concept under "best characterizes");
``distinct_best_latents`` (distinct units that are some concept's best unit);
``labelled_concepts`` (distinct concepts that are some live unit's label); ``coverage``
(share of concepts that label at least one live unit whose latent-side entropy decrease
is >= ``threshold``, default 0.5: a unit at most half as uncertain as the background).
Diagnostics kept in the summary but not in the benchmark records: ``mutual_best_pairs``
(concepts whose best unit has them as its label) and ``best_latent_precision@10`` (mean
over concepts of the share of the best unit's top 10 items carrying the concept).

The two counts are not specificity measures: a control whose units all respond a little
to everything still spreads its argmaxes over many units and concepts, and concepts with
identical item sets (a director who also wrote the film) rightly share one best unit.
Read them next to the precision measures, which say whether the assignments are real.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from steercf.concepts.arrays import TOP_ITEMS, ItemActs, tag_inputs, tag_means, tfidf, top_items
from steercf.concepts.specificity import Specificity, specificity
from steercf.data import ItemTags
from steercf.errors import InputError

SPECIFICITY_THRESHOLD = 0.5
# summary keys -> (record metric, record setting); all higher is better
SUMMARY_METRICS: dict[str, tuple[str, str]] = {
    "latent_entropy_decrease_mean": ("entropy_decrease_mean", "latents"),
    "latent_kl_mean": ("kl_mean", "latents"),
    "concept_entropy_decrease_mean": ("entropy_decrease_mean", "concepts"),
    "concept_kl_mean": ("kl_mean", "concepts"),
    f"label_precision@{TOP_ITEMS}": (f"label_precision@{TOP_ITEMS}", ""),
    "distinct_best_latents": ("distinct_best_latents", ""),
    "labelled_concepts": ("labelled_concepts", ""),
    "coverage": ("coverage", ""),
}
# shown in comparisons, not written as benchmark records
DIAGNOSTIC_METRICS: dict[str, tuple[str, str]] = {
    f"best_latent_precision@{TOP_ITEMS}": (f"best_latent_precision@{TOP_ITEMS}", "diagnostic"),
    "mutual_best_pairs": ("mutual_best_pairs", "diagnostic"),
}
SPECIFICITY_KEYS = (
    "latent_entropy_decrease_mean",
    "latent_kl_mean",
    "concept_entropy_decrease_mean",
    "concept_kl_mean",
)


@dataclass(eq=False)
class MonosemanticityReport:
    """Specificity of one model's units against one concept source.

    Attributes:
        model: ``"sae"``, ``"dense"``, ``"random_rotation"`` or any label.
        source: the concept source (e.g. ``"genres"``).
        tag_names: (n_concepts,) concept names.
        units: (n_live,) ids of the live units (active on >= ``min_items`` items).
        n_units: all units, live or not.
        latents: specificity of each live unit's concept distribution (rows aligned to
            ``units``).
        concepts: specificity of each concept's distribution over the live units.
        unit_label: (n_live,) each live unit's top concept (index into ``tag_names``).
        unit_label_score: (n_live,) its "best characterizes" score.
        unit_precision: (n_live,) share of the unit's top-k items carrying its label.
        unit_base_rate: (n_live,) share of all items carrying its label (chance level of
            ``unit_precision``).
        unit_top_items: (n_live, k) the unit's most active items, -1 padded.
        unit_n_items: (n_live,) number of items the unit is active on.
        best_unit: (n_concepts,) each concept's best unit (unit id).
        summary: the headline numbers, keys of :data:`SUMMARY_METRICS` plus counts.
        settings: k, threshold, min_items.
    """

    model: str
    source: str
    tag_names: np.ndarray
    units: np.ndarray
    n_units: int
    latents: Specificity
    concepts: Specificity
    unit_label: np.ndarray
    unit_label_score: np.ndarray
    unit_precision: np.ndarray
    unit_base_rate: np.ndarray
    unit_top_items: np.ndarray
    unit_n_items: np.ndarray
    best_unit: np.ndarray
    summary: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_live(self) -> int:
        return len(self.units)

    @property
    def n_concepts(self) -> int:
        return len(self.tag_names)

    def records(self, dataset: str, seed: int | None = None) -> list[dict[str, Any]]:
        """Flat benchmark records: dataset ``"<data>/<source>"``, model, metric, value,
        setting (``latents`` / ``concepts`` for the two specificity directions), n (live
        units, or concepts for concept-level metrics) and seed."""
        out = []
        for key, (metric, setting) in SUMMARY_METRICS.items():
            by_concept = key.startswith("concept") or metric in ("labelled_concepts", "coverage")
            record = {
                "dataset": f"{dataset}/{self.source}",
                "model": self.model,
                "metric": metric,
                "value": float(self.summary[key]),
                "setting": setting,
                "n": self.n_concepts if by_concept else self.n_live,
            }
            if seed is not None:
                record["seed"] = seed
            out.append(record)
        return out


def monosemanticity_report(
    item_acts: ItemActs,
    item_tags: ItemTags | sp.spmatrix,
    model: str = "sae",
    source: str = "",
    tag_names: Iterable[str] | None = None,
    k: int = TOP_ITEMS,
    threshold: float = SPECIFICITY_THRESHOLD,
    min_items: int = 1,
) -> MonosemanticityReport:
    """Measure how specific each unit is to the concepts, and each concept to the units.

    Args:
        item_acts: (n_items, n_units) non-negative activations (see
            :func:`~steercf.concepts.controls.signed_split` for signed features).
        item_tags: (n_items, n_concepts) concept counts.
        model, source: names carried into the report and its records.
        tag_names: overrides the names of ``item_tags``.
        k: top items per unit for label precision.
        threshold: latent-side entropy decrease a unit needs to count for ``coverage``.
        min_items: a unit is live when active on at least this many items; only live
            units enter any measure (dead units have no concept distribution).

    Returns:
        A :class:`MonosemanticityReport`.
    """
    acts, counts, names = tag_inputs(item_acts, item_tags, tag_names)
    if counts.shape[1] == 0:
        raise InputError(f"no concepts in source {source!r}: lower its minimum count")
    units = np.flatnonzero((acts > 0).sum(axis=0) >= min_items)
    if units.size == 0:
        raise InputError(f"model {model!r} has no unit active on >= {min_items} item(s)")
    live_acts = acts[:, units]  # (n_items, n_live)
    means = tag_means(live_acts, counts)  # (n_concepts, n_live)
    # latent direction: rows of tfidf(A^T), units as terms (the "best characterizes" matrix)
    characterizes = tfidf(means.T)  # (n_live, n_concepts)
    # concept direction: rows of tfidf(A), concepts as terms (the "most unique" matrix)
    unique = tfidf(means)  # (n_concepts, n_live)

    label = characterizes.argmax(axis=1)
    has = (counts > 0).tocsc()
    tops = top_items(live_acts, k)
    best_local = characterizes.argmax(axis=0)  # (n_concepts,) index into `units`
    report = MonosemanticityReport(
        model=model,
        source=source,
        tag_names=names,
        units=units,
        n_units=acts.shape[1],
        latents=specificity(characterizes),
        concepts=specificity(unique),
        unit_label=label,
        unit_label_score=characterizes[np.arange(units.size), label],
        unit_precision=_label_precision(tops, label, has),
        unit_base_rate=np.asarray(has.sum(axis=0)).ravel()[label] / acts.shape[0],
        unit_top_items=tops,
        unit_n_items=(live_acts > 0).sum(axis=0),
        best_unit=units[best_local],
        settings={"k": k, "threshold": threshold, "min_items": min_items},
    )
    mutual, best_precision = _best_unit_checks(label, best_local, tops, has)
    report.summary = _summary(report, mutual, best_precision)
    return report


def _label_precision(tops: np.ndarray, label: np.ndarray, has: sp.csc_matrix) -> np.ndarray:
    """(n_live,) share of each unit's top items that carry its label.

    Args:
        tops: (n_live, k) top items, -1 padded (:func:`~steercf.concepts.arrays.top_items`).
        label: (n_live,) each unit's label (concept index).
        has: (n_items, n_concepts) bool, item carries concept.
    """
    valid = tops >= 0
    carries = np.zeros(tops.shape, dtype=bool)
    for j in range(has.shape[1]):  # grouped by label: one column lookup per concept
        rows = np.flatnonzero(label == j)
        if rows.size:
            column = np.asarray(has[:, j].todense()).ravel()
            carries[rows] = column[np.where(valid[rows], tops[rows], 0)] & valid[rows]
    # a unit active on fewer than k items is judged on the items it has
    return carries.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def _best_unit_checks(
    label: np.ndarray, best_local: np.ndarray, tops: np.ndarray, has: sp.csc_matrix
) -> tuple[int, np.ndarray]:
    """The concept -> unit direction of the label checks.

    Args:
        label: (n_live,) each unit's label (concept index).
        best_local: (n_concepts,) each concept's best unit (index into the live units).
        tops: (n_live, k) top items, -1 padded.
        has: (n_items, n_concepts) bool, item carries concept.

    Returns:
        ``(mutual, precision)``: the number of concepts ``c`` with
        ``label(best_unit(c)) == c`` (one-to-one concept <-> unit matches), and
        (n_concepts,) the share of each concept's best unit's top items carrying it
        (does the concept's best unit fire on the concept's items?).
    """
    valid = tops >= 0
    precision = np.array(
        [
            np.asarray(has[:, c].todense()).ravel()[tops[b][valid[b]]].mean()
            if valid[b].any()
            else 0.0
            for c, b in enumerate(best_local)
        ]
    )
    mutual = int((label[best_local] == np.arange(has.shape[1])).sum())
    return mutual, precision


def _summary(
    report: MonosemanticityReport, mutual: int, best_precision: np.ndarray
) -> dict[str, float]:
    """The headline numbers of a report whose per-unit and per-concept arrays are set
    (keys of :data:`SUMMARY_METRICS` and :data:`DIAGNOSTIC_METRICS`, plus context)."""
    k, threshold = report.settings["k"], report.settings["threshold"]
    latents, concepts, label = report.latents, report.concepts, report.unit_label
    specific = latents.decrease >= threshold
    covered = np.unique(label[specific])
    summary = {
        "latent_entropy_decrease_mean": float(np.nanmean(latents.decrease)),
        "latent_kl_mean": float(np.nanmean(latents.kl)),
        "concept_entropy_decrease_mean": float(np.nanmean(concepts.decrease)),
        "concept_kl_mean": float(np.nanmean(concepts.kl_normalised)),
        f"label_precision@{k}": float(report.unit_precision.mean()),
        "distinct_best_latents": float(np.unique(report.best_unit).size),
        "labelled_concepts": float(np.unique(label).size),
        "coverage": float(covered.size / report.n_concepts),
        # context, not records
        "mutual_best_pairs": float(mutual),
        f"best_latent_precision@{k}": float(best_precision.mean()),
        "label_base_rate": float(report.unit_base_rate.mean()),
        "latent_kl_normalised_mean": float(np.nanmean(latents.kl_normalised)),
        "concept_kl_nats_mean": float(np.nanmean(concepts.kl)),
        "n_units": float(report.n_units),
        "n_live": float(report.n_live),
        "n_concepts": float(report.n_concepts),
    }
    if k != TOP_ITEMS:  # keep SUMMARY_METRICS' key stable for records
        summary[f"label_precision@{TOP_ITEMS}"] = summary[f"label_precision@{k}"]
        summary[f"best_latent_precision@{TOP_ITEMS}"] = summary[f"best_latent_precision@{k}"]
    return summary
