"""How monosemantic are a model's units? Specificity measures, controls and plots.

Everything here takes an ``(n_items, n_units)`` non-negative activation matrix, so SAE
latents and the two controls are measured by the very same code:

* ``sae``: SAE codes of each item's one-hot row (:func:`sae_item_activations`).
* ``dense``: the CFAE embedding of each one-hot item, ``d`` signed dimensions made
  non-negative by :func:`signed_split` into ``2d`` units (the positive and the negative
  half of each dimension: a direction and its opposite are different features).
* ``random_rotation``: the SAE item codes times a random orthogonal matrix, then the
  same :func:`signed_split` (``2 * n_latents`` units). It holds exactly the SAE's
  information, so whatever it loses is due to the basis, not the content.

Measures (``A``, ``tfidf`` as in :mod:`steercf.concepts.mapping`; natural logs, nats).
For a non-negative row ``r`` over ``m`` outcomes, ``p = r / sum(r)``, and ``p̄`` the mean
of the rows' ``p`` (the background distribution):

* entropy ``H(p) = -sum p log p``;
* relative entropy decrease ``(H(p̄) - H(p)) / H(p̄)``: 0 for a row like the background,
  1 for a row on a single outcome. The reference measures the decrease from "the mean";
  against the *mean of the entropies* the average decrease would be 0 by construction,
  so we measure it against the entropy of the mean distribution (then
  ``mean KL = H(p̄) - mean H``, the Jensen-Shannon identity);
* ``KL(p || p̄) = sum p log(p / p̄)``.

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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from steercf.concepts.mapping import (
    TOP_ITEMS,
    ItemActs,
    _tag_inputs,
    _tag_means,
    available_sources,
    concept_tags,
    tfidf,
    top_items,
)
from steercf.data import InteractionData, ItemTags
from steercf.data.rows import one_hot_items
from steercf.errors import InputError
from steercf.reporting import format_table

MODELS = ("sae", "dense", "random_rotation")
CONTROLS = ("dense", "random_rotation")
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


# ----------------------------------------------------------------------------------------
# Specificity
# ----------------------------------------------------------------------------------------
@dataclass(eq=False)
class Specificity:
    """Specificity of the rows of a non-negative matrix (see the module docstring).

    Attributes:
        entropy: (n_rows,) ``H(p_r)`` in nats; NaN for an all-zero row.
        decrease: (n_rows,) ``(H(p̄) - H(p_r)) / H(p̄)``; NaN for an all-zero row.
        kl: (n_rows,) ``KL(p_r || p̄)`` in nats; NaN for an all-zero row.
        background_entropy: ``H(p̄)``, ``p̄`` the mean of the non-zero rows' ``p_r``.
        n_outcomes: ``m``, the row length.
    """

    entropy: np.ndarray
    decrease: np.ndarray
    kl: np.ndarray
    background_entropy: float
    n_outcomes: int

    @property
    def kl_normalised(self) -> np.ndarray:
        """``KL / ln m``: comparable between distributions over different numbers of
        outcomes (0 when ``m`` = 1)."""
        return self.kl / math.log(self.n_outcomes) if self.n_outcomes > 1 else self.kl * 0


def specificity(rows: np.ndarray) -> Specificity:
    """Entropy, relative entropy decrease and KL from the mean of each row of ``rows``.

    Args:
        rows: (n_rows, m) non-negative; each non-zero row is normalised to sum 1.
    """
    rows = np.asarray(rows, dtype=np.float64)
    total = rows.sum(axis=1, keepdims=True)
    valid = total[:, 0] > 0
    p = np.divide(rows, total, out=np.zeros_like(rows), where=total > 0)
    nan = np.full(rows.shape[0], np.nan)
    if not valid.any():
        return Specificity(nan, nan.copy(), nan.copy(), float("nan"), rows.shape[1])
    background = p[valid].mean(axis=0)
    entropy = -_xlogy(p).sum(axis=1)
    h_background = float(-_xlogy(background[None, :]).sum())
    # KL only sums over p > 0, where p̄ > 0 too (p̄ averages the rows)
    log_ratio = np.log(np.divide(p, background, out=np.ones_like(p), where=p > 0))
    kl = (p * log_ratio).sum(axis=1)
    decrease = (
        (h_background - entropy) / h_background if h_background > 0 else np.zeros_like(entropy)
    )
    return Specificity(
        np.where(valid, entropy, np.nan),
        np.where(valid, decrease, np.nan),
        np.where(valid, kl, np.nan),
        h_background,
        rows.shape[1],
    )


def _xlogy(p: np.ndarray) -> np.ndarray:
    return p * np.log(np.where(p > 0, p, 1.0))


# ----------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------
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
        item_acts: (n_items, n_units) non-negative activations (see :func:`signed_split`
            for signed features).
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
    acts, counts, names = _tag_inputs(item_acts, item_tags, tag_names)
    if counts.shape[1] == 0:
        raise InputError(f"no concepts in source {source!r}: lower its minimum count")
    live = (acts > 0).sum(axis=0) >= min_items
    units = np.flatnonzero(live)
    if units.size == 0:
        raise InputError(f"model {model!r} has no unit active on >= {min_items} item(s)")
    means = _tag_means(acts[:, units], counts)  # (n_concepts, n_live)
    # latent direction: rows of tfidf(A^T), units as terms (the "best characterizes" matrix)
    characterizes = tfidf(means.T)  # (n_live, n_concepts)
    # concept direction: rows of tfidf(A), concepts as terms (the "most unique" matrix)
    unique = tfidf(means)  # (n_concepts, n_live)
    latents = specificity(characterizes)
    concepts = specificity(unique)

    label = characterizes.argmax(axis=1)
    label_score = characterizes[np.arange(units.size), label]
    has = (counts > 0).tocsc()
    tops = top_items(acts[:, units], k)
    valid = tops >= 0
    carries = np.zeros(tops.shape, dtype=bool)
    for j in range(counts.shape[1]):  # grouped by label: one column lookup per concept
        rows = np.flatnonzero(label == j)
        if rows.size:
            column = np.asarray(has[:, j].todense()).ravel()
            carries[rows] = column[np.where(valid[rows], tops[rows], 0)] & valid[rows]
    precision = carries.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    base_rate = np.asarray(has.sum(axis=0)).ravel()[label] / acts.shape[0]
    best_local = characterizes.argmax(axis=0)  # (n_concepts,) index into `units`
    best_unit = units[best_local]
    # the other way round: does the concept's best unit fire on the concept's items?
    best_precision = np.array(
        [
            np.asarray(has[:, c].todense()).ravel()[tops[b][valid[b]]].mean()
            if valid[b].any()
            else 0.0
            for c, b in enumerate(best_local)
        ]
    )

    # concepts c with label(best_unit(c)) == c: one-to-one concept <-> unit matches
    mutual = int((label[characterizes.argmax(axis=0)] == np.arange(counts.shape[1])).sum())
    specific = latents.decrease >= threshold
    covered = np.unique(label[specific])
    summary = {
        "latent_entropy_decrease_mean": float(np.nanmean(latents.decrease)),
        "latent_kl_mean": float(np.nanmean(latents.kl)),
        "concept_entropy_decrease_mean": float(np.nanmean(concepts.decrease)),
        "concept_kl_mean": float(np.nanmean(concepts.kl_normalised)),
        f"label_precision@{k}": float(precision.mean()),
        "distinct_best_latents": float(np.unique(best_unit).size),
        "labelled_concepts": float(np.unique(label).size),
        "coverage": float(covered.size / counts.shape[1]),
        # context, not records
        "mutual_best_pairs": float(mutual),
        f"best_latent_precision@{k}": float(best_precision.mean()),
        "label_base_rate": float(base_rate.mean()),
        "latent_kl_normalised_mean": float(np.nanmean(latents.kl_normalised)),
        "concept_kl_nats_mean": float(np.nanmean(concepts.kl)),
        "n_units": float(acts.shape[1]),
        "n_live": float(units.size),
        "n_concepts": float(counts.shape[1]),
    }
    if k != TOP_ITEMS:  # keep SUMMARY_METRICS' key stable for records
        summary[f"label_precision@{TOP_ITEMS}"] = summary[f"label_precision@{k}"]
        summary[f"best_latent_precision@{TOP_ITEMS}"] = summary[f"best_latent_precision@{k}"]
    return MonosemanticityReport(
        model=model,
        source=source,
        tag_names=names,
        units=units,
        n_units=acts.shape[1],
        latents=latents,
        concepts=concepts,
        unit_label=label,
        unit_label_score=label_score,
        unit_precision=precision,
        unit_base_rate=base_rate,
        unit_top_items=tops,
        unit_n_items=(acts[:, units] > 0).sum(axis=0),
        best_unit=best_unit,
        summary=summary,
        settings={"k": k, "threshold": threshold, "min_items": min_items},
    )


# ----------------------------------------------------------------------------------------
# Activations of the SAE and of the controls
# ----------------------------------------------------------------------------------------
def sae_item_activations(model: Any) -> np.ndarray:
    """``S``: (n_items, n_latents) SAE codes of every one-hot item row of a
    :class:`~steercf.models.spliced.SplicedRecommender`."""
    return model.item_codes().numpy()


def dense_item_embeddings(model: Any) -> np.ndarray:
    """(n_items, d) signed CFAE embeddings of every one-hot item row (of a spliced
    model's base, or of a CFAE itself)."""
    return model.user_vectors(one_hot_items(model.n_items_)).numpy()


def signed_split(features: ItemActs) -> np.ndarray:
    """(n, d) signed -> (n, 2d) non-negative: ``[max(x, 0), max(-x, 0)]``.

    Unit ``j`` is the positive half of dimension ``j`` and unit ``d + j`` its negative
    half; the pair is lossless (``x = pos - neg``), unlike ``abs``, which would merge a
    direction with its opposite.
    """
    x = features.detach().cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
    x = x.astype(np.float32)
    return np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=1)


