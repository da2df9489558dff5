"""Text and plots of monosemanticity reports: what ``steercf concepts`` prints and draws.

:func:`format_report` summarises one report, :func:`comparison_rows` /
:func:`format_comparison` set the SAE against its controls metric by metric, and
:func:`plot_reports` draws histograms of the per-unit and per-concept measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steercf.concepts.arrays import TOP_ITEMS
from steercf.concepts.controls import CONTROLS
from steercf.concepts.monosemanticity import (
    DIAGNOSTIC_METRICS,
    SUMMARY_METRICS,
    MonosemanticityReport,
)
from steercf.reporting import format_table, one_line


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
                row["top items"] = "; ".join(one_line(titles[i], 32) for i in items)
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


def _new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas directly: no display needed and no global
    pyplot state, so an inline notebook backend keeps working afterwards."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: str | Path, title: str, bottom: float = 0.0) -> Path:
    """Title, lay out (the bottom ``bottom`` share of the figure left free, e.g. for a
    legend) and write ``fig`` to ``path`` (PNG), creating its folder."""
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def plot_reports(
    reports: Sequence[MonosemanticityReport], path: str | Path, title: str = ""
) -> Path:
    """Histograms of the per-latent and per-concept measures, one colour per model and
    one row of panels per concept source; written to ``path`` (PNG)."""
    sources = list(dict.fromkeys(r.source for r in reports))
    panels = [
        ("latent entropy decrease", lambda r: r.latents.decrease),
        ("latent KL (nats)", lambda r: r.latents.kl),
        ("concept entropy decrease", lambda r: r.concepts.decrease),
        (f"label precision@{TOP_ITEMS}", lambda r: r.unit_precision),
    ]
    fig = _new_figure(4 * len(panels), 3 * len(sources))
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
    return _save_figure(fig, path, title)


def plot_label_curves(
    curves: dict[tuple[str, str, str], list[dict[str, float]]],
    path: str | Path,
    target_precision: float | None = None,
    title: str = "",
) -> Path:
    """Coverage (share of live units labelled) against held-out label precision@10, one
    panel per concept source, one line per (model, labeller); from
    :func:`steercf.concepts.evidence.held_out_curves`. Written to ``path`` (PNG).

    Args:
        curves: ``{(source, model, labeller): curve points}``; a labeller named
            ``"NAME,one_hot"`` (read on one-hot item codes) is drawn dotted.
        target_precision: drawn as a dotted line (the evidence labeller's target).
    """
    sources = list(dict.fromkeys(source for source, _, _ in curves))
    fig = _new_figure(4.5 * len(sources), 4.4)
    axes = fig.subplots(1, len(sources), squeeze=False)[0]
    styles = {"evidence": "-", "best_characterizes": "--", "evidence_pvalue": "-."}
    models = list(dict.fromkeys(model for _, model, _ in curves))
    colours = {model: f"C{i}" for i, model in enumerate(models)}  # one colour per model
    for ax, source in zip(axes, sources, strict=True):
        for (s, model, labeller), points in curves.items():
            if s != source:
                continue
            shown = [p for p in points if p["n_labelled"] > 0]
            key = f"precision@{TOP_ITEMS}"
            ax.plot(
                [p["coverage"] for p in shown],
                [p[key] for p in shown],
                ":" if labeller.endswith(",one_hot") else styles.get(labeller.split(",")[0], ":"),
                color=colours[model],
                marker=".",
                label=f"{model} / {labeller}",
            )
        if target_precision is not None:
            ax.axhline(target_precision, color="grey", ls=":", lw=1)
        ax.set_xlabel("coverage (share of live units labelled)")
        ax.set_ylabel(f"held-out label precision@{TOP_ITEMS}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(source, fontsize=9)
    handles, names = axes[0].get_legend_handles_labels()
    legend_rows = (len(names) + 2) // 3
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7, frameon=False)
    return _save_figure(fig, path, title, bottom=min(0.5, 0.045 * legend_rows + 0.02))
