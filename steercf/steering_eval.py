"""Steering evaluation, as in the steerable-CF study, with every choice on validation users.

For each user the *target* concept is the tag most over-represented among their
held-out items relative to their input items (share among targets minus share among
inputs). Steering toward it should raise *segment* metrics (hits among all items that
carry the tag) while keeping *personal* metrics (hits among the user's held-out items).
Suppression is measured the other way: the tag most present in a user's unsteered list
is steered away from, and its share in the list should fall.

The protocol (issue 16): a *steerer* (:func:`sae_steerer`: the SAE's knobs;
:func:`tag_boost_steerer`: a re-ranker that lifts the items known to carry the tag)
is swept over strengths on a :class:`SteeringTask` of validation users; the strength (and
whatever else is being chosen) with the largest segment recall that keeps at least 95 %
of the unsteered personal recall is picked there (:func:`choose_point`) and reported on
the test users' task. The *incomplete-tag* protocol (:func:`hide_tag_items`) hides a
random half of each concept's items from the steerer; the segment then counts only the
hidden half, items the steerer could not have known.

:func:`steering_sweep` (the test users' curve of the SAE's knobs) and
:func:`suppression` (steering away) are conveniences over the same pieces
(:func:`steering_task` / :func:`sae_steerer` / :func:`sweep`), so every figure is
computed in one place.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from steercf.errors import InputError
from steercf.evaluation import Split, ndcg_at_k, recall_at_k
from steercf.ranking import top_n
from steercf.steering import DEFAULT_RULE, ConceptKnobs, score_rows, steer, steer_codes


def target_concepts(
    user_input: sp.csr_matrix, user_target: sp.csr_matrix, item_tags: sp.csr_matrix
) -> np.ndarray:
    """(n_users,) index of each user's most over-represented tag among held-out items,
    -1 when no held-out item carries any tag.

    Args:
        user_input, user_target: (n_users, n_items) shown and held-out items.
        item_tags: (n_items, n_tags) counts (binarised here).
    """
    tags = (item_tags > 0).astype(np.float64)
    n_in = np.maximum(np.diff(user_input.indptr), 1)[:, None]
    n_out = np.maximum(np.diff(user_target.indptr), 1)[:, None]
    share_out = np.asarray((user_target @ tags).todense()) / n_out
    share_in = np.asarray((user_input @ tags).todense()) / n_in
    lift = np.where(share_out > 0, share_out - share_in, -np.inf)
    best = lift.argmax(axis=1)
    best[~np.isfinite(lift.max(axis=1))] = -1
    return best


def _segment_rows(
    concepts: np.ndarray, item_tags: sp.csr_matrix, seen: sp.csr_matrix
) -> sp.csr_matrix:
    """(n_users, n_items) the items carrying each user's concept, minus what they saw."""
    segment = _concept_items(item_tags, concepts)
    return (segment - segment.multiply(seen)).tocsr()


def _concept_items(item_tags: sp.csr_matrix, concepts: np.ndarray) -> sp.csr_matrix:
    """(n_users, n_items) CSR 1.0 on the items carrying each user's concept."""
    return (item_tags > 0).T.tocsr().astype(np.float32)[concepts]


def _list_share(ids: np.ndarray, carries: sp.csr_matrix, slots: int) -> np.ndarray:
    """(n_users,) share of the ``slots`` places of each list ``ids`` (n_users, width)
    holding an item that ``carries`` (n_users, n_items) marks; an empty slot (id -1,
    :func:`steercf.ranking.top_n`) holds none, never "the last item"."""
    if len(ids) == 0:
        return np.zeros(0)
    valid = ids >= 0
    users = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)
    hits = np.asarray(carries[users[valid], ids[valid]]).ravel()
    return np.bincount(users[valid], weights=hits, minlength=len(ids)) / slots


def share_with_tag(ids: np.ndarray, concepts: np.ndarray, item_tags: sp.csr_matrix) -> np.ndarray:
    """(n_users,) share of each user's list ``ids`` (n_users, N) carrying their concept
    (``concepts``: (n_users,) columns of ``item_tags``, (n_items, n_tags)); an empty slot
    (id -1) carries nothing."""
    return _list_share(ids, _concept_items(item_tags, concepts), max(ids.shape[1], 1))


