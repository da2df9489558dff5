"""Streaming batch scoring: top-N (optionally steered) for every user of a large matrix.

Users are cut into chunks of ``chunk_users`` consecutive rows; each chunk is read, scored
in batches of ``batch_users`` and written as one Parquet file, so memory is bounded by
one chunk's rows and one batch's (batch x items) scores, whatever the number of users.
Rows can come from an in-memory CSR matrix or from a :class:`CSRDirSource` on disk, which
reads only the chunk asked for.

Output directory::

    manifest.json          format, version, the run's config, and "complete" at the end
    part-00000.parquet     users [0, chunk_users): columns user, rank, item, score
    part-00001.parquet     ...

Resuming: a part file is written to a temporary name and renamed into place, so a file
under its final name is always complete (its row count is checked too). A rerun with the
same config skips finished chunks and scores only the rest: no user is lost or written
twice. A rerun whose config differs (model weights, data, N, knobs, chunking, ...)
is refused instead of mixing two runs in one directory.

Example::

    from steercf.scoring import score_users, read_scores

    report = score_users(model, data.matrix, "runs/scores", N=20,
                         user_ids=data.user_ids, item_ids=data.item_ids)
    frame = read_scores("runs/scores")   # pandas: user, rank, item, score
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from steercf.distributed import Collective
from steercf.errors import InputError
from steercf.io import ids_fingerprint
from steercf.models.base import Recommender, as_user_rows
from steercf.steering import SCORE_PRECISIONS, Knob, recommend_rows, require_steerable

FORMAT = "steercf-scores"
VERSION = 1
MANIFEST = "manifest.json"
USERS_KEY = "steercf_users"  # Parquet metadata: users a part file covers


# ---- row sources ---------------------------------------------------------------------------


class RowSource(Protocol):
    """Rows of a (n_rows, n_items) interaction matrix, read a range at a time."""

    shape: tuple[int, int]

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        """(stop - start, n_items) float32 CSR of rows [start, stop)."""
        ...

    def fingerprint(self) -> str:
        """Content hash of the whole matrix (ties a scoring run to its input)."""
        ...


class MatrixSource:
    """A :class:`RowSource` over an in-memory (n_rows, n_items) CSR matrix."""

    def __init__(self, matrix: sp.spmatrix) -> None:
        self.matrix = sp.csr_matrix(matrix, dtype=np.float32)
        self.shape = self.matrix.shape

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        return self.matrix[start:stop]

    def fingerprint(self) -> str:
        m = self.matrix
        return _csr_fingerprint(
            self.shape, len(m.indptr), m.nnz, lambda name, a, b: getattr(m, name)[a:b]
        )


_CSR_FILES = ("indptr.npy", "indices.npy", "data.npy")


def save_csr_dir(matrix: sp.spmatrix, path: str | os.PathLike) -> Path:
    """Write (n_rows, n_items) CSR as ``indptr.npy`` (int64), ``indices.npy`` (int32),
    ``data.npy`` (float32) and ``shape.json`` for :class:`CSRDirSource`."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays = (matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32), matrix.data)
    for name, array in zip(_CSR_FILES, arrays, strict=True):
        np.save(path / name, array, allow_pickle=False)
    (path / "shape.json").write_text(json.dumps({"shape": list(matrix.shape)}))
    return path


class CSRDirSource:
    """A :class:`RowSource` over a directory written by :func:`save_csr_dir`.

    Each read seeks to the rows asked for and reads only them (no memory map, whose
    touched pages would stay resident and grow with the rows read).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.shape = tuple(json.loads((self.path / "shape.json").read_text())["shape"])
            self._layout = {name: _npy_layout(self.path / name) for name in _CSR_FILES}
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{self.path} is not a CSR directory (save_csr_dir): {err}") from err
        if self._layout["indptr.npy"][1] != self.shape[0] + 1:
            raise InputError(f"{self.path}: indptr length does not match shape {self.shape}")

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        indptr = _read_npy_range(
            self.path / "indptr.npy", self._layout["indptr.npy"], start, stop + 1
        )
        begin, end = int(indptr[0]), int(indptr[-1])
        indices = _read_npy_range(
            self.path / "indices.npy", self._layout["indices.npy"], begin, end
        )
        data = _read_npy_range(self.path / "data.npy", self._layout["data.npy"], begin, end)
        return sp.csr_matrix(
            (data.astype(np.float32, copy=False), indices, indptr - begin),
            shape=(stop - start, self.shape[1]),
        )

    def fingerprint(self) -> str:
        def read(name: str, start: int, stop: int) -> np.ndarray:
            file = f"{name}.npy"
            return _read_npy_range(self.path / file, self._layout[file], start, stop)

        nnz = self._layout["indices.npy"][1]
        return _csr_fingerprint(self.shape, self.shape[0] + 1, nnz, read)


def _csr_fingerprint(
    shape: tuple[int, ...],
    n_indptr: int,
    nnz: int,
    read: Callable[[str, int, int], np.ndarray],
    block: int = 1 << 20,
) -> str:
    """Hash of a CSR matrix's shape, indptr (int64), indices (int32) and data (float32),
    read ``block`` entries at a time, so any source of the same matrix hashes alike
    within bounded memory."""
    digest = hashlib.sha1(repr(tuple(shape)).encode())
    for name, length, dtype in (
        ("indptr", n_indptr, np.int64),
        ("indices", nnz, np.int32),
        ("data", nnz, np.float32),
    ):
        for start in range(0, length, block):
            part = read(name, start, min(length, start + block))
            digest.update(np.ascontiguousarray(part, dtype=dtype).data)
    return digest.hexdigest()[:16]


def _npy_layout(path: Path) -> tuple[np.dtype, int, int]:
    """``(dtype, length, data offset)`` of a 1-D ``.npy`` file."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        if len(shape) != 1 or dtype.hasobject:
            raise ValueError(f"{path.name} must hold a 1-D numeric array")
        return dtype, shape[0], handle.tell()


