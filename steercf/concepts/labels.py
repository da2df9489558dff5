"""Human-readable latent labels, stored with the model as ``labels.json``.

A latent's top items are, by default, the items whose audience activates it most: each
item's mean code over the training users who hold it, shrunk toward the mean code
(:func:`~steercf.concepts.controls.audience_activations`; ``item_activations="one_hot"``
reads one-item histories, as published). A live latent (one with an active item) carries:

* its **evidence label** (:mod:`steercf.concepts.evidence`): the concept its top items
  support best, with how well it holds (hits among the top items, precision, recall,
  lift over the base rate, hypergeometric p-value, expected precision). It is
  *labelled* only when its hits are above chance and its expected precision clears a
  threshold chosen on held-out items (the loosest one whose labels reach
  ``target_precision`` precision@10 on validation items); otherwise the text says
  ``unlabelled`` and shows its top items, which is honest and still useful, e.g.
  ``Horror [7/10 top items, lift 6.2] | Scream (1996); Halloween (1978)`` or
  ``unlabelled (top items: Heat (1995); Casino (1995); Sabrina (1995))``. No concept
  takes more than 10 % of the labels unless it covers more than 10 % of the items
  (:func:`~steercf.concepts.evidence.capped_concepts`): past its share, a latent gets
  its next-best concept that clears the threshold, else stays unlabelled;
* its best concepts under a published mapping (default "best characterizes", TF-IDF),
  kept for reproducing the steerable-CF tables (``concepts``);
* the titles of the items that activate it most.

The labels file sits inside the spliced model's directory and records the SAE's
fingerprint and width, so labels of another model (or of a retrained one) are refused
on load instead of silently describing the wrong latents.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, overload

import numpy as np

from steercf.concepts.controls import audience_activations
from steercf.concepts.evidence import (
    DEFAULT_MIN_HITS,
    DEFAULT_TARGET_PRECISION,
    DEFAULT_TOP_K,
    LABELLING_OFF,
    MAX_CONCEPT_SHARE,
    SIGNIFICANCE,
    PairEvidence,
    capped_concepts,
    choose_threshold,
    judging_depth,
    labelling_curve,
    pair_evidence,
    reaching_points,
    split_items,
)
from steercf.concepts.mapping import (
    ItemActs,
    as_activations,
    available_sources,
    map_concepts,
    top_items,
)
from steercf.concepts.sources import label_concepts
from steercf.data import InteractionData, ItemTags
from steercf.errors import InputError, ModelFileError
from steercf.io import read_model_config, resolve_model_dir, update_model_dir
from steercf.ranking import whole_number

LABELS_FILE = "labels.json"
LABELS_FORMAT = "steercf-latent-labels"
LABELS_VERSION = 3  # 3: audience activations (2: one-hot item codes; 1: p-value thresholds)
DEAD_TEXT = "(dead: fires for no single item)"
# what a dead latent's text says, per item activations of label_model
DEAD_TEXTS = {"audience": "(dead: active for no training user)", "one_hot": DEAD_TEXT}
MIN_ITEMS_TO_CHOOSE = 100  # fewer items: no held-out split, the strictest threshold


@dataclass
class LatentLabel:
    """What one latent stands for.

    Attributes:
        latent: the latent (SAE latent) id.
        live: whether an item activates it in the activations labelled: by default
            (:func:`label_model`), whether any training user does; with one-hot
            activations, whether any single-item history does.
        n_items: number of items whose one-hot history activates it.
        concepts: ``[(source, concept, score), ...]``, best first within each source.
        top_items: ``[(item id, title, activation), ...]``, strongest first; the item id is
            the data set's original id, as a string.
        text: the one-line label.
        evidence: the best-supported concept over all sources and how well it holds:
            ``{"source", "concept", "hits", "n_top", "precision", "recall", "lift",
            "p_value", "expected_precision", "threshold"}`` (None for a dead latent or
            one without any hit).
        labelled: whether that evidence clears its source's threshold (the text then
            names the concept; otherwise it says ``unlabelled``).
        n_users: users whose code has it active (the training users given to
            :func:`label_model`: what users meet); None when not counted (label files
            written before it was recorded, :func:`label_latents` alone).
    """

    latent: int
    live: bool
    n_items: int = 0
    concepts: list[tuple[str, str, float]] = field(default_factory=list)
    top_items: list[tuple[str, str, float]] = field(default_factory=list)
    text: str = DEAD_TEXT
    evidence: dict[str, Any] | None = None
    labelled: bool = False
    n_users: int | None = None


@dataclass
class LatentLabels:
    """Labels of every latent of one model (``labels[i].latent == i``).

    Attributes:
        labels: one :class:`LatentLabel` per latent, in latent order.
        mapping: the concept mapping the labels were chosen by.
        sources: the concept sources used.
        sae_fingerprint: the model's SAE fingerprint (``config.json``), or None.
    """

    labels: list[LatentLabel]
    mapping: str = "best_characterizes"
    sources: list[str] = field(default_factory=list)
    sae_fingerprint: str | None = None

    @property
    def n_latents(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, latent: int) -> LatentLabel:
        if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)):
            raise InputError(f"a latent is an integer id, got {latent!r}")
        if not 0 <= int(latent) < len(self.labels):
            raise InputError(
                f"latent {latent} out of range: the model has {len(self.labels)} latents "
                f"(0..{len(self.labels) - 1})"
            )
        return self.labels[int(latent)]

    def live(self) -> list[LatentLabel]:
        """The labels of live latents, in latent order."""
        return [label for label in self.labels if label.live]


def label_text(
    concepts: Sequence[tuple[str, str, float]], titles: Sequence[str], per_source: int = 2
) -> str:
    """``"concept, concept; source: concept | title; title"``: the first source's concepts
    bare, later sources prefixed by their name (so genres read plainly)."""
    parts: list[str] = []
    seen: dict[str, list[str]] = {}
    for source, concept, _ in concepts:
        seen.setdefault(source, [])
        if len(seen[source]) < per_source:
            seen[source].append(concept)
    for i, (source, names) in enumerate(seen.items()):
        parts.append(", ".join(names) if i == 0 else f"{source}: {', '.join(names)}")
    text = "; ".join(parts)
    if titles:
        text = f"{text} | {'; '.join(titles)}" if text else "; ".join(titles)
    return text or "(no concept)"


def evidence_text(evidence: Mapping[str, Any], titles: Sequence[str]) -> str:
    """``"Concept [hits/n top items, lift L] | title; title"`` of a labelled latent."""
    text = (
        f"{evidence['concept']} [{evidence['hits']}/{evidence['n_top']} top items, "
        f"lift {evidence['lift']:.1f}]"
    )
    return f"{text} | {'; '.join(titles)}" if titles else text


def unlabelled_text(titles: Sequence[str]) -> str:
    """``"unlabelled (top items: title; title)"``: a latent without enough evidence."""
    return f"unlabelled (top items: {'; '.join(titles)})" if titles else "unlabelled"


def evidence_threshold(
    acts: np.ndarray,
    tags: ItemTags | Any,
    live: np.ndarray,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    seed: int = 0,
    k: int = DEFAULT_TOP_K,
) -> float:
    """The expected-precision threshold of one concept source, chosen on held-out items:
    evidence from 60 % of the items (read at the judge's depth, :func:`judging_depth`),
    the loosest threshold whose labels reach ``target_precision`` precision@k on
    another 20 % (:func:`choose_threshold`). ``LABELLING_OFF`` (labels nothing) when
    none does, or with fewer than MIN_ITEMS_TO_CHOOSE items: then no latent of this
    source is labelled, whatever its evidence on all items."""
    if acts.shape[0] < MIN_ITEMS_TO_CHOOSE:
        return LABELLING_OFF
    fit, val, _ = split_items(acts.shape[0], seed)
    pairs = pair_evidence(acts, tags, fit, judging_depth(k, len(fit), len(val)))
    curve = labelling_curve(pairs.evidence(pairs.best()), acts, tags, val, live, k=k)
    if not reaching_points(curve, target_precision, k):
        return LABELLING_OFF
    return choose_threshold(curve, target_precision, k)


def label_latents(
    item_acts: ItemActs,
    titles: Sequence[str],
    concept_sets: Mapping[str, ItemTags],
    item_ids: Sequence[Any] | None = None,
    mapping: str = "best_characterizes",
    top_concepts: int = 3,
    top_titles: int = 3,
    sae_fingerprint: str | None = None,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    thresholds: Mapping[str, float] | None = None,
    seed: int = 0,
    mapping_acts: ItemActs | None = None,
) -> LatentLabels:
    """Label every latent from the evidence of its top items (see the module docstring).

    Args:
        item_acts: (n_items, n_latents) non-negative SAE item activations.
        titles: (n_items,) item titles.
        concept_sets: ``source -> ItemTags`` (n_items rows each).
        item_ids: (n_items,) original ids (default: the item index).
        mapping: a key of :data:`~steercf.concepts.mapping.MAPPINGS`.
        top_concepts: concepts kept per source per latent.
        top_titles: top items the one-line text names.
        sae_fingerprint: stamped into the labels so that they can be matched to the model.
        target_precision: the held-out precision@10 a labelled latent's source must reach
            (:func:`evidence_threshold`).
        thresholds: ``source -> expected-precision threshold`` to use instead of
            choosing one.
        seed: the item split the thresholds are chosen on.
        mapping_acts: (n_items, n_latents) the activations the published ``mapping``
            reads (default: ``item_acts``; :func:`label_model` passes the one-hot codes,
            the ``S`` of the papers).

    Returns:
        :class:`LatentLabels` with one entry per latent; dead latents get
        ``live=False`` and a fixed text.
    """
    acts = as_activations(item_acts)
    if len(titles) != acts.shape[0]:
        raise InputError(f"{len(titles)} titles for {acts.shape[0]} items")
    ids = [str(i) for i in (item_ids if item_ids is not None else range(acts.shape[0]))]
    published = acts if mapping_acts is None else as_activations(mapping_acts)
    if published.shape != acts.shape:
        raise InputError(
            f"mapping_acts has shape {published.shape}, item_acts {acts.shape}: they must match"
        )
    mappings = {
        source: map_concepts(published, tags, mapping) for source, tags in concept_sets.items()
    }
    # the evidence counts the top DEFAULT_TOP_K items: keep them all, so that a reader
    # can check "9 of its 10 top items"; the one-line text names the first top_titles
    tops = top_items(acts, max(top_titles, DEFAULT_TOP_K))
    active_counts = (acts > 0).sum(axis=0)
    live = active_counts > 0
    chosen = dict(thresholds or {})
    pairs = {}
    for source, tags in concept_sets.items():
        if source not in chosen:
            chosen[source] = evidence_threshold(acts, tags, live, target_precision, seed)
        pairs[source] = pair_evidence(acts, tags)
    assigned = _capped_labels(pairs, chosen, acts.shape[1])
    labels = []
    for latent in range(acts.shape[1]):
        if active_counts[latent] == 0:
            labels.append(LatentLabel(latent, live=False))
            continue
        concepts = [
            (source, name, score)
            for source, result in mappings.items()
            for name, score in result.concepts_for(latent, top_concepts)
            if score > 0
        ]
        items = [(ids[i], str(titles[i]), float(acts[i, latent])) for i in tops[latent] if i >= 0]
        labelled = assigned[latent] is not None
        if labelled:
            source, column = assigned[latent]
            best = _evidence_entry(source, pairs[source], column, latent, concept_sets, chosen)
        else:  # shown with its strongest evidence, which did not make a label
            best = _best_evidence(pairs, concept_sets, chosen, latent)
            if best is not None and _clears(best):
                best["capped"] = True  # its concept had its share of the labels
        item_titles = [t for _, t, _ in items[:top_titles]]
        labels.append(
            LatentLabel(
                latent=latent,
                live=True,
                n_items=int(active_counts[latent]),
                concepts=concepts,
                top_items=items,
                text=evidence_text(best, item_titles) if labelled else unlabelled_text(item_titles),
                evidence=best,
                labelled=bool(labelled),
            )
        )
    return LatentLabels(labels, mapping, list(concept_sets), sae_fingerprint)


def _capped_labels(
    pairs: Mapping[str, PairEvidence], thresholds: Mapping[str, float], n_latents: int
) -> list[tuple[str, int] | None]:
    """Each latent's label ``(source, concept column)`` or None: among the pairs of
    every source that clear their source's threshold (with ``DEFAULT_MIN_HITS`` hits),
    the strongest, under the concept cap (:func:`capped_concepts`: no concept takes more
    than 10 % of the labels unless it covers more than 10 % of the items)."""
    sources = list(pairs)
    if not any(pairs[s].hits.shape[1] for s in sources):  # no source or no concept
        return [None] * n_latents
    score = np.hstack([pairs[s].strength_order() for s in sources])
    eligible = np.hstack([pairs[s].eligible(thresholds[s]) for s in sources])
    share = np.concatenate([pairs[s].item_share() for s in sources])
    owner = [(s, c) for s in sources for c in range(pairs[s].hits.shape[1])]
    chosen = capped_concepts(score, eligible, share)
    return [owner[c] if c >= 0 else None for c in chosen]


def _clears(entry: Mapping[str, Any]) -> bool:
    """Whether an evidence entry is above chance and clears its threshold."""
    return (
        entry["p_value"] <= SIGNIFICANCE
        and entry["hits"] >= DEFAULT_MIN_HITS
        and entry["expected_precision"] >= entry["threshold"]
    )


def _evidence_entry(
    source: str,
    pairs: PairEvidence,
    column: int,
    latent: int,
    concept_sets: Mapping[str, ItemTags],
    thresholds: Mapping[str, float],
) -> dict[str, Any]:
    """The evidence of one (latent, concept) pair, as stored in ``labels.json``."""
    hits, n_top = int(pairs.hits[latent, column]), int(pairs.n_top[latent])
    n_concept = int(pairs.n_concept[column])
    precision = hits / n_top if n_top else 0.0
    base_rate = n_concept / max(pairs.n_items, 1)
    return {
        "source": source,
        "concept": str(concept_sets[source].names[column]),
        "hits": hits,
        "n_top": n_top,
        "precision": float(precision),
        "recall": float(hits / n_concept) if n_concept else 0.0,
        "lift": float(precision / base_rate) if base_rate > 0 else 0.0,
        "p_value": float(pairs.p_value[latent, column]),
        "expected_precision": float(pairs.expected_precision()[latent, column]),
        "threshold": float(thresholds[source]),
    }


def _best_evidence(
    pairs: Mapping[str, PairEvidence],
    concept_sets: Mapping[str, ItemTags],
    thresholds: Mapping[str, float],
    latent: int,
) -> dict[str, Any] | None:
    """The best-supported concept over all sources for one latent (above chance by
    expected precision first, then by p-value; :meth:`PairEvidence.best`), as a dict."""
    best, best_key = None, None
    for source, ev in pairs.items():
        if not ev.hits.shape[1] or ev.n_top[latent] == 0:
            continue
        order = ev.strength_order()[latent]  # this latent's row of PairEvidence.best
        column = int(np.argmin(order))
        if ev.hits[latent, column] == 0:
            continue
        entry = _evidence_entry(source, ev, column, latent, concept_sets, thresholds)
        key = -float(order[column])
        if best_key is None or key > best_key:
            best, best_key = entry, key
    return best


def label_model(
    model: Any,
    data: InteractionData,
    train_users: np.ndarray | None = None,
    sources: Sequence[str] | None = None,
    mapping: str = "best_characterizes",
    item_activations: str = "audience",
    audience: np.ndarray | None = None,
    **options: Any,
) -> LatentLabels:
    """Labels for a fitted SplicedRecommender from the concept sources of ``data``.

    Args:
        model: the spliced model (its ``n_items_`` must match ``data``).
        data: the data set it was trained on.
        train_users: ``Split.train_users``: user tags are counted from these users only,
            and the audience activations read these users (None: every user of
            ``data``, held-out users included).
        sources: concept sources (default: every source ``data`` has).
        mapping: the published mapping of each label's ``concepts`` (read on the one-hot
            codes, as published, whatever ``item_activations``).
        item_activations: what a latent's top items are: ``"audience"`` (default; each
            item's mean code over the users who hold it,
            :func:`~steercf.concepts.controls.audience_activations`) or
            ``"one_hot"`` (the code of the item's one-item history, as published).
        audience: (n_items, n_latents) the audience activations of ``train_users``,
            when the caller has them already (the explorer shows them too); computed
            here otherwise.
        options: passed to :func:`label_latents` (top_concepts, top_titles).

    Raises:
        InputError: another item count, an unknown ``item_activations``, or
            ``audience`` of another shape.
    """
    if model.n_items_ != data.n_items:
        raise InputError(f"the model scores {model.n_items_} items but the data has {data.n_items}")
    if item_activations not in ("audience", "one_hot"):
        raise InputError(
            f"item_activations must be 'audience' or 'one_hot', got {item_activations!r}"
        )
    users = data.matrix if train_users is None else data.matrix[np.asarray(train_users)]
    one_hot = model.item_codes().numpy()  # the published S: the mapping's input
    if item_activations == "one_hot":
        acts = one_hot
    elif audience is None:
        acts = audience_activations(model, users)
    else:
        acts = np.asarray(audience)
        if acts.shape != one_hot.shape:
            raise InputError(f"audience has shape {acts.shape}, expected {one_hot.shape}")
    concept_sets = {}
    for source in sources or available_sources(data):
        # labels read "director of Pulp Fiction (1994), ...", not "directed_by:m.0bln8"
        concept_sets[source] = label_concepts(data, source, train_users)
    labels = label_latents(
        acts,
        data.titles(np.arange(data.n_items)),
        concept_sets,
        item_ids=data.item_ids,
        mapping=mapping,
        sae_fingerprint=model.sae_fingerprint(),
        mapping_acts=one_hot,
        **options,
    )
    # what the listings show: training users a latent is active for, and the one-item
    # histories it fires for (every item has a positive audience activation)
    for label, n_users, n_items in zip(
        labels.labels, model.activation_counts(users), (one_hot > 0).sum(axis=0), strict=True
    ):
        label.n_users, label.n_items = int(n_users), int(n_items)
        if not label.live:
            label.text = DEAD_TEXTS[item_activations]
    return labels


# ----------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------
def _model_identity(model_dir: Path) -> tuple[str | None, int | None]:
    """(SAE fingerprint, number of latents) of a spliced model directory, from its JSON
    configs only (no tensors are read). ``model_dir``: a model path or a version directory."""
    try:
        config = read_model_config(model_dir)
        sae = read_model_config(model_dir, child="sae")
    except ModelFileError as err:
        raise ModelFileError(f"{model_dir} is not a spliced model directory ({err})") from err
    width = sae.get("width")
    try:
        n_latents = width if width is not None else sae.get("expansion", 0) * sae.get("d_in", 0)
        return config.get("sae_fingerprint"), int(n_latents) if n_latents else None
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{model_dir}: unreadable SAE config: {err}") from err


def _labels_payload(labels: LatentLabels, fingerprint: str | None) -> dict[str, Any]:
    return {
        "format": LABELS_FORMAT,
        "version": LABELS_VERSION,
        "n_latents": labels.n_latents,
        "sae_fingerprint": labels.sae_fingerprint or fingerprint,
        "mapping": labels.mapping,
        "sources": labels.sources,
        "labels": [asdict(label) for label in labels.labels],
    }


def labels_json(labels: LatentLabels, model: Any) -> dict[str, Any]:
    """``{"labels.json": payload}`` for ``model.save(path, extra_json=...)``: labels saved
    in the same atomic step as the model, so no saved model lacks them.

    Raises:
        ModelFileError: labels of another model (SAE fingerprint or number of latents).
    """
    fingerprint = model.sae_fingerprint()
    _check_identity(labels, fingerprint, model.n_latents, Path("<the model being saved>"))
    return {LABELS_FILE: _labels_payload(labels, fingerprint)}


def save_labels(model_dir: str | os.PathLike, labels: LatentLabels) -> Path:
    """Write ``labels.json`` into a saved spliced model, atomically (a new version of
    the model directory, :func:`steercf.io.update_model_dir`).

    Raises:
        ModelFileError: not a spliced model directory, or labels for another model
            (different SAE fingerprint or number of latents).
    """
    model_dir = Path(model_dir)

    def files(version_dir: Path) -> dict[str, Any]:  # under the writers' lock
        fingerprint, n_latents = _model_identity(version_dir)
        _check_identity(labels, fingerprint, n_latents, model_dir)
        return {LABELS_FILE: _labels_payload(labels, fingerprint)}

    _model_identity(model_dir)  # a clear error before taking the lock
    update_model_dir(model_dir, files)
    return resolve_model_dir(model_dir) / LABELS_FILE


def has_labels(model_dir: str | os.PathLike) -> bool:
    """Whether a saved model carries ``labels.json`` of this steercf's version (labels of
    an earlier version are derived data to compute again, not to read)."""
    try:
        path = resolve_model_dir(model_dir) / LABELS_FILE
        if not path.is_file():
            return False
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("version") == LABELS_VERSION
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return True  # present but corrupt: load_labels names the problem
    except ModelFileError:
        return False


@overload
def load_labels(model_dir: str | os.PathLike, missing_ok: Literal[False] = ...) -> LatentLabels: ...
@overload
def load_labels(model_dir: str | os.PathLike, missing_ok: bool) -> LatentLabels | None: ...
def load_labels(model_dir: str | os.PathLike, missing_ok: bool = False) -> LatentLabels | None:
    """Read and validate ``labels.json`` of a spliced model directory.

    With ``missing_ok``, None instead of an error when there is no labels file or one of
    an earlier version (derived data to compute again): what :func:`has_labels` then
    :func:`load_labels` would give, reading the file once.

    Raises:
        ModelFileError: no labels file (the message says how to make one), corrupt JSON,
            a wrong format or version, or labels of another model / another width.
    """
    model_dir = Path(model_dir)
    version_dir = resolve_model_dir(model_dir)  # once: the labels and the configs agree
    path = version_dir / LABELS_FILE
    fingerprint, n_latents = _model_identity(version_dir)
    if missing_ok and not path.is_file():
        return None
    if not path.is_file():
        raise ModelFileError(
            f"{model_dir} has no latent labels ({LABELS_FILE}); create them with "
            "steercf.concepts.save_labels(model_dir, label_model(model, data))"
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != LABELS_FORMAT:
            raise ModelFileError(f"{path} is not a steercf latent labels file")
        if payload.get("version") != LABELS_VERSION:
            if missing_ok:
                return None
            raise ModelFileError(
                f"{path} has labels version {payload.get('version')}; "
                f"this steercf reads version {LABELS_VERSION}"
            )
        labels = LatentLabels(
            labels=[_label_from_json(entry) for entry in payload["labels"]],
            mapping=str(payload.get("mapping", "best_characterizes")),
            sources=[str(s) for s in payload.get("sources", [])],
            sae_fingerprint=payload.get("sae_fingerprint"),
        )
        declared = int(payload["n_latents"])
    except ModelFileError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ModelFileError(f"corrupt labels file {path}: {err}") from err
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"corrupt labels file {path}: bad or missing field {err}") from err
    if declared != labels.n_latents:
        raise ModelFileError(
            f"corrupt labels file {path}: declares {declared} latents but holds {labels.n_latents}"
        )
    if any(label.latent != i for i, label in enumerate(labels.labels)):
        raise ModelFileError(f"corrupt labels file {path}: latents are not listed in order")
    _check_identity(labels, fingerprint, n_latents, model_dir)
    return labels


def _label_from_json(entry: dict[str, Any]) -> LatentLabel:
    return LatentLabel(
        latent=int(entry["latent"]),
        live=bool(entry["live"]),
        n_items=int(entry.get("n_items", 0)),
        concepts=[(str(s), str(c), float(v)) for s, c, v in entry.get("concepts", [])],
        top_items=[(str(i), str(t), float(v)) for i, t, v in entry.get("top_items", [])],
        text=str(entry["text"]),
        evidence=dict(entry["evidence"]) if entry.get("evidence") else None,
        labelled=bool(entry.get("labelled", False)),
        n_users=None if entry.get("n_users") is None else int(entry["n_users"]),
    )


def _check_identity(
    labels: LatentLabels, fingerprint: str | None, n_latents: int | None, model_dir: Path
) -> None:
    if n_latents is not None and labels.n_latents != n_latents:
        raise ModelFileError(
            f"the labels describe {labels.n_latents} latents but the model in {model_dir} "
            f"has {n_latents}; relabel it"
        )
    if labels.sae_fingerprint and fingerprint and labels.sae_fingerprint != fingerprint:
        raise ModelFileError(
            f"the labels were made for another SAE (fingerprint {labels.sae_fingerprint}, "
            f"the model in {model_dir} has {fingerprint}); relabel it"
        )


# ----------------------------------------------------------------------------------------
# Display
# ----------------------------------------------------------------------------------------
def format_latents(labels: LatentLabels, top: int | None = None, dead: bool = False) -> str:
    """One line per live latent (``dead=True``: all): ``latent  users  items  label``.

    With ``top``, the ``top`` latents active for the most training users first (what
    users meet; ties by the items they fire for), latents no training user activates
    after all the others; else in id order."""
    chosen = labels.labels if dead else labels.live()
    if top is not None:
        top = whole_number(top, "top", minimum=1)  # -3 would silently list all but 3
        chosen = sorted(
            chosen, key=lambda label: (-(label.n_users or 0), -label.n_items, label.latent)
        )
        chosen = chosen[:top]
    width = len(str(max(labels.n_latents - 1, 0)))
    lines = [
        f"{label.latent:>{width}}  {'?' if label.n_users is None else label.n_users:>5} users  "
        f"{label.n_items:>5} items  "
        f"{label.text}"
        for label in chosen
    ]
    live = labels.live()
    n_labelled = sum(label.labelled for label in labels.labels)
    unmet = sum(label.n_users == 0 for label in live)
    counted = any(label.n_users is not None for label in live)
    header = (
        f"{len(live)} live of {labels.n_latents} latents, {n_labelled} labelled by the "
        f"evidence of their top items (`steercf latent` adds the published {labels.mapping} "
        "concepts), "
        + (
            f"{unmet} live ones active for no training user"
            if counted
            else "users not counted (labels written by an older steercf)"
        )
        + "; columns: latent, training users it is active for, single items it fires for, "
        "label"
    )
    return "\n".join([header, *lines])


def format_latent(labels: LatentLabels, latent: int) -> str:
    """A multi-line description of one latent: label, concepts with scores, top items."""
    label = labels[latent]
    lines = [f"latent {label.latent}: {label.text}"]
    if not label.live:
        return lines[0]
    lines.append(
        f"  fires for {label.n_items} single-item histor{'y' if label.n_items == 1 else 'ies'}"
    )
    ev = label.evidence
    if ev:
        if label.labelled:
            verdict = (
                f"labelled: expected precision {ev['expected_precision']:.2f} >= "
                f"{ev['threshold']:.2f}, the threshold chosen for {ev['source']} on "
                "validation items, and above chance"
            )
        elif ev.get("capped"):
            verdict = (
                f"unlabelled: {ev['concept']} already labels {MAX_CONCEPT_SHARE:.0%} of the "
                "labelled latents (the cap for a concept on fewer of the items), and no "
                "other concept clears its threshold"
            )
        elif ev["threshold"] > 1:
            verdict = (
                f"unlabelled: labelling is off for {ev['source']}, since no threshold gave "
                "its labels the target precision@10 on held-out items"
            )
        elif ev["p_value"] > SIGNIFICANCE:
            verdict = f"unlabelled: its hits are within chance (p > {SIGNIFICANCE})"
        else:
            verdict = (
                f"unlabelled: expected precision {ev['expected_precision']:.2f} below the "
                f"threshold {ev['threshold']:.2f}"
            )
        lines.append(f"  evidence ({verdict}):")
        lines.append(
            f"    {ev['source']} {ev['concept']}: {ev['hits']} of its {ev['n_top']} top items "
            f"(precision {ev['precision']:.2f}, recall {ev['recall']:.3f}, lift "
            f"{ev['lift']:.1f}, hypergeometric p {ev['p_value']:.1e}, expected precision "
            f"{ev['expected_precision']:.2f}: the precision shrunk toward the base rate)"
        )
    if label.concepts:
        lines.append(f"  concepts ({labels.mapping}):")
        lines += [f"    {source:<8} {name}  {score:.4f}" for source, name, score in label.concepts]
    if label.top_items:
        lines.append("  top items:")
        lines += [f"    {title} [id {item}]  {value:.4f}" for item, title, value in label.top_items]
    return "\n".join(lines)


def print_latent(labels: LatentLabels, latent: int, file: TextIO | None = None) -> None:
    """Print :func:`format_latent` (to stdout by default)."""
    print(format_latent(labels, latent), file=file or sys.stdout)