@dataclass
class SteeringTask:
    """Users to steer, each toward one concept, and what counts as success.

    Attributes:
        rows: (n, n_items) CSR the users' shown items (the steerer's input).
        target: (n, n_items) CSR their held-out items (personal metrics).
        concepts: (n,) each user's target concept (a column of the tag matrix).
        segment: (n, n_items) CSR the items carrying the user's concept in the
            segment's tag matrix, minus the shown items (segment metrics).
        in_segment: (n, n_items) CSR the held-out items that are in the segment
            (in-segment personal recall: the user's own items of the concept).
        carries: (n, n_items) CSR the items carrying the user's concept by the full
            tags (the target share of a list).
    """

    rows: sp.csr_matrix
    target: sp.csr_matrix
    concepts: np.ndarray
    segment: sp.csr_matrix
    in_segment: sp.csr_matrix
    carries: sp.csr_matrix


def steering_task(
    user_input: sp.csr_matrix,
    user_target: sp.csr_matrix,
    item_tags: sp.csr_matrix,
    segment_tags: sp.csr_matrix | None = None,
) -> SteeringTask:
    """The steering task of some users (validation or test).

    Args:
        user_input, user_target: (n_users, n_items) shown and held-out items.
        item_tags: (n_items, n_tags) the full tags: each user's target concept.
        segment_tags: (n_items, n_tags) the tags whose items count for the segment
            (default ``item_tags``; the hidden half in the incomplete-tag protocol).

    Returns:
        the task of the users with a target concept whose segment is not empty.
    """
    segment_tags = item_tags if segment_tags is None else segment_tags
    if segment_tags.shape != item_tags.shape:
        raise InputError(
            f"segment_tags has shape {segment_tags.shape}, item_tags {item_tags.shape}"
        )
    concepts = target_concepts(user_input, user_target, item_tags)
    users = np.flatnonzero(concepts >= 0)
    task = _task(user_input[users], user_target[users], concepts[users], item_tags, segment_tags)
    keep = np.flatnonzero(np.diff(task.segment.indptr) > 0)
    return SteeringTask(
        task.rows[keep],
        task.target[keep],
        task.concepts[keep],
        task.segment[keep],
        task.in_segment[keep],
        task.carries[keep],
    )


def _task(
    rows: sp.csr_matrix,
    target: sp.csr_matrix,
    concepts: np.ndarray,
    item_tags: sp.csr_matrix,
    segment_tags: sp.csr_matrix,
) -> SteeringTask:
    """The task of every user in ``rows`` toward their given concept (no user dropped):
    the one place that derives segments and carried items from the tags."""
    segment = _segment_rows(concepts, segment_tags, rows)
    in_segment = target.multiply(segment > 0).tocsr()
    in_segment.eliminate_zeros()
    return SteeringTask(
        rows, target, concepts, segment, in_segment, _concept_items(item_tags, concepts)
    )


def hide_tag_items(
    item_tags: sp.csr_matrix, share: float = 0.5, seed: int = 0
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split each concept's items into a visible and a hidden part at random.

    Args:
        item_tags: (n_items, n_tags) counts.
        share: the share of each concept's items hidden (rounded; a concept on one item
            keeps it visible).

    Returns:
        ``(visible, hidden)``, both (n_items, n_tags) CSR, summing to ``item_tags``.
    """
    if not 0 < share < 1:
        raise InputError(f"share must be in (0, 1), got {share}")
    rng = np.random.default_rng(seed)
    coo = sp.csc_matrix(item_tags).tocoo()
    hidden = np.zeros(coo.nnz, dtype=bool)
    order = np.lexsort((coo.row, coo.col))  # entries grouped by concept
    cols = coo.col[order]
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends, strict=True):
        n_hidden = int(round(share * (end - start)))
        if end - start > 1 and n_hidden:
            hidden[order[start + rng.choice(end - start, n_hidden, replace=False)]] = True
    shape = item_tags.shape

    def part(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=shape)

    return part(~hidden), part(hidden)


Steerer = Callable[[SteeringTask, float], torch.Tensor]


def _per_task(compute: Callable[[SteeringTask], Any]) -> Callable[[SteeringTask], Any]:
    """``compute(task)`` remembered per task: a sweep asks for the same task's unsteered
    state once per strength."""
    cache: dict[int, tuple[SteeringTask, Any]] = {}

    def get(task: SteeringTask) -> Any:
        entry = cache.get(id(task))
        if entry is None or entry[0] is not task:  # a new task may reuse a freed id
            entry = cache[id(task)] = (task, compute(task))
        return entry[1]

    return get


def sae_steerer(model, knobs: ConceptKnobs, rule: str = DEFAULT_RULE) -> Steerer:
    """``scores(task, strength)``: each user steered toward their concept through the
    SAE (one knob per concept from ``knobs``, at ``strength``); (n, n_items) scores.
    The task's encoding is computed once and reused across strengths."""
    encode = _per_task(lambda task: model.encode(task.rows))
    unit_knobs: dict[int, Any] = {}  # concept -> its knob at strength 1

    def scores(task: SteeringTask, strength: float) -> torch.Tensor:
        encoding = encode(task)
        if strength == 0:
            return model.decode(encoding)
        steered = encoding.codes.clone()
        for concept in np.unique(task.concepts):
            members = torch.from_numpy(np.flatnonzero(task.concepts == concept))
            if concept not in unit_knobs:
                unit_knobs[concept] = knobs.knob(int(concept), 1.0)
            knob = replace(unit_knobs[concept], strength=float(strength))
            steered[members] = steer_codes(encoding.codes[members], [knob], rule)
        return model.decode(encoding.with_codes(steered))

    return scores