def _read_npy_range(path: Path, layout: tuple[np.dtype, int, int], start: int, stop: int):
    dtype, length, offset = layout
    if not 0 <= start <= stop <= length:
        raise InputError(f"{path}: range [{start}, {stop}) outside [0, {length})")
    with open(path, "rb") as handle:
        handle.seek(offset + start * dtype.itemsize)
        out = np.fromfile(handle, dtype=dtype, count=stop - start)
    if len(out) != stop - start:
        raise InputError(f"{path} is truncated")
    return out


# ---- scoring -----------------------------------------------------------------------------


@dataclass
class ScoreReport:
    """What one :func:`score_users` call did (in this process).

    Attributes:
        out: the output directory.
        n_users: users in the matrix; n_chunks: part files in a complete run.
        N: list length (rows per user).
        scored_chunks: chunks this call scored; skipped_chunks: chunks found complete
            from an earlier run or assigned to other processes.
        users_scored: users this call scored.
        seconds: wall time of the scoring loop.
    """

    out: Path
    n_users: int
    n_chunks: int
    N: int
    scored_chunks: list[int]
    skipped_chunks: list[int]
    users_scored: int
    seconds: float

    @property
    def users_per_second(self) -> float:
        return self.users_scored / self.seconds if self.seconds > 0 else float("nan")


def _ids_fingerprint(ids: Any) -> str | None:
    return None if ids is None else ids_fingerprint(ids)


