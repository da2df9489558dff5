"""The scoring loop: :func:`score_users` and its :class:`ScoreReport`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from steercf.distributed import Collective
from steercf.errors import InputError
from steercf.io import ids_fingerprint
from steercf.models.base import Recommender, as_user_rows
from steercf.ranking import check_n
from steercf.scoring.files import (
    USERS_KEY,
    _check_manifest,
    _finish,
    _json,
    _part_problem,
    _prepare,
    _pyarrow,
    _recorded_parts,
    _update_parts,
    _write_part,
    check_part_path,
    part_name,
)
from steercf.scoring.sources import MatrixSource, RowSource
from steercf.steering import (
    DEFAULT_RULE,
    SCORE_PRECISIONS,
    Knob,
    recommend_rows,
    require_steerable,
)

__all__ = ["ScoreReport", "score_users"]


@dataclass
class ScoreReport:
    """What one :func:`score_users` call did (in this process).

    Attributes:
        out: the output directory.
        n_users: users in the matrix; n_chunks: part files in a complete run.
        N: list length (rows per user).
        scored_chunks: chunks this call scored; skipped_chunks: chunks found complete
            (recorded and verified) from an earlier run, or assigned to other processes.
        rescored_chunks: the scored chunks whose part an earlier run had recorded but
            that failed the check (missing, altered or damaged file), with the reason.
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
    rescored_chunks: dict[int, str] = field(default_factory=dict)

    @property
    def users_per_second(self) -> float:
        return self.users_scored / self.seconds if self.seconds > 0 else float("nan")


