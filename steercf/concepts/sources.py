"""Tag sources: item metadata as an ``ItemTags`` count matrix ``(n_items, n_tags)``.

MovieLens genres, ML-100K knowledge-graph relations (``directed_by:m.xxx``,
``actor:m.xxx``, ...), ml-latest user tags counted from *training users only*, or any
user-supplied ``item -> tags`` mapping or frame. The concepts these give are what
:mod:`steercf.concepts.mapping` links to units.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from steercf.data import InteractionData, ItemTags
from steercf.data.interactions import tags_from_pairs
from steercf.errors import InputError, UnknownIdError

# Default minimum number of items (kg) / applications (user tags) a concept needs: rarer
# ones give TF-IDF scores from one or two items, which is noise rather than a concept.
DEFAULT_MIN_COUNT = {"genres": 1, "kg": 10, "tags": 5}
# genre placeholders of the MovieLens files: "no information", not a concept
PLACEHOLDER_GENRES = ("unknown", "(no genres listed)")


def tags_from_applications(
    frame: pd.DataFrame,
    item_ids: np.ndarray,
    users: Iterable[Any] | None = None,
    min_count: int = 1,
    lowercase: bool = True,
    item_col: str = "item",
    tag_col: str = "tag",
    user_col: str = "user",
) -> ItemTags:
    """Item x tag counts from raw ``(user, item, tag)`` application rows.

    Args:
        frame: one row per tag application; ``user_col`` is needed only with ``users``.
        item_ids: (n_items,) original item ids, the rows of the result.
        users: keep only applications by these (original) user ids, e.g. the training
            users of a split, so that no held-out user's tags leak into the concepts.
            None keeps every row.
        min_count: drop tags with fewer kept applications than this (counted after the
            user filter and on ``item_ids`` only).
        lowercase: normalise tags: strip, lower-case and collapse inner whitespace, then
            merge spellings that differ only in punctuation or spacing ("sci-fi",
            "sci fi", "scifi") into their most applied form (:func:`merge_spellings`).

    Returns:
        ItemTags with an (n_items, n_tags) float32 count matrix; tags sorted by name.
    """
    missing = [c for c in (item_col, tag_col) if c not in frame.columns]
    if users is not None and user_col not in frame.columns:
        missing.append(user_col)
    if missing:
        raise InputError(
            f"tag frame lacks column(s) {', '.join(map(repr, missing))}; "
            f"it has {list(map(str, frame.columns))}"
        )
    if min_count < 1:
        raise InputError(f"min_count must be >= 1, got {min_count}")
    rows = frame
    if users is not None:
        rows = rows[rows[user_col].isin(pd.Index(list(users)))]
    tags = rows[tag_col].astype("string")
    if lowercase:
        tags = merge_spellings(tags.str.strip().str.lower().str.replace(r"\s+", " ", regex=True))
    keep = tags.notna() & (tags != "")
    return tags_from_pairs(
        rows[item_col].to_numpy()[keep.to_numpy()],
        tags[keep].astype(str).to_numpy(),
        item_ids,
    ).filter(min_count)


def merge_spellings(tags: pd.Series) -> pd.Series:
    """Map each tag to the most frequent spelling among the tags that are equal once
    punctuation and spaces are removed (ties: the alphabetically first); tags with no
    letter or digit are kept as they are."""
    key = tags.str.replace(r"[\W_]+", "", regex=True)
    key = key.where(key.str.len() > 0, tags)
    counts = pd.DataFrame({"key": key, "tag": tags}).dropna().value_counts()
    if counts.empty:
        return tags
    ranked = counts.reset_index().sort_values(
        ["key", "count", "tag"], ascending=[True, False, True]
    )
    spelling = ranked.drop_duplicates("key").set_index("key")["tag"]
    return key.map(spelling).astype("string").where(tags.notna(), tags)


# how a knowledge-graph relation reads in front of the items it links an entity to
KG_ROLES = {
    "directed_by": "director of",
    "actor": "actor in",
    "produced_by": "producer of",
    "production_companies": "company behind",
    "genre": "genre of",
    "award_won": "award won by",
    "award_nomination": "award nomination of",
    "country": "country of",
    "language": "language of",
    "subjects": "subject of",
    "rating": "rating of",
}


# an unnamed knowledge-graph entity on this share of the items or more is named with it
BROAD_ENTITY_SHARE = 0.1


def unnamed_entities(source: str, tags: ItemTags) -> np.ndarray:
    """(n_tags,) bool: knowledge-graph concepts ``relation:entity`` whose entity is a bare
    identifier (``directed_by:m.0bln8``), with no name of its own."""
    if source != "kg":
        return np.zeros(len(tags.names), dtype=bool)
    return np.array(
        [bool(re.fullmatch(r"[mg]\.[0-9a-z_]+", str(n).partition(":")[2])) for n in tags.names],
        dtype=bool,
    )


def broad_entities(source: str, tags: ItemTags) -> tuple[np.ndarray, np.ndarray]:
    """``(broad, share)``: (n_tags,) bool, the unnamed entities (:func:`unnamed_entities`)
    on :data:`BROAD_ENTITY_SHARE` of the items or more, and (n_tags,) each concept's share
    of the items."""
    share = np.asarray((sp.csr_matrix(tags.matrix) > 0).sum(axis=0)).ravel() / max(
        tags.matrix.shape[0], 1
    )
    return unnamed_entities(source, tags) & (share >= BROAD_ENTITY_SHARE), share


def label_concepts(
    data: InteractionData, source: str, train_users: np.ndarray | None = None
) -> ItemTags:
    """The concepts a latent label may name, under the names a person reads.

    :func:`concept_tags` named by :func:`concept_display_names`, without the unnamed
    knowledge-graph entities on :data:`BROAD_ENTITY_SHARE` of the items or more: their
    best-known items are the catalogue's, so a reader cannot tell what they are (on the
    demo's model a fresh reader agreed with none of 7 such labels; three such entities
    took 118 of its 374 labels). The steering concepts keep them.
    """
    tags = concept_tags(data, source, train_users)
    names = concept_display_names(data, source, tags)
    keep = ~broad_entities(source, tags)[0]
    return ItemTags(sp.csr_matrix(tags.matrix)[:, keep], names[keep])


def concept_display_names(
    data: InteractionData, source: str, tags: ItemTags, titles: int = 2
) -> np.ndarray:
    """Names a person reads for the concepts of ``tags`` (n_tags,), same order.

    A knowledge-graph concept ``relation:entity`` whose entity is a bare identifier
    (``directed_by:m.0bln8``) is named by its role and its best-known items (most
    interactions in ``data``): "director of Pulp Fiction (1994), Reservoir Dogs (1992)".
    Two entities of one role with the same best-known items are told apart by more of
    their items (up to ``titles + 2``), then by their identifier. An entity on at least
    :data:`BROAD_ENTITY_SHARE` of the items says so ("genre of Fargo (1996), ... [on 56 %
    of items]"): its best-known items are then mostly the catalogue's. Other names are
    returned as they are.
    """
    names = np.asarray(tags.names, dtype=object).copy()
    if source != "kg":
        return names.astype(str)
    popularity = np.asarray(data.matrix.sum(axis=0)).ravel()
    by_tag = sp.csc_matrix(tags.matrix)
    ranked: dict[int, tuple[str, np.ndarray, str]] = {}  # column -> (role, items, entity)
    for column in np.flatnonzero(unnamed_entities(source, tags)):
        relation, _, entity = str(tags.names[column]).partition(":")
        items = by_tag[:, column].nonzero()[0]
        role = KG_ROLES.get(relation, f"{relation.replace('_', ' ')} of")
        ranked[column] = (role, items[np.argsort(-popularity[items], kind="stable")], entity)

    broad, share = broad_entities(source, tags)

    def named(column: int, n_titles: int) -> str:
        role, items, _ = ranked[column]
        name = f"{role} {', '.join(map(str, data.titles(items[:n_titles])))}"
        # a broad entity's best-known items are the catalogue's: say how broad it is
        return name + (f" [on {share[column]:.0%} of items]" if broad[column] else "")

    for column in ranked:
        names[column] = named(column, titles)
    for extra in (1, 2, None):  # more titles for names still shared, then the identifier
        shown, counts = np.unique(names.astype(str), return_counts=True)
        shared = set(shown[counts > 1])
        for column in ranked:
            if names[column] in shared:
                names[column] = (
                    named(column, titles + extra)
                    if extra
                    else f"{named(column, titles + 2)} [{ranked[column][2]}]"
                )
    return names.astype(str)


def tags_from_mapping(
    mapping: Mapping[Any, Any] | pd.DataFrame,
    item_ids: np.ndarray,
    min_count: int = 1,
    lowercase: bool = False,
    users: Iterable[Any] | None = None,
) -> ItemTags:
    """User-supplied concepts: a dict ``item id -> tag or tags`` or a frame of rows.

    Args:
        mapping: ``{item_id: "tag" | ["tag", ...] | {"tag": count}}``, or a DataFrame
            with columns ``item``, ``tag`` (and ``user`` when ``users`` is given).
        item_ids: (n_items,) original item ids; unknown items are ignored.
        min_count: drop tags counted fewer times in total.
        lowercase: lower-case and strip tag names.
        users: for a frame with a ``user`` column: keep only rows of these users.

    Returns:
        ItemTags (n_items, n_tags) with counts (a dict value repeated or given as counts
        adds up).
    """
    if isinstance(mapping, pd.DataFrame):
        return tags_from_applications(
            mapping, item_ids, users=users, min_count=min_count, lowercase=lowercase
        )
    if not isinstance(mapping, Mapping):
        raise InputError(
            f"concepts must be a dict item -> tags or a DataFrame, got {type(mapping).__name__}"
        )
    items: list[Any] = []
    tags: list[str] = []
    for item, value in mapping.items():
        if isinstance(value, str):
            pairs: Iterable[tuple[Any, int]] = [(value, 1)]
        elif isinstance(value, Mapping):
            pairs = value.items()
        elif isinstance(value, Iterable):
            pairs = [(v, 1) for v in value]
        else:
            raise InputError(f"tags of item {item!r} must be a str, list or dict, got {value!r}")
        for tag, count in pairs:
            n = int(count)
            items.extend([item] * n)
            tags.extend([str(tag)] * n)
    frame = pd.DataFrame({"item": items, "tag": tags})
    return tags_from_applications(frame, item_ids, min_count=min_count, lowercase=lowercase)


def concept_tags(
    data: InteractionData,
    source: str,
    train_users: np.ndarray | None = None,
    min_count: int | None = None,
) -> ItemTags:
    """The item x concept counts of a named tag source of ``data``.

    Args:
        data: a loaded data set.
        source: ``"genres"``, ``"kg"`` (ML-100K knowledge-graph relations) or ``"tags"``
            (ml-latest user tags); any other key of ``data.tags`` is used as it is.
        train_users: row indices into ``data.matrix`` of the training users
            (``Split.train_users``). User tags are then recounted from these users'
            applications only: a held-out user's tags describe exactly the items they
            hide, so counting them would leak. Genres and knowledge-graph relations are
            item metadata, not user data, and ignore it.
        min_count: minimum total count of a concept (items for kg, applications for user
            tags); default ``DEFAULT_MIN_COUNT`` (1 for an unlisted source).

    Returns:
        ItemTags (n_items, n_concepts). The genre placeholders "unknown" (ML-100K) and
        "(no genres listed)" (ml-latest) are dropped: they mark missing data.

    Raises:
        UnknownIdError: ``data`` has no such source (the message lists the ones it has).
    """
    threshold = DEFAULT_MIN_COUNT.get(source, 1) if min_count is None else int(min_count)
    if source == "tags" and data.tag_applications is not None:
        users = None if train_users is None else data.user_ids[np.asarray(train_users)]
        # applications are already lower-cased by the loader; lowercase again for frames
        # assembled by hand
        return tags_from_applications(
            data.tag_applications, data.item_ids, users=users, min_count=threshold
        )
    if source not in data.tags:
        close = difflib.get_close_matches(source, list(data.tags), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownIdError(
            f"{data.name} has no tag source {source!r} (it has "
            f"{', '.join(map(repr, data.tags)) or 'none'}){hint}"
        )
    tags = data.tags[source].filter(threshold)
    if source == "genres":
        keep = np.flatnonzero(~np.isin(np.char.lower(tags.names), PLACEHOLDER_GENRES))
        tags = ItemTags(tags.matrix[:, keep].tocsr(), tags.names[keep])
    return tags


def available_sources(data: InteractionData) -> list[str]:
    """Tag sources of ``data`` that :func:`concept_tags` can build, in a fixed order."""
    return [s for s in ("genres", "kg", "tags") if s in data.tags] + sorted(
        s for s in data.tags if s not in ("genres", "kg", "tags")
    )
