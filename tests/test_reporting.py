"""Benchmark records and tables."""

from __future__ import annotations

import json
import math

import pytest

from steercf.reporting import format_table, mean_over_seeds, write_records


def test_mean_over_seeds_groups_by_key_and_metric():
    records = [
        {"dataset": "a", "model": "m", "metric": "recall@20", "value": v, "seed": s}
        for s, v in enumerate([0.2, 0.4])
    ] + [{"dataset": "a", "model": "n", "metric": "recall@20", "value": 0.5, "seed": 0}]
    rows = mean_over_seeds(records, ("dataset", "model"), ("recall@20",), sd=True)
    assert rows[0]["model"] == "m" and rows[0]["recall@20"] == pytest.approx(0.3)
    assert rows[0]["recall@20 sd"] == pytest.approx(0.1414, abs=1e-4)
    assert math.isnan(rows[1]["recall@20 sd"])  # one seed: no spread
    assert "0.3000" in format_table(rows)


def test_write_records_is_atomic_and_checks_keys(tmp_path):
    path = write_records(
        tmp_path / "r.json", [{"dataset": "d", "model": "m", "metric": "x", "value": 1}]
    )
    assert json.loads(path.read_text())[0]["value"] == 1
    with pytest.raises(ValueError, match="lacks"):
        write_records(tmp_path / "r.json", [{"dataset": "d", "value": 1}])
    assert json.loads(path.read_text())[0]["value"] == 1  # the good file survived
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