def tag_boost_steerer(model, item_tags: sp.csr_matrix) -> Steerer:
    """The re-ranking baseline: ``score + strength * std_u(score) * has_tag``, lifting
    the items ``item_tags`` says carry the user's concept by ``strength`` standard
    deviations of the user's own scores (over unseen items); (n, n_items) scores."""
    carries = torch.from_numpy((item_tags > 0).T.toarray().astype(np.float32))

    def unsteered(task: SteeringTask) -> tuple[torch.Tensor, torch.Tensor]:
        base = score_rows(model, task.rows)
        unseen = torch.from_numpy((task.rows.toarray() == 0).astype(np.float32))
        count = unseen.sum(1, keepdim=True).clamp_min(2.0)
        mean = (base * unseen).sum(1, keepdim=True) / count
        var = ((base - mean) * unseen).square().sum(1, keepdim=True) / (count - 1)
        return base, var.sqrt()

    cached = _per_task(unsteered)

    def scores(task: SteeringTask, strength: float) -> torch.Tensor:
        base, spread = cached(task)
        if strength == 0:
            return base.clone()
        boost = carries[torch.from_numpy(task.concepts)]
        return base + strength * spread * boost

    return scores


def combined_steerer(sae: Steerer, rerank: Steerer, beta_per_strength: float) -> Steerer:
    """SAE steering plus the re-ranker's tag boost, one knob for both: at ``strength``
    s the user's code is steered at s (``sae``) and the items the visible tags say carry
    the concept are lifted by ``beta_per_strength * s`` of the user's score sds
    (``rerank``'s boost over its unsteered scores). Named for what it is, ``sae+rerank``:
    the SAE direction reaches items whose tags are missing, the boost the tagged ones.
    Both steerers must score with the same model; (n, n_items) scores."""
    if not np.isfinite(beta_per_strength) or beta_per_strength < 0:
        raise InputError(f"beta_per_strength must be finite and >= 0, got {beta_per_strength}")

    def scores(task: SteeringTask, strength: float) -> torch.Tensor:
        steered = sae(task, strength)
        if strength == 0 or beta_per_strength == 0:
            return steered
        return steered + (rerank(task, beta_per_strength * strength) - rerank(task, 0.0))

    return scores


def tag_space_steerer(model) -> Steerer:
    """The tag-space baseline (a fitted
    :class:`~steercf.models.tagspace.TagSpaceAutoencoder`): each user's profile entry for
    their concept raised by ``strength`` times the largest absolute entry of their
    profile; (n, n_items) scores."""
    encode = _per_task(lambda task: model.encode(task.rows))

    def scores(task: SteeringTask, strength: float) -> torch.Tensor:
        profiles = encode(task).clone()
        if strength:
            users = torch.arange(len(task.concepts))
            concepts = torch.from_numpy(task.concepts)
            profiles[users, concepts] += strength * profiles.abs().amax(1)
        return model.decode(profiles)

    return scores