def random_orthogonal(n: int, seed: int = 0) -> np.ndarray:
    """(n, n) Haar-random orthogonal matrix (QR of a Gaussian, signs fixed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


def random_rotation(item_acts: ItemActs, seed: int = 0) -> np.ndarray:
    """The random-rotation control: ``signed_split(S Q)`` with ``Q`` random orthogonal.

    Args:
        item_acts: (n_items, n_units) SAE codes.

    Returns:
        (n_items, 2 * n_units) non-negative.
    """
    acts = item_acts.detach().cpu().numpy() if torch.is_tensor(item_acts) else item_acts
    acts = np.asarray(acts, dtype=np.float32)
    return signed_split(acts @ random_orthogonal(acts.shape[1], seed).astype(np.float32))


def model_activations(model: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"sae", "dense", "random_rotation"}`` -> (n_items, n_units) activations of a
    spliced model and its two controls."""
    sae = sae_item_activations(model)
    return {
        "sae": sae,
        "dense": signed_split(dense_item_embeddings(model)),
        "random_rotation": random_rotation(sae, seed),
    }


def concepts_report(
    model: Any,
    data: InteractionData,
    sources: Sequence[str] | None = None,
    train_users: np.ndarray | None = None,
    controls: bool = True,
    seed: int = 0,
    min_count: dict[str, int] | None = None,
    **options: Any,
) -> list[MonosemanticityReport]:
    """Reports of a spliced model (and its controls) for each concept source of ``data``.

    Args:
        model: a fitted SplicedRecommender.
        data: the data set it was trained on (same item columns).
        sources: concept sources (default: all of ``data``'s, see
            :func:`~steercf.concepts.mapping.available_sources`).
        train_users: ``Split.train_users``, so that user tags come from training users only.
        controls: also measure the dense and random-rotation controls.
        min_count: per-source minimum concept counts (default ``DEFAULT_MIN_COUNT``).
        options: passed to :func:`monosemanticity_report` (k, threshold, min_items).

    Returns:
        One report per (source, model), sources outermost, models in :data:`MODELS` order.
    """
    acts = model_activations(model, seed) if controls else {"sae": sae_item_activations(model)}
    reports = []
    for source in sources or available_sources(data):
        tags = concept_tags(data, source, train_users, (min_count or {}).get(source))
        for name, item_acts in acts.items():
            reports.append(
                monosemanticity_report(item_acts, tags, model=name, source=source, **options)
            )
    return reports