def score_users(
    model: Recommender,
    source: sp.spmatrix | RowSource,
    out: str | os.PathLike,
    N: int = 20,
    chunk_users: int = 50_000,
    batch_users: int = 1024,
    knobs: Sequence[Knob] = (),
    rule: str = "convex",
    filter_seen: bool = True,
    user_ids: Any = None,
    item_ids: Any = None,
    precision: str = "fp32",
    overwrite: bool = False,
    group: Collective | None = None,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> ScoreReport:
    """Top-N items for every row of ``source``, written chunk by chunk to Parquet.

    Args:
        model: a fitted recommender on the device to score on (``model.to(device)``).
        source: (n_users, n_items) CSR matrix or a :class:`RowSource`.
        out: output directory (created; resumed if it holds an unfinished run).
        N: list length (capped at the item count); a user with fewer unseen items gets
            fewer rows, and a user with an empty history none.
        chunk_users: users per part file; bounds memory with ``batch_users``.
        batch_users: users scored at once: (batch_users x n_items) float32 scores.
        knobs: steering knobs (needs a :class:`SplicedRecommender`).
        rule: steering rule, ``"convex"`` or ``"additive"``.
        filter_seen: never recommend an item the user has (the usual choice).
        user_ids: (n_users,) ids written in the ``user`` column (default: row index).
        item_ids: (n_items,) ids written in the ``item`` column (default: column index).
        precision: ``"fp32"``, or ``"bf16"``: the (users x items) product that makes the
            scores runs in bfloat16 under autocast (CFAE and spliced models). Codes and
            embeddings stay float32, so which latents fire is exact; scores carry ~3
            significant digits, which can swap near-tied items.
        overwrite: delete an earlier run in ``out`` instead of resuming it.
        group: score data-parallel: chunk ``c`` goes to process ``c % world_size``.
        progress: show a tqdm bar over chunks.
        on_chunk: called with each chunk index after its part file is in place (a hook
            for progress reporting; the tests raise from it to simulate a crash).

    Returns:
        :class:`ScoreReport`.

    Raises:
        InputError: bad arguments, a model or data mismatch, or an existing run in
            ``out`` with another config.
    """
    pa, pq = _pyarrow()
    group = group if group is not None else Collective()
    source = MatrixSource(source) if sp.issparse(source) else source
    n_users, n_items = source.shape
    model._check_fitted()
    if n_items != model.n_items_:
        raise InputError(f"the data has {n_items} items but the model scores {model.n_items_}")
    if N < 1 or chunk_users < 1 or batch_users < 1:
        raise InputError(
            f"N, chunk_users and batch_users must be >= 1 ({N}, {chunk_users}, {batch_users})"
        )
    if precision not in SCORE_PRECISIONS:
        raise InputError(
            f"precision must be one of {', '.join(SCORE_PRECISIONS)}, got {precision!r}"
        )
    if knobs:
        require_steerable(model, knobs, rule)
    for name, ids, size in (("user_ids", user_ids, n_users), ("item_ids", item_ids, n_items)):
        if ids is not None and len(ids) != size:
            raise InputError(f"{name} has {len(ids)} entries, expected {size}")
    N = min(N, n_items)

    config = _json(
        {
            "model": model.fingerprint(),
            "data": source.fingerprint(),
            "shape": [n_users, n_items],
            "N": N,
            "chunk_users": chunk_users,
            "knobs": [
                {"latents": k.latents, "weights": k.weights, "strength": k.strength, "name": k.name}
                for k in knobs
            ],
            "rule": rule if knobs else None,
            "filter_seen": filter_seen,
            "precision": precision,
            "user_ids": _ids_fingerprint(user_ids),
            "item_ids": _ids_fingerprint(item_ids),
        }
    )
    out = Path(out)
    n_chunks = -(-n_users // chunk_users)
    width = max(5, len(str(n_chunks - 1)))
    problem = None
    if group.is_main:
        try:
            _prepare(out, config, n_chunks, overwrite)
        except InputError as err:
            problem = str(err)
    # every process learns of a refused run (instead of waiting for rank 0 forever)
    problem = group.agree(problem)
    if problem is not None:
        raise InputError(problem)
    if not group.is_main:
        _check_manifest(out, config)

    def expected_users(chunk: int) -> int:
        return min(n_users, (chunk + 1) * chunk_users) - chunk * chunk_users

    def part(chunk: int) -> Path:
        return out / f"part-{chunk:0{width}d}.parquet"

    mine = [c for c in range(n_chunks) if c % group.world_size == group.rank]
    todo = [c for c in mine if not _complete(pq, part(c), expected_users(c))]
    skipped = [c for c in range(n_chunks) if c not in set(todo)]
    item_lookup = None if item_ids is None else np.asarray(item_ids)
    started, written = time.perf_counter(), 0
    bar = tqdm(todo, desc="scoring", unit="chunk", disable=not progress or not group.is_main)
    for chunk in bar:
        start, stop = chunk * chunk_users, min(n_users, (chunk + 1) * chunk_users)
        rows = as_user_rows(source.rows(start, stop), n_items, allow_empty=True)
        ids = np.full((stop - start, N), -1, dtype=np.int64)
        scores = np.full((stop - start, N), -np.inf, dtype=np.float32)
        # a user with an empty history has nothing to rank from and gets no rows
        with_history = np.flatnonzero(np.diff(rows.indptr) > 0)
        for begin in range(0, len(with_history), batch_users):
            index = with_history[begin : begin + batch_users]
            top_ids, top_scores = recommend_rows(
                model, rows[index], N, knobs, rule, filter_seen, precision=precision
            )
            ids[index, : top_ids.shape[1]] = top_ids
            scores[index, : top_ids.shape[1]] = top_scores
        users = np.arange(start, stop) if user_ids is None else np.asarray(user_ids[start:stop])
        filled = ids.ravel() >= 0  # a user with fewer than N unseen items gets fewer rows
        table = pa.table(
            {
                "user": np.repeat(users, N)[filled],
                "rank": np.tile(np.arange(1, N + 1, dtype=np.int16), stop - start)[filled],
                "item": ids.ravel()[filled]
                if item_lookup is None
                else item_lookup[ids.ravel()[filled]],
                "score": scores.ravel()[filled],
            }
        ).replace_schema_metadata({USERS_KEY: str(stop - start)})
        _write_atomically(pq, table, part(chunk))
        written += stop - start
        if on_chunk is not None:
            on_chunk(chunk)
    seconds = time.perf_counter() - started
    group.barrier()
    if group.is_main:
        missing = [c for c in range(n_chunks) if not _complete(pq, part(c), expected_users(c))]
        if missing:
            raise InputError(f"{out}: chunks {missing[:10]} are missing after scoring")
        rows_written = sum(pq.ParquetFile(part(c)).metadata.num_rows for c in range(n_chunks))
        _write_manifest(out, config, n_chunks, complete=True, rows=rows_written)
    group.barrier()
    return ScoreReport(out, n_users, n_chunks, N, todo, skipped, written, seconds)


# ---- files -------------------------------------------------------------------------------


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
