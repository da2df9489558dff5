"""The files of a scoring run: the manifest that records its config and, for each
finished chunk, its part file's row count and checksum; atomically written Parquet part
files; and :func:`read_scores` to read a run back.

Manifest (``manifest.json``, version 2)::

    {"format": "steercf-scores", "version": 2, "config": {...}, "n_chunks": 3,
     "columns": ["user", "rank", "item", "score"], "complete": true, "rows": 2100,
     "parts": [{"file": "part-00000.parquet", "users": 100, "rows": 700,
                "bytes": 9120, "sha256": "..."}, null, ...]}

``parts[c]`` is null until chunk ``c``'s file is in place. Only the files the manifest
lists are ever read, and each is checked against its size and SHA-256 first, so a
missing, extra, swapped or damaged file is an error (or, for an extra file, a warning),
never silently fewer or more rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steercf.errors import InputError

__all__ = ["FORMAT", "MANIFEST", "USERS_KEY", "VERSION", "read_scores"]

FORMAT = "steercf-scores"
VERSION = 2
MANIFEST = "manifest.json"
USERS_KEY = "steercf_users"  # Parquet metadata: users a part file covers
COLUMNS = ["user", "rank", "item", "score"]
_LOCK = ".manifest.lock"
_RECORD_KEYS = {"file": str, "users": int, "rows": int, "bytes": int, "sha256": str}
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def part_name(chunk: int, n_chunks: int) -> str:
    """File name of ``chunk``'s part, zero-padded so that part files sort in user order."""
    width = max(5, len(str(n_chunks - 1)))
    return f"part-{chunk:0{width}d}.parquet"


# ---- durable writes (every change on disk goes through these two) ------------------------


def _write_durably(path: Path, data: Any) -> None:
    """Write the bytes ``data`` to ``path`` and flush them to disk."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` (atomic) and make the rename itself durable."""
    os.replace(source, target)
    _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its renames need no fsync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: Any) -> None:
    """Write ``data`` to a temporary file, flush it, then rename it to ``path``: a file
    under its final name is always whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_durably(tmp, data)
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _manifest_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out``'s manifest for a read-modify-write: the
    processes of a data-parallel run record their parts in the one manifest. The OS
    drops the lock when a process dies, so a killed run never leaves it held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: a lost record is only rescored
        yield
        return
    with open(out / _LOCK, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---- the manifest -------------------------------------------------------------------------


def _new_manifest(config: dict[str, Any], n_chunks: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "n_chunks": n_chunks,
        "columns": COLUMNS,
        "complete": False,
        "rows": None,
        "parts": [None] * n_chunks,
    }


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    _write_atomically(out / MANIFEST, json.dumps(manifest, indent=1).encode())


def _read_manifest(out: Path) -> dict[str, Any]:
    """The manifest of ``out``, checked field by field.

    A version-1 manifest (written before parts were recorded) comes back with no part
    recorded and ``"legacy": True``: its files cannot be verified.

    Raises:
        InputError: no manifest, or one that is unreadable or malformed (naming what).
    """
    path = out / MANIFEST
    if not path.is_file():
        raise InputError(f"{out} is not a scoring output (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise InputError(f"{path} is unreadable: {err}") from err
    if not isinstance(manifest, dict):
        raise InputError(f"{path} is malformed: not a JSON object")
    format_, version = manifest.get("format"), manifest.get("version")
    if format_ != FORMAT or version not in (1, VERSION):
        raise InputError(f"{out} holds {format_} version {version}, not {FORMAT} version {VERSION}")
    config, n_chunks = manifest.get("config"), manifest.get("n_chunks")
    if not isinstance(config, dict):
        raise InputError(f"{path} is malformed: 'config' is not an object")
    if type(n_chunks) is not int or n_chunks < 0:
        raise InputError(f"{path} is malformed: 'n_chunks' is not a count")
    if version == 1:
        return {**_new_manifest(config, n_chunks), "legacy": True}
    parts = manifest.get("parts")
    if not isinstance(parts, list) or len(parts) != n_chunks:
        raise InputError(f"{path} is malformed: 'parts' is not a list of {n_chunks} entries")
    for chunk, record in enumerate(parts):
        if record is not None:
            _check_record(path, chunk, n_chunks, record)
    if not isinstance(manifest.get("complete"), bool):
        raise InputError(f"{path} is malformed: 'complete' is not true or false")
    return manifest


def _check_record(path: Path, chunk: int, n_chunks: int, record: Any) -> None:
    """Raise InputError unless ``record`` is a well-formed entry for ``chunk``; its file
    name must be the chunk's own (a manifest cannot point outside its directory)."""
    where = f"{path} is malformed: parts[{chunk}]"
    if not isinstance(record, dict) or set(record) != set(_RECORD_KEYS):
        raise InputError(f"{where} needs exactly the keys {', '.join(_RECORD_KEYS)}")
    for key, kind in _RECORD_KEYS.items():
        value = record[key]
        if type(value) is not kind or (kind is int and value < 0):
            raise InputError(f"{where}: {key!r} is {value!r}")
    if record["file"] != part_name(chunk, n_chunks):
        raise InputError(f"{where} names {record['file']!r}, not {part_name(chunk, n_chunks)!r}")
    if not _SHA256.fullmatch(record["sha256"]):
        raise InputError(f"{where}: 'sha256' is not a SHA-256 hex digest")