# ----------------------------------------------------------------------------------------
# Text and plots
# ----------------------------------------------------------------------------------------
def format_report(
    report: MonosemanticityReport, top: int = 10, titles: Sequence[str] | None = None
) -> str:
    """A readable summary of one report: headline numbers, the most specific units with
    their labels (and top item titles when ``titles``, indexed by item, is given), and the
    concepts best and worst covered."""
    s = report.summary
    k = report.settings.get("k", TOP_ITEMS)
    lines = [
        f"{report.model} vs {report.source or 'concepts'}: {report.n_live} live of "
        f"{report.n_units} units, {report.n_concepts} concepts",
        f"  latents -> concepts: entropy decrease {s['latent_entropy_decrease_mean']:.3f}, "
        f"KL {s['latent_kl_mean']:.3f} nats (background entropy "
        f"{report.latents.background_entropy:.3f})",
        f"  concepts -> latents: entropy decrease {s['concept_entropy_decrease_mean']:.3f}, "
        f"KL/ln(units) {s['concept_kl_mean']:.3f} ({s['concept_kl_nats_mean']:.3f} nats)",
        f"  label precision@{k} {s[f'label_precision@{k}']:.3f} (chance "
        f"{s['label_base_rate']:.3f}); distinct best latents "
        f"{int(s['distinct_best_latents'])}; labelled concepts {int(s['labelled_concepts'])}; "
        f"coverage {s['coverage']:.3f} (decrease >= {report.settings.get('threshold')})",
        f"  concept -> best latent: precision@{k} {s[f'best_latent_precision@{k}']:.3f}; "
        f"mutual best pairs {int(s['mutual_best_pairs'])}",
    ]
    if top > 0:
        # units active on one or two items are trivially specific; show well-supported ones
        supported = report.unit_n_items >= k
        if not supported.any():
            supported = np.ones(report.n_live, dtype=bool)
        decrease = np.where(supported, np.nan_to_num(report.latents.decrease, nan=-1.0), -np.inf)
        order = np.argsort(-decrease, kind="stable")[: min(top, int(supported.sum()))]
        rows = []
        for j in order:
            row = {
                "latent": int(report.units[j]),
                "items": int(report.unit_n_items[j]),
                "label": str(report.tag_names[report.unit_label[j]]),
                "decrease": float(report.latents.decrease[j]),
                "kl": float(report.latents.kl[j]),
                f"p@{k}": float(report.unit_precision[j]),
            }
            if titles is not None:
                items = [i for i in report.unit_top_items[j][:3] if i >= 0]
                row["top items"] = "; ".join(_short(titles[i]) for i in items)
            rows.append(row)
        lines += ["", f"most specific latents (active on >= {k} items):", format_table(rows)]
        concept_order = np.argsort(
            -np.nan_to_num(report.concepts.decrease, nan=-np.inf), kind="stable"
        )
        concept_rows = [
            {
                "concept": str(report.tag_names[c]),
                "best latent": int(report.best_unit[c]),
                "decrease": float(report.concepts.decrease[c]),
                "kl/ln(units)": float(report.concepts.kl_normalised[c]),
            }
            for c in concept_order[:top]
        ]
        lines += ["", "most specific concepts:", format_table(concept_rows)]
    return "\n".join(lines)


