"""Streaming batch scoring: top-N (optionally steered) for every user of a large matrix.

Users are cut into chunks of ``chunk_users`` consecutive rows; each chunk is read, scored
in batches of ``batch_users`` and written as one Parquet file, so memory is bounded by
one chunk's rows and one batch's (batch x items) scores, whatever the number of users.
Rows can come from an in-memory CSR matrix or from a :class:`CSRDirSource` on disk, which
reads only the chunk asked for.

Output directory::

    manifest.json          format, version, the run's config, "complete" at the end, and
                           for each finished chunk its file, users, rows, bytes and SHA-256
    part-00000.parquet     users [0, chunk_users): columns user, rank, item, score
    part-00001.parquet     ...

Integrity: a part file is written to a temporary name, flushed and renamed into place,
and only then recorded in the manifest (itself replaced atomically, under a lock that
the processes of a data-parallel run share). :func:`read_scores` reads only the parts the
manifest lists, each checked against its recorded size and SHA-256 first: a missing,
swapped or damaged part is an :class:`~steercf.errors.InputError` naming it, and a file
the manifest does not list is ignored with a warning, never read.

Resuming: a rerun with the same config verifies every recorded part the same way, keeps
those that pass and scores the rest (unrecorded or failing the check) again: no user is
lost or written twice. A rerun whose config differs (model weights, data, N, knobs,
chunking, ...) is refused instead of mixing two runs in one directory.

Example::

    from steercf.scoring import score_users, read_scores

    report = score_users(model, data.matrix, "runs/scores", N=20,
                         user_ids=data.user_ids, item_ids=data.item_ids)
    frame = read_scores("runs/scores")   # pandas: user, rank, item, score

Modules: :mod:`steercf.scoring.sources` (row sources), :mod:`steercf.scoring.run` (the
scoring loop), :mod:`steercf.scoring.files` (manifest, part files, :func:`read_scores`).
"""

from __future__ import annotations

from steercf.scoring.files import FORMAT, MANIFEST, USERS_KEY, VERSION, read_scores
from steercf.scoring.run import ScoreReport, score_users
from steercf.scoring.sources import CSRDirSource, MatrixSource, RowSource, save_csr_dir

__all__ = [
    "FORMAT",
    "MANIFEST",
    "USERS_KEY",
    "VERSION",
    "CSRDirSource",
    "MatrixSource",
    "RowSource",
    "ScoreReport",
    "read_scores",
    "save_csr_dir",
    "score_users",
]
