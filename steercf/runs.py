"""A saved model together with the data set and split it was trained under.

``steercf train`` / ``train-sae`` record the data set spec, its binarisation settings,
the split seed and a fingerprint of the item columns in the model's metadata; the CLI,
the explorer and the benchmarks read a model back through :func:`load_run`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steercf.data import InteractionData, load_dataset
from steercf.errors import InputError
from steercf.evaluation import Split, split_users
from steercf.io import ids_fingerprint
from steercf.models import Recommender, SplicedRecommender, load_model

DEFAULT_MIN_RATING = 4.0  # ratings >= this are positives
DEFAULT_MIN_USER_POSITIVES = 5


def item_fingerprint(data: InteractionData) -> str:
    """Short hash of the item id order: a model only fits data with the same columns."""
    return ids_fingerprint(data.item_ids)


def portable_spec(spec: str) -> str:
    """A data-set spec that still resolves from another working directory: a path that
    exists is stored absolute; names (``ml-100k``) stay as they are."""
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def run_metadata(
    spec: str,
    data: InteractionData,
    seed: int,
    min_rating: float = DEFAULT_MIN_RATING,
    min_user_positives: int = DEFAULT_MIN_USER_POSITIVES,
    encoding: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What a saved model records about its data (read back by :func:`resolve_data`);
    ``encoding`` only when the files needed one other than the default."""
    return {
        "data": portable_spec(spec),
        "min_rating": min_rating,
        "min_user_positives": min_user_positives,
        "seed": seed,
        "item_fingerprint": item_fingerprint(data),
        **({"encoding": encoding} if encoding is not None else {}),
        **extra,
    }


def check_matches(model: Recommender, data: InteractionData) -> None:
    """Raise InputError unless ``data`` has the item columns ``model`` was fitted on."""
    fingerprint = (getattr(model, "metadata_", {}) or {}).get("item_fingerprint")
    if model.n_items_ != data.n_items or (fingerprint and fingerprint != item_fingerprint(data)):
        raise InputError(
            f"the model was fitted on other items ({model.n_items_} items) than data set "
            f"{data.name!r} ({data.n_items} items); pass the --data it was trained on"
        )


def resolve_data(
    model: Recommender,
    data: InteractionData | str | os.PathLike | None = None,
    min_rating: float | None = None,
    min_user_positives: int | None = None,
    encoding: str | None = None,
) -> InteractionData:
    """The data set a saved model was trained on, checked against the model.

    Args:
        data: a loaded data set, a ``load_dataset`` spec, or None for the one recorded in
            the model's metadata.
        min_rating, min_user_positives: override the recorded binarisation settings
            (default: the recorded ones, else 4.0 and 5).
        encoding: text encoding of the data files (default: the recorded one, else
            each file's usual one; see :func:`steercf.data.load_dataset`).

    Raises:
        InputError: no data set given nor recorded, or one with other item columns.
    """
    metadata = getattr(model, "metadata_", {}) or {}
    if not isinstance(data, InteractionData):
        spec = data if data is not None else metadata.get("data")
        if spec is None:
            raise InputError(
                "the model does not record the data set it was trained on; pass --data "
                "(the same one given to `steercf train`)"
            )
        if min_rating is None:
            min_rating = metadata.get("min_rating", DEFAULT_MIN_RATING)
        if min_user_positives is None:
            min_user_positives = metadata.get("min_user_positives", DEFAULT_MIN_USER_POSITIVES)
        if encoding is None:
            encoding = metadata.get("encoding")
        data = load_dataset(
            os.fspath(spec),
            min_rating=min_rating,
            min_user_positives=min_user_positives,
            encoding=encoding,
        )
    check_matches(model, data)
    return data


@dataclass
class Run:
    """A saved model, the data set it was trained on and the split it was trained under."""

    model: Recommender
    data: InteractionData
    split: Split


def load_run(
    model_dir: str | os.PathLike,
    data: InteractionData | str | os.PathLike | None = None,
    min_rating: float | None = None,
    min_user_positives: int | None = None,
    seed: int | None = None,
    spliced: bool = False,
    encoding: str | None = None,
) -> Run:
    """Load a model directory with its data set (see :func:`resolve_data`) and its split
    (the recorded seed unless ``seed`` is given).

    Args:
        spliced: require a :class:`SplicedRecommender` (InputError otherwise).
        encoding: text encoding of the data files (:func:`resolve_data`).
    """
    model = load_model(model_dir)
    if spliced and not isinstance(model, SplicedRecommender):
        raise InputError(
            f"{model_dir} holds a {model.kind} model; this needs a spliced model "
            "(make one with `steercf train-sae`)"
        )
    loaded = resolve_data(model, data, min_rating, min_user_positives, encoding)
    if seed is None:
        seed = int((getattr(model, "metadata_", {}) or {}).get("seed", 0))
    return Run(model, loaded, split_users(loaded.matrix, seed=seed))