def sweep(
    steerer: Steerer,
    task: SteeringTask,
    strengths: Sequence[float],
    k: int = 20,
    ndcg: bool = False,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Steering metrics of ``task`` at each strength: the one place a steerer's lists are
    scored (:func:`steering_sweep` and :func:`suppression` report through it too).

    Args:
        steerer: ``scores(task, strength)``, (n, n_items) scores; strength 0 unsteered.
        task: the users, their concepts and what counts as success.
        strengths: the strengths to score, finite numbers, in the order reported.
        k: list length.
        ndcg: also report nDCG@k beside each recall.
        progress: show a progress bar over the strengths.

    Returns:
        one dict per strength: ``strength``, ``personal_recall@k``, ``segment_recall@k``,
        ``in_segment_recall@k`` (means over the task's users; nan-skipping for users
        with no held-out item in the segment), their standard errors (``..._se``),
        with ``ndcg`` the same for ``personal_ndcg@k``, ``segment_ndcg@k`` and
        ``in_segment_ndcg@k``, ``target_share@k`` (the share of the k places holding
        an item that carries the user's concept by the task's full tags), ``n_users``.

    Raises:
        InputError: a task without users, no strengths, or a strength that is not a
            finite number.
    """
    if len(task.concepts) == 0:
        raise InputError(
            "the steering task has no users (none has a target concept and a non-empty segment)"
        )
    strengths = list(strengths)
    if not strengths:
        raise InputError("sweep needs at least one strength")
    for strength in strengths:
        if isinstance(strength, bool | np.bool_) or not isinstance(strength, numbers.Real):
            raise InputError(f"strengths must be numbers, got {strength!r}")
        if not np.isfinite(strength):
            raise InputError(f"strengths must be finite, got {strength}")
    metrics = [("recall", recall_at_k)] + ([("ndcg", ndcg_at_k)] if ndcg else [])
    results = []
    for strength in tqdm(strengths, desc="sweep", disable=not progress):
        ids, _ = top_n(steerer(task, float(strength)), task.rows, k)
        point: dict[str, float] = {"strength": float(strength), "n_users": len(task.concepts)}
        for name, relevant in (
            ("personal", task.target),
            ("segment", task.segment),
            ("in_segment", task.in_segment),
        ):
            for metric, per_user in metrics:
                values = per_user(ids, relevant, k)
                values = values[np.isfinite(values)]
                key = f"{name}_{metric}@{k}"
                point[key] = float(values.mean()) if len(values) else float("nan")
                point[f"{key}_se"] = (
                    float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
                )
        point[f"target_share@{k}"] = float(_list_share(ids, task.carries, k).mean())
        results.append(point)
    return results


def choose_point(curve: Sequence[dict[str, float]], keep: float = 0.95, k: int = 20) -> dict:
    """The point of a sweep (``curve[0]`` unsteered) with the largest segment recall
    among those keeping at least ``keep`` of the unsteered personal recall.

    Returns:
        the chosen point plus ``segment_gain@k`` and ``personal_kept@k`` against
        ``curve[0]`` (the unsteered point qualifies, so there is always one).
    """
    base = curve[0]
    floor = keep * base[f"personal_recall@{k}"]
    ok = [p for p in curve if p[f"personal_recall@{k}"] >= floor - 1e-12] or [base]
    best = max(ok, key=lambda p: p[f"segment_recall@{k}"])
    return {**best, **point_ratios(best, base, k)}


def point_ratios(point: dict, base: dict, k: int = 20) -> dict[str, float]:
    """``segment_gain@k`` and ``personal_kept@k`` of ``point`` against ``base``."""
    return {
        f"segment_gain@{k}": point[f"segment_recall@{k}"] / max(base[f"segment_recall@{k}"], 1e-12),
        f"personal_kept@{k}": point[f"personal_recall@{k}"]
        / max(base[f"personal_recall@{k}"], 1e-12),
    }


def steering_sweep(
    model,
    split: Split,
    item_tags: sp.csr_matrix,
    knobs: ConceptKnobs,
    strengths: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    rule: str = DEFAULT_RULE,
    k: int = 20,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Personal and segment Recall/nDCG@k and target share of the test users for each
    strength: :func:`sweep` of :func:`sae_steerer` over
    ``steering_task(split.test_input, split.test_target, item_tags)``.

    Against the older copy of this sweep it replaces (the same figures on
    :func:`~steercf.evaluation.split_users` splits): the users are
    :func:`steering_task`'s, so a user whose segment is empty is now dropped rather
    than kept (such a segment needs every unseen item of the concept to be missing,
    yet the held-out item that made it the target is one: only a split whose input and
    held-out items overlap has any); nDCG is still reported (``sweep(..., ndcg=True)``);
    the target share still counts the full ``item_tags``; an empty list slot (id -1)
    is now no hit rather than the last item.

    Args:
        model: a fitted :class:`~steercf.models.spliced.SplicedRecommender`.
        split: its split; the test users are steered.
        item_tags: (n_items, n_tags) the concept source ``knobs`` maps (same columns).
        knobs: concept -> latent resolution (mapping and top-m latents).
        strengths: the strengths to sweep (finite; 0 is unsteered).
        rule: ``"convex"`` or ``"additive"``.
        k: list length.
        progress: show a progress bar over the strengths.

    Returns:
        :func:`sweep`'s dicts with nDCG, one per strength: ``strength``,
        ``personal_recall@k``, ``personal_ndcg@k``, ``segment_recall@k``,
        ``segment_ndcg@k``, ``target_share@k``, ``n_users``, plus the in-segment
        metrics and the standard errors (``..._se``).
    """
    task = steering_task(split.test_input, split.test_target, item_tags)
    steerer = sae_steerer(model, knobs, rule)
    return sweep(steerer, task, strengths, k, ndcg=True, progress=progress)


def suppression(
    model,
    split: Split,
    item_tags: sp.csr_matrix,
    knobs: ConceptKnobs,
    strength: float = -1.0,
    rule: str = DEFAULT_RULE,
    k: int = 20,
) -> dict[str, float]:
    """Steer each test user away from the tag most present in their unsteered top-k
    (every test user; one whose list carries no tag is steered from tag 0), with
    :func:`sae_steerer` and scored by :func:`sweep` at strengths 0 and ``strength``.

    Args:
        model: a fitted :class:`~steercf.models.spliced.SplicedRecommender`.
        split: its split; the test users are steered.
        item_tags: (n_items, n_tags) the concept source ``knobs`` maps (same columns).
        knobs: concept -> latent resolution.
        strength: how far away, < 0.
        rule: ``"convex"`` or ``"additive"``.
        k: list length.

    Returns:
        ``suppressed_share_before@k``, ``suppressed_share@k`` (mean share of the list
        carrying the suppressed tag), ``personal_recall_before@k``,
        ``personal_recall@k`` (held-out recall, nan-skipping) and ``drop``
        (1 - after / before; nan when no list carried any tag).

    Against the older copy it replaces (the same figures on
    :func:`~steercf.evaluation.split_users` splits): a strength >= 0 is now refused,
    personal recall skips users without held-out items (was nan for all), and an empty
    list slot (id -1) is no hit rather than the last item.

    Raises:
        InputError: a strength that is not a finite number < 0.
    """
    if isinstance(strength, bool | np.bool_) or not isinstance(strength, numbers.Real):
        raise InputError(f"strength must be a number, got {strength!r}")
    if not strength < 0:
        raise InputError(f"suppression steers away: strength must be < 0, got {strength}")
    rows, target = split.test_input, split.test_target
    steerer = sae_steerer(model, knobs, rule)
    # the suppressed tag is read off the steerer's own unsteered lists (strength 0
    # ignores the concepts, so any placeholder serves)
    placeholder = np.zeros(rows.shape[0], dtype=np.int64)
    before, _ = top_n(steerer(_task(rows, target, placeholder, item_tags, item_tags), 0.0), rows, k)
    valid = before >= 0
    users = np.broadcast_to(np.arange(len(before))[:, None], before.shape)
    listed = sp.csr_matrix((np.ones(valid.sum()), (users[valid], before[valid])), shape=rows.shape)
    concepts = np.asarray((listed @ (item_tags > 0).astype(np.float64)).argmax(axis=1)).ravel()
    task = _task(rows, target, concepts, item_tags, item_tags)
    unsteered, steered = sweep(steerer, task, [0.0, strength], k)
    share_before = unsteered[f"target_share@{k}"]
    share_after = steered[f"target_share@{k}"]
    return {
        f"suppressed_share_before@{k}": share_before,
        f"suppressed_share@{k}": share_after,
        # a suppressed list should stay the user's: held-out recall without the concept
        f"personal_recall_before@{k}": unsteered[f"personal_recall@{k}"],
        f"personal_recall@{k}": steered[f"personal_recall@{k}"],
        "drop": float(1 - share_after / share_before) if share_before > 0 else float("nan"),
    }


def steering_latency(
    model, user_rows: sp.csr_matrix, knob, rule: str = DEFAULT_RULE, k: int = 20, repeats: int = 30
) -> dict[str, float]:
    """Median milliseconds for an unsteered and a steered top-k of ``user_rows`` (the
    whole path: validate, encode, edit, decode, mask, top-k).

    The two calls alternate, after one warm-up call each, so that load from other
    processes and cache effects fall on both alike."""

    def unsteered() -> None:
        model.recommend(user_rows, N=k)

    def steered() -> None:
        steer(model, user_rows, [knob], rule, N=k)

    times: dict[str, list[float]] = {"unsteered_ms": [], "steered_ms": []}
    unsteered(), steered()
    for _ in range(repeats):
        for name, call in (("unsteered_ms", unsteered), ("steered_ms", steered)):
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}