def score_users(
    model: Recommender,
    source: sp.spmatrix | RowSource,
    out: str | os.PathLike,
    N: int = 20,
    chunk_users: int = 50_000,
    batch_users: int = 1024,
    knobs: Sequence[Knob] = (),
    rule: str = DEFAULT_RULE,
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
        out: output directory (created; resumed if it holds an earlier run with the same
            config: recorded parts that pass their size and SHA-256 check are kept, the
            others scored again).
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
        on_chunk: called with each chunk index after its part file is in place and
            recorded in the manifest (a hook for progress reporting; the tests raise
            from it to simulate a crash).

    Returns:
        :class:`ScoreReport`.

    Raises:
        InputError: bad arguments, a model or data mismatch, or an existing run in
            ``out`` with another config.
    """
    pa, pq = _pyarrow()
    group = group if group is not None else Collective()
    source = MatrixSource(source) if sp.issparse(source) else source
    _check_arguments(model, source, N, chunk_users, batch_users, knobs, rule, precision)
    _check_ids_length(source, user_ids, item_ids)
    ranking = _Ranking(
        model, min(N, source.shape[1]), batch_users, tuple(knobs), rule, filter_seen, precision
    )
    config = _run_config(ranking, source, chunk_users, user_ids, item_ids)
    chunks = _Chunks(Path(out), source.shape[0], chunk_users)
    _open_run(chunks, config, overwrite, group)
    todo, skipped, damaged = _plan(chunks, config, group)
    item_lookup = None if item_ids is None else np.asarray(item_ids)
    started, written = time.perf_counter(), 0
    bar = tqdm(todo, desc="scoring", unit="chunk", disable=not progress or not group.is_main)
    for chunk in bar:
        table = _chunk_table(pa, ranking, source, chunks, chunk, user_ids, item_lookup)
        record = _write_part(pa, pq, table, chunks.part(chunk), chunks.users(chunk))
        _update_parts(chunks.out, config, {chunk: record})
        written += chunks.users(chunk)
        if on_chunk is not None:
            on_chunk(chunk)
    seconds = time.perf_counter() - started
    group.barrier()
    if group.is_main:
        _finish(chunks.out, config)
    group.barrier()
    return ScoreReport(
        chunks.out, chunks.n_users, chunks.n, ranking.N, todo, skipped, written, seconds, damaged
    )


# ---- pieces of score_users ------------------------------------------------------------------


@dataclass(frozen=True)
class _Ranking:
    """How each user is ranked: the model, the (capped) list length and the knobs."""

    model: Recommender
    N: int
    batch_users: int
    knobs: tuple[Knob, ...]
    rule: str
    filter_seen: bool
    precision: str

    def top(self, rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)``, each (n_rows, N): int64 ids (-1 where none) and float32
        scores (-inf where none), ranked ``batch_users`` rows at a time."""
        ids = np.full((rows.shape[0], self.N), -1, dtype=np.int64)
        scores = np.full((rows.shape[0], self.N), -np.inf, dtype=np.float32)
        # a user with an empty history has nothing to rank from and gets no rows
        with_history = np.flatnonzero(np.diff(rows.indptr) > 0)
        for begin in range(0, len(with_history), self.batch_users):
            index = with_history[begin : begin + self.batch_users]
            top_ids, top_scores = recommend_rows(
                self.model,
                rows[index],
                self.N,
                self.knobs,
                self.rule,
                self.filter_seen,
                precision=self.precision,
            )
            ids[index, : top_ids.shape[1]] = top_ids
            scores[index, : top_ids.shape[1]] = top_scores
        return ids, scores


@dataclass(frozen=True)
class _Chunks:
    """Users cut into chunks of ``chunk_users`` consecutive rows, one part file each."""

    out: Path
    n_users: int
    chunk_users: int

    @property
    def n(self) -> int:
        return -(-self.n_users // self.chunk_users)

    def bounds(self, chunk: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of ``chunk``."""
        return chunk * self.chunk_users, min(self.n_users, (chunk + 1) * self.chunk_users)

    def users(self, chunk: int) -> int:
        start, stop = self.bounds(chunk)
        return stop - start

    def part(self, chunk: int) -> Path:
        return self.out / part_name(chunk, self.n)


def _check_arguments(
    model: Recommender,
    source: RowSource,
    N: int,
    chunk_users: int,
    batch_users: int,
    knobs: Sequence[Knob],
    rule: str,
    precision: str,
) -> None:
    """Raise InputError for an unfitted or mismatched model or a bad setting."""
    n_items = source.shape[1]
    model._check_fitted()
    if n_items != model.n_items_:
        raise InputError(f"the data has {n_items} items but the model scores {model.n_items_}")
    for name, value in (("N", N), ("chunk_users", chunk_users), ("batch_users", batch_users)):
        check_n(value, name)
    if precision not in SCORE_PRECISIONS:
        raise InputError(
            f"precision must be one of {', '.join(SCORE_PRECISIONS)}, got {precision!r}"
        )
    if knobs:
        require_steerable(model, knobs, rule)


def _check_ids_length(source: RowSource, user_ids: Any, item_ids: Any) -> None:
    n_users, n_items = source.shape
    for name, ids, size in (("user_ids", user_ids, n_users), ("item_ids", item_ids, n_items)):
        if ids is not None and len(ids) != size:
            raise InputError(f"{name} has {len(ids)} entries, expected {size}")


def _ids_fingerprint(ids: Any) -> str | None:
    return None if ids is None else ids_fingerprint(ids)


def _run_config(
    ranking: _Ranking, source: RowSource, chunk_users: int, user_ids: Any, item_ids: Any
) -> dict[str, Any]:
    """Everything the output depends on, as stored in the manifest: a rerun resumes only
    when its config is equal."""
    return _json(
        {
            "model": ranking.model.fingerprint(),
            "data": source.fingerprint(),
            "shape": list(source.shape),
            "N": ranking.N,
            "chunk_users": chunk_users,
            "knobs": [
                {"latents": k.latents, "weights": k.weights, "strength": k.strength, "name": k.name}
                for k in ranking.knobs
            ],
            "rule": ranking.rule if ranking.knobs else None,
            "filter_seen": ranking.filter_seen,
            "precision": ranking.precision,
            "user_ids": _ids_fingerprint(user_ids),
            "item_ids": _ids_fingerprint(item_ids),
        }
    )


def _open_run(chunks: _Chunks, config: dict[str, Any], overwrite: bool, group: Collective) -> None:
    """Create or check the output directory (rank 0), then check the manifest everywhere."""
    problem = None
    if group.is_main:
        try:
            _prepare(chunks.out, config, chunks.n, overwrite)
        except InputError as err:
            problem = str(err)
    # every process learns of a refused run (instead of waiting for rank 0 forever)
    problem = group.agree(problem)
    if problem is not None:
        raise InputError(problem)
    if not group.is_main:
        _check_manifest(chunks.out, config)


def _plan(
    chunks: _Chunks, config: dict[str, Any], group: Collective
) -> tuple[list[int], list[int], dict[int, str]]:
    """``(todo, skipped, damaged)``: this process's chunks to score, all the others
    (recorded and verified, or another process's), and the chunks of ``todo`` whose
    recorded part failed its check, with the reason. Failed records are forgotten in the
    manifest before anything is rewritten, so it never lists a part being replaced."""
    records = _recorded_parts(chunks.out)
    todo, damaged = [], {}
    for chunk in range(group.rank, chunks.n, group.world_size):
        check_part_path(chunks.part(chunk))  # before any work, and never replaced
        record = records[chunk]
        problem = None if record is None else _part_problem(chunks.out, record)
        if record is None or problem is not None:
            todo.append(chunk)
        if problem is not None:
            damaged[chunk] = f"{record['file']} {problem}"
    if damaged:
        _update_parts(chunks.out, config, dict.fromkeys(damaged))
    skipped = [c for c in range(chunks.n) if c not in set(todo)]
    return todo, skipped, damaged


def _chunk_table(
    pa: Any,
    ranking: _Ranking,
    source: RowSource,
    chunks: _Chunks,
    chunk: int,
    user_ids: Any,
    item_lookup: np.ndarray | None,
) -> Any:
    """The part file's table of one chunk: columns user, rank, item, score."""
    start, stop = chunks.bounds(chunk)
    N = ranking.N
    rows = as_user_rows(source.rows(start, stop), source.shape[1], allow_empty=True)
    ids, scores = ranking.top(rows)
    users = np.arange(start, stop) if user_ids is None else np.asarray(user_ids[start:stop])
    filled = ids.ravel() >= 0  # a user with fewer than N unseen items gets fewer rows
    return pa.table(
        {
            "user": np.repeat(users, N)[filled],
            "rank": np.tile(np.arange(1, N + 1, dtype=np.int16), stop - start)[filled],
            "item": ids.ravel()[filled]
            if item_lookup is None
            else item_lookup[ids.ravel()[filled]],
            "score": scores.ravel()[filled],
        }
    ).replace_schema_metadata({USERS_KEY: str(stop - start)})
