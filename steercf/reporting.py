"""Plain-text tables and flat JSON records for the CLI and the benchmarks."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of every steercf command (the recommender's, ``steercf text``'s and
    ``serve``'s): each option's default, except where it says nothing (None, an empty
    list, a flag's False, a required option's: the help says what happens then), and the
    description's paragraphs kept."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or isinstance(default, bool) or default == [] or action.required:
            return action.help or ""
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            super(HelpFormatter, self)._fill_text(part, width, indent)
            for part in text.split("\n\n")
        )


LIST_SEPARATOR = " | "  # list cells (e.g. latent labels, which hold commas themselves)
_SPACE = re.compile(r"\s+")


def one_line(text: Any, width: int | None = None) -> str:
    """``text`` as one line: runs of whitespace (newlines, tabs) become one space, and
    text longer than ``width`` characters is cut to ``width`` with a trailing "…"."""
    line = _SPACE.sub(" ", str(text)).strip()
    if width is not None and len(line) > width:
        return line[: max(width - 1, 0)].rstrip() + "…"
    return line


def cell_text(value: Any) -> str:
    """One table cell: floats with 4 decimals, None empty, a list or tuple as its items
    joined by :data:`LIST_SEPARATOR`, everything else ``str``."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return LIST_SEPARATOR.join(cell_text(v) for v in value)
    return "" if value is None else str(value)


def format_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    max_width: int | None = None,
) -> str:
    """Render dicts as an aligned text table, one line per row: the one table formatter
    of the CLI and the benchmarks.

    Cells go through :func:`cell_text` (floats with 4 decimals, lists joined by " | ")
    and :func:`one_line` (newlines and tabs inside a value, e.g. a document, collapse
    to spaces; cells longer than ``max_width`` characters end in "…").
    """
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    body = [[one_line(cell_text(row.get(c)), max_width) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join(
        [line, rule] + ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in body]
    )


def write_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write benchmark records (flat dicts with dataset, model, metric, value, ...) as a
    JSON list, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = list(records)
    for record in records:
        missing = {"dataset", "model", "metric", "value"} - set(record)
        if missing:
            raise ValueError(f"benchmark record {record} lacks {sorted(missing)}")
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(records, tmp, indent=1)
    os.replace(tmp.name, path)
    return path


def mean_over_seeds(
    records: Sequence[dict[str, Any]], by: Sequence[str], metrics: Sequence[str], sd: bool = False
) -> list[dict[str, Any]]:
    """One table row per distinct ``by`` key: the mean (and with ``sd`` the standard
    deviation) of each metric's ``value`` over the records (seeds) that share the key."""
    keys = list(dict.fromkeys(tuple(r[k] for k in by) for r in records))
    rows = []
    for key in keys:
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        for metric in metrics:
            values = [
                r["value"]
                for r in records
                if r["metric"] == metric and tuple(r[k] for k in by) == key
            ]
            row[metric] = float(np.mean(values)) if values else float("nan")
            if sd:
                row[f"{metric} sd"] = (
                    float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
                )
        rows.append(row)
    return rows
