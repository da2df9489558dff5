"""The files of a scoring run: the manifest that records its config, atomically written
Parquet part files, and :func:`read_scores` to read a run back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from steercf.errors import InputError

__all__ = ["FORMAT", "MANIFEST", "USERS_KEY", "VERSION", "read_scores"]

FORMAT = "steercf-scores"
VERSION = 1
MANIFEST = "manifest.json"
USERS_KEY = "steercf_users"  # Parquet metadata: users a part file covers


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - pyarrow is in the scoring extra
        raise ImportError(
            'batch scoring writes Parquet with pyarrow: pip install "steercf[scoring]"'
        ) from err
    return pa, pq


def _json(value: Any) -> Any:
    """``value`` as JSON would read it back (tuples -> lists), for comparisons."""
    return json.loads(json.dumps(value))


def _prepare(out: Path, config: dict[str, Any], n_chunks: int, overwrite: bool) -> None:
    """Create ``out`` with a manifest, or check an earlier run's manifest (rank 0 only)."""
    manifest = out / MANIFEST
    if overwrite and out.exists():
        for path in list(out.glob("part-*.parquet")) + list(out.glob(".part-*")) + [manifest]:
            path.unlink(missing_ok=True)
    if manifest.exists():
        _check_manifest(out, config)
    elif out.exists() and any(out.glob("part-*.parquet")):
        raise InputError(f"{out} holds part files but no {MANIFEST}; pass overwrite or a new path")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".part-*"):  # temporary files of an interrupted write
        stale.unlink(missing_ok=True)
    _write_manifest(out, config, n_chunks, complete=False)


def _check_manifest(out: Path, config: dict[str, Any]) -> None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        format_, version, stored = manifest["format"], manifest["version"], manifest["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{out / MANIFEST} is unreadable: {err}") from err
    if format_ != FORMAT or version != VERSION:
        raise InputError(f"{out} holds {format_} version {version}, not {FORMAT} version {VERSION}")
    differs = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
    if differs:
        raise InputError(
            f"{out} holds a scoring run with another config ({', '.join(differs)} differ); "
            "resume with the same settings, pass overwrite, or choose another directory"
        )


def _write_manifest(
    out: Path, config: dict[str, Any], n_chunks: int, complete: bool, rows: int | None = None
) -> None:
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "n_chunks": n_chunks,
        "columns": ["user", "rank", "item", "score"],
        "complete": complete,
        "rows": rows,
    }
    tmp = out / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)


def _write_atomically(pq: Any, table: Any, path: Path) -> None:
    """Write ``table`` to a temporary file, flush it to disk, then rename: a file under
    its final name is always whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _complete(pq: Any, path: Path, expected_users: int) -> bool:
    """A part file under its final name that covers the expected number of users."""
    if not path.exists():
        return False
    try:
        metadata = pq.ParquetFile(path).schema_arrow.metadata or {}
        return metadata.get(USERS_KEY.encode()) == str(expected_users).encode()
    except Exception:  # an unreadable file is rescored (pyarrow raises several kinds)
        return False


def read_scores(out: str | os.PathLike, require_complete: bool = True):
    """All part files of a scoring run as one pandas DataFrame (user, rank, item,
    score), in user order.

    Raises:
        InputError: no manifest, or (with ``require_complete``) an unfinished run.
    """
    pa, pq = _pyarrow()
    out = Path(out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{out} is not a scoring output ({MANIFEST}: {err})") from err
    if require_complete and not manifest.get("complete"):
        raise InputError(f"{out}: the scoring run is not complete; rerun it to resume")
    parts = sorted(out.glob("part-*.parquet"))
    if not parts:
        return pa.table({c: [] for c in manifest["columns"]}).to_pandas()
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pandas()
