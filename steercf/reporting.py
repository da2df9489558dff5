"""Plain-text tables and flat JSON records for the CLI and the benchmarks."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render dicts as an aligned text table (floats with 4 decimals)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return "" if value is None else str(value)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
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