def _check_config(out: Path, manifest: dict[str, Any], config: dict[str, Any]) -> None:
    stored = manifest["config"]
    differs = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
    if differs:
        raise InputError(
            f"{out} holds a scoring run with another config ({', '.join(differs)} differ); "
            "resume with the same settings, pass overwrite, or choose another directory"
        )


def _check_manifest(out: Path, config: dict[str, Any]) -> None:
    """Raise InputError unless ``out`` holds a manifest of a run with ``config``."""
    _check_config(out, _read_manifest(out), config)


def _prepare(out: Path, config: dict[str, Any], n_chunks: int, overwrite: bool) -> None:
    """Create ``out`` with a manifest, or check an earlier run's manifest (rank 0 only).

    An earlier run's recorded parts are kept (a rerun verifies them); temporary files
    of an interrupted write are removed."""
    manifest = out / MANIFEST
    if overwrite and out.exists():
        for path in list(out.glob("part-*.parquet")) + list(out.glob(".part-*")) + [manifest]:
            check_part_path(path)  # overwrite replaces files, never a user's directory
            path.unlink(missing_ok=True)
    if manifest.exists():
        existing = _read_manifest(out)
        _check_config(out, existing, config)
        if existing["n_chunks"] != n_chunks:
            raise InputError(
                f"{manifest} records {existing['n_chunks']} chunks, this run has {n_chunks}"
            )
    elif out.exists() and any(out.glob("part-*.parquet")):
        raise InputError(f"{out} holds part files but no {MANIFEST}; pass overwrite or a new path")
    else:
        existing = None
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".part-*"), *out.glob(f".{MANIFEST}.tmp-*")]:
        stale.unlink(missing_ok=True)
    if existing is None or existing.get("legacy"):
        # a version-1 run has no checksums: every part is scored again
        _write_manifest(out, _new_manifest(config, n_chunks))


def _update_parts(out: Path, config: dict[str, Any], records: dict[int, Any]) -> None:
    """Set ``parts[c] = records[c]`` in the manifest (None forgets a part, and the run
    is then no longer complete), under the manifest lock."""
    with _manifest_lock(out):
        manifest = _read_manifest(out)
        _check_config(out, manifest, config)  # another run may have replaced this one
        for chunk, record in records.items():
            manifest["parts"][chunk] = record
            if record is None:
                manifest["complete"], manifest["rows"] = False, None
        _write_manifest(out, manifest)


def _recorded_parts(out: Path) -> list[dict[str, Any] | None]:
    return _read_manifest(out)["parts"]


def _finish(out: Path, config: dict[str, Any]) -> int:
    """Mark the run complete once every chunk's part is recorded and in place (rank 0).

    Returns:
        The run's total row count.
    """
    with _manifest_lock(out):
        manifest = _read_manifest(out)
        _check_config(out, manifest, config)
        parts = manifest["parts"]
        missing = [c for c, record in enumerate(parts) if record is None]
        missing += [
            c
            for c, record in enumerate(parts)
            if record is not None and _size(out / record["file"]) != record["bytes"]
        ]
        if missing:
            raise InputError(f"{out}: chunks {sorted(missing)[:10]} are missing after scoring")
        manifest["complete"] = True
        manifest["rows"] = sum(record["rows"] for record in parts)
        _write_manifest(out, manifest)
        return manifest["rows"]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# ---- part files ---------------------------------------------------------------------------