def format_reports(
    reports: Sequence[MonosemanticityReport],
    titles: Sequence[str] | None = None,
    top: int = 10,
    models: Sequence[str] = ("sae",),
) -> str:
    """What ``steercf concepts`` prints: the model-vs-controls comparison table (when
    there are controls), then :func:`format_report` of each report of ``models``."""
    parts = []
    if len({r.model for r in reports}) > 1:
        parts += [
            "SAE vs controls (higher is better; margin = sae - best control):",
            format_comparison(reports),
        ]
    parts += [format_report(r, top=top, titles=titles) for r in reports if r.model in models]
    return "\n\n".join(parts)


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def comparison_rows(reports: Sequence[MonosemanticityReport]) -> list[dict[str, Any]]:
    """One row per (source, metric): the value of each model and the SAE's margin over the
    best control (``sae - max(controls)``; positive = the SAE wins)."""
    by_source: dict[str, dict[str, MonosemanticityReport]] = {}
    for report in reports:
        by_source.setdefault(report.source, {})[report.model] = report
    rows = []
    for source, models in by_source.items():
        for key, (metric, setting) in (SUMMARY_METRICS | DIAGNOSTIC_METRICS).items():
            row: dict[str, Any] = {
                "source": source,
                "metric": metric + (f" ({setting})" if setting else ""),
            }
            for name, report in models.items():
                row[name] = float(report.summary[key])
            controls = [row[c] for c in CONTROLS if c in row]
            if "sae" in row and controls:
                row["margin"] = row["sae"] - max(controls)
            rows.append(row)
    return rows


def format_comparison(reports: Sequence[MonosemanticityReport]) -> str:
    """:func:`comparison_rows` as a text table."""
    return format_table(comparison_rows(reports))


def plot_reports(
    reports: Sequence[MonosemanticityReport], path: str | Path, title: str = ""
) -> Path:
    """Histograms of the per-latent and per-concept measures, one colour per model and
    one row of panels per concept source; written to ``path`` (PNG)."""
    # The Agg canvas directly: no display needed and no global pyplot state, so an
    # inline notebook backend keeps working afterwards.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sources = list(dict.fromkeys(r.source for r in reports))
    panels = [
        ("latent entropy decrease", lambda r: r.latents.decrease),
        ("latent KL (nats)", lambda r: r.latents.kl),
        ("concept entropy decrease", lambda r: r.concepts.decrease),
        (f"label precision@{TOP_ITEMS}", lambda r: r.unit_precision),
    ]
    fig = Figure(figsize=(4 * len(panels), 3 * len(sources)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(sources), len(panels), squeeze=False)
    for row, source in enumerate(sources):
        for col, (label, values_of) in enumerate(panels):
            ax = axes[row, col]
            chosen = [r for r in reports if r.source == source]
            values = [np.asarray(values_of(r), dtype=float) for r in chosen]
            values = [v[np.isfinite(v)] for v in values]
            # shared bins, and shares rather than counts: the models have different
            # numbers of units
            bins = np.histogram_bin_edges(np.concatenate(values), bins=30)
            for report, v in zip(chosen, values, strict=True):
                weights = np.full(v.shape, 1.0 / max(v.size, 1))
                ax.hist(v, bins=bins, weights=weights, histtype="step", lw=1.5, label=report.model)
            ax.set_ylabel("share of concepts" if label.startswith("concept") else "share of units")
            ax.set_title(f"{source}: {label}", fontsize=9)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path
