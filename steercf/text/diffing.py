"""Task 1, dataset diffing: latents whose activation frequency differs between two
corpora (Jiang et al. 2025).

Takes document codes ``(n_docs, n_latents)`` from :meth:`steercf.text.TextSAE.doc_codes`
(a latent "fires" on a document when its code is > 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from steercf.errors import InputError
from steercf.text.common import check_codes, label_column

DEFAULT_MIN_DIFF = 0.03  # the toolkit's minimum frequency difference


def diff_datasets(
    codes_a: Any,
    codes_b: Any,
    labels: Sequence[str] | None = None,
    min_diff: float = DEFAULT_MIN_DIFF,
    relative: bool = False,
    direction: str = "a",
    top: int | None = None,
) -> pd.DataFrame:
    """Latents whose activation frequency differs between two corpora.

    Args:
        codes_a: (n_a, n_latents) codes of corpus A; codes_b: (n_b, n_latents) of B.
        labels: (n_latents,) latent labels for the ``label`` column.
        min_diff: keep latents with ``|freq_a - freq_b| >= min_diff``.
        relative: rank by ``(freq_a - freq_b) / max(freq_a, freq_b)`` instead of the
            plain difference (favours rare but one-sided latents).
        direction: ``"a"`` (more frequent in A first), ``"b"`` (more in B) or
            ``"both"`` (largest absolute difference first).
        top: keep this many rows.

    Returns:
        DataFrame (one row per kept latent, best first; ``rank`` from 1) with
        ``latent, freq_a, freq_b, diff, rel_diff, label``.
    """
    a = check_codes(codes_a, "codes_a")
    b = check_codes(codes_b, "codes_b", a.shape[1])
    if direction not in ("a", "b", "both"):
        raise InputError(f"direction must be 'a', 'b' or 'both', got {direction!r}")
    fa, fb = (a > 0).mean(0), (b > 0).mean(0)
    diff = fa - fb
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(np.maximum(fa, fb) > 0, diff / np.maximum(fa, fb), 0.0)
    key = rel if relative else diff
    if direction == "b":
        key = -key
    elif direction == "both":
        key = np.abs(key)
    keep = np.abs(diff) >= min_diff
    if direction == "a":
        keep &= diff > 0
    elif direction == "b":
        keep &= diff < 0
    latents = np.flatnonzero(keep)
    latents = latents[np.argsort(-key[latents], kind="stable")]
    if top is not None:
        latents = latents[:top]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(latents) + 1),
            "latent": latents,
            "freq_a": fa[latents],
            "freq_b": fb[latents],
            "diff": diff[latents],
            "rel_diff": rel[latents],
            "label": label_column(labels, latents),
        }
    )
    return frame