def _write_part(pa: Any, pq: Any, table: Any, path: Path, users: int) -> dict[str, Any]:
    """Write ``table`` (the part of a chunk of ``users`` users) atomically to ``path``.

    Returns:
        The part's manifest record: file name, users, rows, bytes and SHA-256.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue()  # hashed exactly as written
    _write_atomically(path, data)
    return {
        "file": path.name,
        "users": users,
        "rows": table.num_rows,
        "bytes": data.size,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def check_part_path(path: Path) -> None:
    """InputError when ``path``, where a part file goes, is something steercf did not
    write there (a directory, a link, a device): a rerun must not replace or delete it."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        what = "a directory" if path.is_dir() and not path.is_symlink() else "not a regular file"
        raise InputError(
            f"{path} is {what}, not a part file of this scoring run; steercf will not "
            "replace it: move it away (or choose another output directory) and rerun"
        )


def _part_problem(out: Path, record: dict[str, Any]) -> str | None:
    """Why the part file of ``record`` fails the checks :func:`read_scores` makes (the
    same function), or None when it passes: a rerun rescores exactly what a read refuses."""
    pa, pq = _pyarrow()
    return _verify_part(pa, pq, out, record)[1]


def _read_checked(out: Path, record: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """``(bytes, None)`` of the part file of ``record`` if its size and SHA-256 match
    the manifest, else ``(None, what is wrong)``."""
    path = out / record["file"]
    check_part_path(path)
    size = _size(path)
    if size is None:
        return None, "is missing"
    if size != record["bytes"]:
        return None, f"has {size} bytes, not the {record['bytes']} recorded (altered or damaged)"
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, f"cannot be read ({err})"
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        return None, "does not match its recorded SHA-256 (altered or damaged)"
    return data, None


def _verify_part(pa: Any, pq: Any, out: Path, record: dict[str, Any]) -> tuple[Any, str | None]:
    """``(table, None)`` when the part file of ``record`` matches every field of its
    manifest record (size, SHA-256, rows, users) and has the right columns, else
    ``(None, what is wrong)``. The one verification of reads and reruns alike."""
    data, problem = _read_checked(out, record)
    if problem is not None:
        return None, problem
    try:
        table = pq.ParquetFile(pa.BufferReader(data)).read()
        users = (table.schema.metadata or {}).get(USERS_KEY.encode())
    except Exception as err:  # pyarrow raises several kinds on a bad file
        return None, f"is not a readable Parquet file: {err}"
    if table.num_rows != record["rows"] or users != str(record["users"]).encode():
        return None, (
            f"does not hold the rows and users {MANIFEST} records for it ({table.num_rows} "
            f"rows, {MANIFEST} says {record['rows']})"
        )
    if table.column_names != COLUMNS:
        return None, f"has columns {table.column_names}, not {COLUMNS}"
    return table, None


def _read_part(pa: Any, pq: Any, out: Path, record: dict[str, Any]) -> Any:
    """The verified table of one recorded part file (raises InputError naming it)."""
    table, problem = _verify_part(pa, pq, out, record)
    if problem is not None:
        raise InputError(
            f"{out / record['file']} {problem}: it is listed in {MANIFEST}; rerun the same "
            "scoring command to score it again"
        )
    return table


def _warn_strays(out: Path, listed: set[str]) -> None:
    """Warn about part-like files the manifest does not list (they are never read)."""
    strays = sorted(p.name for p in out.glob("part-*") if p.name not in listed)
    if strays:
        shown = ", ".join(strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
        warnings.warn(
            f"{out}: ignoring {shown}: not listed in {MANIFEST}", UserWarning, stacklevel=3
        )


def read_scores(out: str | os.PathLike, require_complete: bool = True):
    """The rows of a scoring run as one pandas DataFrame (user, rank, item, score), in
    user order.

    Only the part files that ``manifest.json`` lists are read, each checked against its
    recorded size, SHA-256, row and user counts first. Files the manifest does not list
    are ignored with a warning.

    Args:
        out: the run's output directory.
        require_complete: refuse an unfinished run; with False, the chunks finished so
            far (each still verified).

    Returns:
        DataFrame of (rows,) columns user, rank, item, score.

    Raises:
        InputError: no manifest or a malformed one; (with ``require_complete``) an
            unfinished run; a listed part file that is missing, altered or damaged.
    """
    pa, pq = _pyarrow()
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest.get("legacy"):
        raise InputError(
            f"{out} was written by an older steercf without part checksums, so its files "
            "cannot be verified; rerun the same scoring command to score and record them"
        )
    parts = manifest["parts"]
    if require_complete and not (manifest["complete"] and all(r is not None for r in parts)):
        raise InputError(f"{out}: the scoring run is not complete; rerun it to resume")
    records = [record for record in parts if record is not None]
    _warn_strays(out, {record["file"] for record in records})
    if not records:
        return pa.table({c: [] for c in COLUMNS}).to_pandas()
    return pa.concat_tables([_read_part(pa, pq, out, record) for record in records]).to_pandas()
