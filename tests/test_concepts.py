"""Concept <-> latent mappings, monosemanticity measures, controls and latent labels."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from steercf.concepts import (
    AUDIENCE_PRIOR,
    MAPPINGS,
    activation_auc,
    activation_correlation,
    audience_activations,
    audience_means,
    best_characterizes,
    concept_tags,
    concepts_report,
    format_comparison,
    format_latent,
    format_latents,
    format_report,
    format_reports,
    label_concepts,
    label_latents,
    label_model,
    load_labels,
    model_activations,
    monosemanticity_report,
    most_unique,
    plot_reports,
    save_labels,
    signed_split,
    specificity,
    tag_unit_means,
    tags_from_applications,
    tags_from_mapping,
    tfidf,
    top_item_precision,
)
from steercf.concepts.evidence import PRIOR_STRENGTH
from steercf.concepts.mapping import get_mapping, map_concepts
from steercf.concepts.report import SPECIFICITY_KEYS, random_orthogonal
from steercf.data import ItemTags, load_dataset
from steercf.errors import InputError, ModelFileError, UnknownIdError
from steercf.evaluation import split_users
from steercf.io import resolve_model_dir
from steercf.models import ELSA
from steercf.models.spliced import SplicedRecommender
from steercf.sae import TrainConfig

# ---- the toy case ----------------------------------------------------------------------
# 4 items, 2 tags, 3 latents. Items 0-1 carry "action", items 2-3 carry "drama".
# Latent 0 fires on everything (strongly), latent 1 only on the action items (weakly),
# latent 2 only on the drama items (weakly).
TOY_ACTS = np.array(
    [
        [2.0, 1.0, 0.0],
        [4.0, 1.0, 0.0],
        [3.0, 0.0, 1.0],
        [3.0, 0.0, 1.0],
    ]
)
TOY_TAGS = ItemTags(
    sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)),
    np.array(["action", "drama"]),
)
# A = P S (tag rows of T normalised): mean activation over each tag's items
TOY_A = np.array([[3.0, 1.0, 0.0], [3.0, 0.0, 1.0]])


def test_tfidf_matches_the_reference_formula():
    x = np.array([[1.0, 0.0], [3.0, 2.0]])  # 2 terms x 2 documents
    # tf: columns normalised -> [[1/4, 0], [3/4, 1]]; df = [1, 2]; N = 2
    idf = np.array([math.log(3 / 2) + 1, math.log(3 / 3) + 1])
    expected = np.array([[0.25, 0.0], [0.75, 1.0]]) * idf[:, None]
    np.testing.assert_allclose(tfidf(x), expected)


def test_best_characterizes_on_the_toy_case():
    mapping = best_characterizes(TOY_ACTS, TOY_TAGS)
    # tfidf(A^T): latents are terms, tags documents. Tag columns of A^T sum to 4 and 4:
    # tf = [[3/4, 3/4], [1/4, 0], [0, 1/4]]. Latent 0 is non-zero for both tags (df 2,
    # idf ln(3/3) + 1 = 1); latents 1 and 2 for one (idf ln(3/2) + 1).
    rare = math.log(3 / 2) + 1
    expected = np.array([[0.75, 0.25 * rare, 0.0], [0.75, 0.0, 0.25 * rare]])
    np.testing.assert_allclose(mapping.scores, expected)
    # the strong, shared latent 0 best characterizes both tags ...
    assert mapping.latents_for("action", top=1) == [(0, pytest.approx(0.75))]
    assert mapping.latents_for("drama")[0][0] == 0
    assert [n for n, _ in mapping.latents_for("drama")] == [0, 2, 1]
    # ... and the latent -> label direction reads columns: latent 1 is "action"
    assert mapping.concepts_for(1)[0] == ("action", pytest.approx(0.25 * rare))
    assert mapping.concepts_for(2)[0][0] == "drama"
    assert mapping.concepts_for(0)[0][0] == "action"  # tie 0.75/0.75: lower index first
    np.testing.assert_array_equal(mapping.best_latents(), [0, 0])
    np.testing.assert_array_equal(mapping.top_concepts(), [0, 0, 1])


def test_most_unique_on_the_toy_case():
    mapping = most_unique(TOY_ACTS, TOY_TAGS)
    # tfidf(A): tags are terms, latents documents. Latent columns of A sum to 6, 1, 1:
    # tf = [[1/2, 1, 0], [1/2, 0, 1]]; each tag is non-zero in 2 of 3 latents:
    # idf = ln(4/3) + 1.
    idf = math.log(4 / 3) + 1
    expected = np.array([[0.5, 1.0, 0.0], [0.5, 0.0, 1.0]]) * idf
    np.testing.assert_allclose(mapping.scores, expected)
    # the latent that is *only* about a tag wins, unlike "best characterizes"
    assert mapping.latents_for("action", top=1) == [(1, pytest.approx(idf))]
    assert mapping.latents_for("drama", top=1)[0][0] == 2
    np.testing.assert_array_equal(mapping.best_latents(), [1, 2])


def test_tag_counts_weight_the_tag_means():
    # item 1 carries "action" 3 times: A[action] = (1 * S[0] + 3 * S[1]) / 4
    counts = TOY_TAGS.matrix.toarray()
    counts[1, 0] = 3
    means = tag_unit_means(TOY_ACTS, sp.csr_matrix(counts))
    np.testing.assert_allclose(means[0], (TOY_ACTS[0] + 3 * TOY_ACTS[1]) / 4)
    np.testing.assert_allclose(tag_unit_means(TOY_ACTS, TOY_TAGS), TOY_A)


def test_top_item_precision_on_the_toy_case():
    mapping = top_item_precision(TOY_ACTS, TOY_TAGS, k=2)
    # latent 0's top 2 items: item 1 (4.0) then item 2 (3.0, tie with item 3: lower index)
    # -> one action, one drama. Latent 1: items 0, 1 (both action). Latent 2: items 2, 3.
    expected = np.array([[0.5, 1.0, 0.0], [0.5, 0.0, 1.0]])
    np.testing.assert_allclose(mapping.scores, expected)
    assert mapping.latents_for("action", top=1) == [(1, 1.0)]


def test_top_item_precision_uses_only_active_items():
    acts = np.array([[0.0], [1.0], [0.0], [0.0]])  # fires on item 1 only
    mapping = top_item_precision(acts, TOY_TAGS, k=3)
    np.testing.assert_allclose(mapping.scores[:, 0], [1.0, 0.0])  # 1 of 1, not 1 of 3


def test_activation_auc_and_correlation_on_the_toy_case():
    auc = activation_auc(TOY_ACTS, TOY_TAGS)
    # latent 0 for action: positives {2, 4} vs negatives {3, 3}: 2 of 4 pairs won -> 0.5
    # latent 1 separates action perfectly (1.0), latent 2 is its mirror (0.0)
    np.testing.assert_allclose(auc.scores, [[0.5, 1.0, 0.0], [0.5, 0.0, 1.0]])
    corr = activation_correlation(TOY_ACTS, TOY_TAGS)
    np.testing.assert_allclose(corr.scores[:, 1:], [[1.0, -1.0], [-1.0, 1.0]], atol=1e-12)
    assert corr.scores[0, 0] == pytest.approx(0.0, abs=1e-12)  # mean 3 on both sides
    assert auc.latents_for("drama", top=1)[0][0] == 2


def test_auc_handles_ties_with_mid_ranks():
    acts = np.array([[1.0], [0.0], [1.0], [0.0]])
    # action = items {0, 1} with {1, 0}; drama items {1, 0}: every pair ties or splits
    auc = activation_auc(acts, TOY_TAGS)
    # pairs (pos, neg): (1,1) tie .5, (1,0) win 1, (0,1) loss 0, (0,0) tie .5 -> 2/4
    np.testing.assert_allclose(auc.scores[:, 0], [0.5, 0.5])


def test_mapping_registry_and_both_directions():
    assert {"best_characterizes", "most_unique", "top_item_precision", "activation_auc"} <= set(
        MAPPINGS
    )
    for name in MAPPINGS:
        mapping = map_concepts(TOY_ACTS, TOY_TAGS, name)
        assert mapping.name == name
        assert mapping.scores.shape == (2, 3)
        assert len(mapping.latents_for("action", top=5)) == 3
        assert len(mapping.concepts_for(2, top=5)) == 2
    with pytest.raises(UnknownIdError, match="most_unique"):
        get_mapping("most_uniqe")
    # the decoder mappings live with the model: the error says where
    with pytest.raises(UnknownIdError, match=r"steercf\.steering\.decoder_effect\(model"):
        get_mapping("decoder_effect")


def test_unknown_concept_lists_close_matches():
    mapping = best_characterizes(TOY_ACTS, TOY_TAGS)
    with pytest.raises(UnknownIdError, match="close matches: 'action'") as err:
        mapping.latents_for("acton")
    assert "unknown concept 'acton'" in str(err.value)
    assert mapping.latents_for("ACTION") == mapping.latents_for("action")  # case-blind
    with pytest.raises(UnknownIdError, match="no close match"):
        mapping.latents_for("zzzz")
    with pytest.raises(InputError, match="out of range"):
        mapping.concepts_for(3)
    with pytest.raises(InputError):
        mapping.concepts_for(-1)


def test_dead_latents_are_never_returned():
    acts = np.hstack([TOY_ACTS, np.zeros((4, 1))])
    mapping = activation_auc(acts, TOY_TAGS)  # a dead latent's AUC would be 0.5
    assert 3 not in [n for n, _ in mapping.latents_for("action", top=10)]
    assert mapping.concepts_for(3) == []


def test_inputs_are_validated():
    with pytest.raises(InputError, match="non-negative"):
        best_characterizes(-TOY_ACTS, TOY_TAGS)
    with pytest.raises(InputError, match="rows"):
        best_characterizes(TOY_ACTS[:3], TOY_TAGS)
    # torch tensors are accepted
    mapping = best_characterizes(torch.tensor(TOY_ACTS), TOY_TAGS)
    assert mapping.best_latents().tolist() == [0, 0]


# ---- specificity and the report -----------------------------------------------------------
def test_specificity_formulas():
    one_hot = specificity(np.array([[1.0, 0.0], [0.0, 2.0]]))
    # background p̄ = [1/2, 1/2]: H(p̄) = ln 2; each row has H = 0 -> decrease 1, KL ln 2
    np.testing.assert_allclose(one_hot.entropy, [0.0, 0.0])
    np.testing.assert_allclose(one_hot.decrease, [1.0, 1.0])
    np.testing.assert_allclose(one_hot.kl, [math.log(2)] * 2)
    flat = specificity(np.array([[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]))
    np.testing.assert_allclose(flat.decrease[:2], [0.0, 0.0], atol=1e-12)
    assert np.isnan(flat.decrease[2])  # an all-zero row has no distribution
    mixed = specificity(np.array([[3.0, 1.0], [1.0, 1.0]]))
    # mean KL = H(p̄) - mean H (the identity the module docstring relies on)
    assert mixed.kl.mean() == pytest.approx(mixed.background_entropy - mixed.entropy.mean())


def test_report_on_the_toy_case():
    report = monosemanticity_report(TOY_ACTS, TOY_TAGS, model="toy", source="genres", k=2)
    assert report.n_live == 3 and report.n_concepts == 2
    # labels from tfidf(A^T) rows: latent 0 -> action (tie), 1 -> action, 2 -> drama
    np.testing.assert_array_equal(report.unit_label, [0, 0, 1])
    # precision@2 of the labels: latent 0 {1, 2} -> 1/2, latent 1 {0, 1} -> 1, latent 2 -> 1
    np.testing.assert_allclose(report.unit_precision, [0.5, 1.0, 1.0])
    assert report.summary["label_precision@10"] == pytest.approx(2.5 / 3)
    assert report.summary["distinct_best_latents"] == 1  # latent 0 for both
    assert report.summary["labelled_concepts"] == 2
    # latents 1 and 2 put all their mass on one tag, latent 0 is split evenly, exactly like
    # the background p̄ = mean([.5, .5], [1, 0], [0, 1]) = [.5, .5]
    np.testing.assert_allclose(report.latents.decrease, [0.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(report.latents.kl, [0.0, math.log(2), math.log(2)], atol=1e-12)
    assert report.summary["coverage"] == 1.0
    records = report.records("toy-data")
    assert {r["dataset"] for r in records} == {"toy-data/genres"}
    assert {r["metric"] for r in records} == {
        "entropy_decrease_mean",
        "kl_mean",
        "label_precision@10",
        "distinct_best_latents",
        "labelled_concepts",
        "coverage",
    }
    text = format_report(report, titles=["A", "B", "C", "D"])
    assert "label precision@2" in text and "most specific latents" in text


def test_signed_split_and_rotation_controls():
    x = np.array([[1.0, -2.0], [0.0, 3.0]])
    split = signed_split(x)
    np.testing.assert_array_equal(split, [[1, 0, 0, 2], [0, 3, 0, 0]])
    np.testing.assert_allclose(split[:, :2] - split[:, 2:], x)  # lossless
    q = random_orthogonal(5, seed=1)
    np.testing.assert_allclose(q @ q.T, np.eye(5), atol=1e-10)


def test_audience_means_by_hand():
    # 3 users x 3 items; user activations over 2 units
    held = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 2, 0]], dtype=float))
    acts = np.array([[2.0, 0.0], [4.0, 1.0], [0.0, 3.0]])
    mean = acts.mean(axis=0)
    blocks: list[int] = []

    def user_acts(block):  # the rows of ``acts`` of this block of users
        start = sum(blocks)
        blocks.append(block.shape[0])
        return acts[start : start + block.shape[0]]

    out = audience_means(user_acts, held, prior_users=0.0, batch_size=2)
    assert blocks == [2, 1]  # batched over users
    # item 0: users 0, 1; item 1: users 0, 2 (a repeated interaction counts once);
    # item 2: nobody, so the all-user mean
    np.testing.assert_allclose(out, [[3.0, 0.5], [1.0, 1.5], mean])
    blocks.clear()
    shrunk = audience_means(user_acts, held, prior_users=2.0)
    np.testing.assert_allclose(shrunk[0], ([6.0, 1.0] + 2 * mean) / 4)
    np.testing.assert_allclose(shrunk[2], mean)
    for bad in (-1.0, float("nan")):
        with pytest.raises(InputError, match="prior_users"):
            audience_means(user_acts, held, prior_users=bad)
    with pytest.raises(InputError, match="at least one user"):
        audience_means(user_acts, sp.csr_matrix((0, 3)))


def test_audience_controls_are_the_same_code_path(ml100k_model):
    data, split, model = ml100k_model
    users = split.train[:200]
    acts = model_activations(model, seed=3, user_items=users)
    assert all((a >= 0).all() and a.shape[0] == data.n_items for a in acts.values())
    np.testing.assert_allclose(acts["sae"], audience_activations(model, users), rtol=1e-5)
    # an item's SAE activation is its users' mean code shrunk toward the mean code
    item = int(np.argmax(np.asarray((users > 0).sum(axis=0)).ravel()))
    codes = model.encode(users).codes.numpy().astype(np.float64)
    holders = np.flatnonzero(users[:, item].toarray().ravel() > 0)
    expected = (codes[holders].sum(0) + AUDIENCE_PRIOR * codes.mean(0)) / (
        len(holders) + AUDIENCE_PRIOR
    )
    np.testing.assert_allclose(acts["sae"][item], expected, rtol=1e-4, atol=1e-6)
    # the dense control averages the split user embeddings the same way
    dense = signed_split(model.user_vectors(users)).astype(np.float64)
    expected = (dense[holders].sum(0) + AUDIENCE_PRIOR * dense.mean(0)) / (
        len(holders) + AUDIENCE_PRIOR
    )
    np.testing.assert_allclose(acts["dense"][item], expected, rtol=1e-4, atol=1e-6)
    # latents no user activates stay dead: what users meet, not one-item histories
    np.testing.assert_array_equal((acts["sae"] > 0).any(axis=0), codes.max(axis=0) > 0)


# ---- tag sources ---------------------------------------------------------------------------
def test_user_tags_from_training_users_only():
    applications = pd.DataFrame(
        {
            "user": [1, 1, 2, 3, 3],
            "item": [10, 20, 10, 20, 30],
            "tag": ["Funny", "funny ", "dark", "secret", "funny"],
        }
    )
    tags = tags_from_applications(applications, np.array([10, 20, 30]), users=[1, 2])
    # user 3 is held out: "secret" and the (30, funny) application must not appear
    assert list(tags.names) == ["dark", "funny"]
    np.testing.assert_array_equal(tags.matrix.toarray(), [[1, 1], [0, 1], [0, 0]])
    everyone = tags_from_applications(applications, np.array([10, 20, 30]), min_count=2)
    assert list(everyone.names) == ["funny"]  # "Funny" and "funny " merge; 3 applications


def test_user_tag_spellings_merge_into_the_most_applied_one():
    applications = pd.DataFrame(
        {
            "item": [10, 10, 20, 20, 30, 30],
            "tag": ["Sci-Fi", "scifi", "sci  fi", "sci-fi", "based on a book", "!!"],
        }
    )
    tags = tags_from_applications(applications, np.array([10, 20, 30]))
    assert list(tags.names) == ["!!", "based on a book", "sci-fi"]
    np.testing.assert_array_equal(tags.matrix.toarray()[:, 2], [2, 2, 0])


def test_knowledge_graph_concepts_read_as_roles_of_known_items(ml100k_model):
    from steercf.concepts.sources import concept_display_names

    data, split, model = ml100k_model
    kg = concept_tags(data, "kg")
    names = concept_display_names(data, "kg", kg)
    assert len(names) == len(kg.names)
    # entities of one role sharing their best-known films are told apart
    assert len(set(names)) == len(names)
    popularity = np.asarray(data.matrix.sum(axis=0)).ravel()
    for raw, shown in zip(kg.names[:20], names[:20], strict=True):
        relation = raw.split(":")[0]
        assert ":m." not in shown and shown != raw
        items = kg.matrix[:, list(kg.names).index(raw)].nonzero()[0]
        best = data.titles(items[np.argsort(-popularity[items], kind="stable")[:1]])[0]
        assert best in shown, (raw, shown)
        if relation == "actor":
            assert shown.startswith("actor in ")
        # a broad entity says how broad it is (its best-known items are the catalogue's)
        share = len(items) / kg.matrix.shape[0]
        assert (f"[on {share:.0%} of items]" in shown) == (share >= 0.1), shown
    assert list(concept_display_names(data, "genres", concept_tags(data, "genres"))) == list(
        concept_tags(data, "genres").names
    )
    # labels may not name an unnamed entity on 10 % of the items or more (a reader cannot
    # tell what it is); every other concept stays, under its readable name
    labelled = label_concepts(data, "kg", split.train_users)
    full = concept_tags(data, "kg", split.train_users)
    share = np.asarray((full.matrix > 0).sum(axis=0)).ravel() / full.matrix.shape[0]
    broad = np.array([":m." in n or ":g." in n for n in full.names]) & (share >= 0.1)
    assert broad.any() and len(labelled.names) == len(full.names) - broad.sum()
    assert not any("[on " in name for name in labelled.names)
    assert list(label_concepts(data, "genres").names) == list(concept_tags(data, "genres").names)
    labels = label_model(model, data, train_users=split.train_users, sources=["kg"])
    assert not any(":m." in label.text or "[on " in label.text for label in labels.live())


def test_user_supplied_mapping():
    tags = tags_from_mapping({1: ["x", "y"], 2: "x", 3: {"y": 2}, 99: "x"}, np.array([1, 2, 3]))
    assert list(tags.names) == ["x", "y"]
    np.testing.assert_array_equal(tags.matrix.toarray(), [[1, 1], [1, 0], [0, 2]])
    frame = pd.DataFrame({"item": [1, 2], "tag": ["x", "y"]})
    assert list(tags_from_mapping(frame, np.array([1, 2])).names) == ["x", "y"]
    with pytest.raises(InputError):
        tags_from_mapping(["x"], np.array([1]))


def test_latest_small_user_tags_leak_nothing_from_held_out_users(shared_data):
    data = load_dataset("ml-latest-small", data_dir=shared_data)
    split = split_users(data.matrix, seed=0)
    tags = concept_tags(data, "tags", train_users=split.train_users, min_count=1)
    applied = data.tag_applications
    train_ids = set(data.user_ids[split.train_users])
    held = applied[~applied["user"].isin(train_ids)]
    kept = applied[applied["user"].isin(train_ids)]
    assert len(held) > 0  # the check below is not vacuous
    only_held = set(held["tag"]) - set(kept["tag"])
    assert only_held and not only_held & set(tags.names)
    assert tags.matrix.sum() == len(kept)  # every training application counted once
    genres = concept_tags(data, "genres")
    assert "(no genres listed)" not in set(genres.names)
    with pytest.raises(UnknownIdError, match="'genres'"):
        concept_tags(data, "genre")


# ---- a real (small) model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k_model():
    torch.manual_seed(0)
    data = load_dataset("ml-100k")
    split = split_users(data.matrix, seed=0)
    base = ELSA(factors=48, epochs=6, patience=3, progress=False).fit(split.train, split.val_full)
    model = SplicedRecommender(
        base,
        {"k": 8, "expansion": 4},
        TrainConfig(max_epochs=15, progress=False),
        augment=2,
        progress=False,
    ).fit(split.train, split.val_full)
    return data, split, model


def test_sae_beats_both_controls_on_ml100k(ml100k_model, tmp_path):
    data, split, model = ml100k_model
    reports = concepts_report(model, data, sources=["genres", "kg"], train_users=split.train_users)
    by = {(r.source, r.model): r for r in reports}
    assert len(by) == 6
    assert by[("genres", "dense")].n_units == 2 * 48  # positive and negative halves
    assert by[("genres", "random_rotation")].n_units == 2 * model.n_latents
    for source in ("genres", "kg"):
        sae = by[(source, "sae")].summary
        for control in ("dense", "random_rotation"):
            other = by[(source, control)].summary
            for key in (*SPECIFICITY_KEYS, "label_precision@10", "coverage"):
                assert sae[key] >= other[key], (source, control, key)
            for key in SPECIFICITY_KEYS:  # by a wide margin, not a hair
                assert sae[key] > 2 * other[key], (source, control, key)
    table = format_comparison(reports)
    assert "margin" in table and "kg" in table
    text = format_reports(reports, titles=data.titles(np.arange(data.n_items)))
    assert text.startswith("SAE vs controls") and "sae vs kg" in text
    path = plot_reports(reports, tmp_path / "plots.png")
    assert path.stat().st_size > 0


def test_controls_are_the_same_code_path(ml100k_model):
    data, _, model = ml100k_model
    acts = model_activations(model, seed=3)
    assert set(acts) == {"sae", "dense", "random_rotation"}
    assert all((a >= 0).all() and a.shape[0] == data.n_items for a in acts.values())
    # rotating then un-splitting recovers the SAE codes times Q
    q = random_orthogonal(model.n_latents, seed=3)
    rotated = acts["random_rotation"]
    half = rotated.shape[1] // 2
    np.testing.assert_allclose(
        rotated[:, :half] - rotated[:, half:], acts["sae"] @ q, rtol=1e-4, atol=1e-4
    )


def test_labels_round_trip_and_validation(ml100k_model, tmp_path):
    data, split, model = ml100k_model
    labels = label_model(model, data, train_users=split.train_users, sources=["genres", "kg"])
    assert labels.n_latents == model.n_latents
    live = labels.live()
    assert live and all(label.text and label.top_items for label in live)
    first = live[0]
    assert first.top_items[0][1] in first.text  # the top item's title is in the label
    assert any(source == "genres" for source, _, _ in first.concepts)
    # the published concepts read the one-hot codes (the papers' S), the labels the
    # audience activations
    genres = concept_tags(data, "genres", train_users=split.train_users)
    expected = map_concepts(model.item_codes().numpy(), genres, "best_characterizes")
    assert [name for source, name, _ in first.concepts if source == "genres"] == [
        name for name, score in expected.concepts_for(first.latent, 3) if score > 0
    ]
    audience = audience_activations(model, data.matrix[split.train_users])
    assert first.top_items[0][1] == data.titles([int(np.argmax(audience[:, first.latent]))])[0]
    # the caller's audience activations (the explorer computes them once) give the same
    given = label_model(
        model, data, train_users=split.train_users, sources=["genres", "kg"], audience=audience
    )
    assert [label.text for label in given.labels] == [label.text for label in labels.labels]
    with pytest.raises(InputError, match="audience has shape"):
        label_model(model, data, train_users=split.train_users, audience=audience[1:])
    # all 10 top items the evidence counts are kept; the one-line text names 3
    assert len(first.top_items) == 10 and first.top_items[3][1] not in first.text
    # a latent no training user activates is dead, and its text says so
    dead = [label for label in labels.labels if not label.live]
    codes = model.encode(data.matrix[split.train_users]).codes.numpy()
    assert {label.latent for label in dead} == set(np.flatnonzero(codes.max(axis=0) <= 0))
    assert all(label.text == "(dead: active for no training user)" for label in dead)

    model_dir = tmp_path / "model"
    model.save(model_dir)
    save_labels(model_dir, labels)
    loaded = load_labels(model_dir)
    assert loaded == labels
    assert f"latent {first.latent}: {first.text}" in format_latent(loaded, first.latent)
    assert format_latents(loaded).splitlines()[0].startswith(f"{len(live)} live of")
    # each label counts the training users whose code has the latent active (saved too)
    codes = model.encode(data.matrix[split.train_users]).codes
    np.testing.assert_array_equal(
        [label.n_users for label in loaded.labels], (codes > 0).sum(0).numpy()
    )
    # the list a user meets first: most users first, latents no user activates last
    listed = format_latents(loaded, top=len(live)).splitlines()[1:]
    users = [int(line.split()[1]) for line in listed]
    assert users == sorted(users, reverse=True) and users[0] > 0
    with pytest.raises(InputError, match="out of range"):
        format_latent(loaded, model.n_latents)
    for bad in (-3, 0, 2.5):  # -3 once listed all but the last 3
        with pytest.raises(InputError, match="top must be a whole number >= 1"):
            format_latents(loaded, top=bad)

    path = resolve_model_dir(model_dir) / "labels.json"
    payload = json.loads(path.read_text())
    path.write_text(json.dumps({**payload, "version": payload["version"] - 1}))
    assert load_labels(model_dir, missing_ok=True) is None  # earlier version: recompute
    with pytest.raises(ModelFileError, match="labels version"):
        load_labels(model_dir)
    path.write_text(path.read_text()[:100])
    for missing_ok in (False, True):  # corrupt is an error either way
        with pytest.raises(ModelFileError, match="corrupt labels"):
            load_labels(model_dir, missing_ok=missing_ok)
    payload["labels"] = payload["labels"][:-1]
    payload["n_latents"] -= 1
    path.write_text(json.dumps(payload))
    with pytest.raises(ModelFileError, match="latents but the model"):
        load_labels(model_dir)
    path.unlink()
    with pytest.raises(ModelFileError, match="no latent labels"):
        load_labels(model_dir)
    assert load_labels(model_dir, missing_ok=True) is None
    # labels of another SAE (same width) are refused
    labels.sae_fingerprint = "0" * 16
    with pytest.raises(ModelFileError, match="another SAE"):
        save_labels(model_dir, labels)


def test_label_latents_on_the_toy_case():
    acts = np.hstack([TOY_ACTS[:, 1:], np.zeros((4, 1))])  # latents: action, drama, dead
    titles = ["Die Hard", "Speed", "Hamlet", "Lear"]
    # 2 of 4 items: no evidence can be significant, so the default says "unlabelled"
    strict = label_latents(acts, titles, {"genres": TOY_TAGS}, item_ids=[5, 6, 7, 8])
    assert strict[0].text == "unlabelled (top items: Die Hard; Speed)" and not strict[0].labelled
    assert strict[0].evidence["concept"] == "action" and strict[0].evidence["p_value"] > 0.1
    # too few items to choose a threshold on held-out items: labelling is off, and says so
    assert strict[0].evidence["threshold"] > 1
    assert "labelling is off for genres" in format_latent(strict, 0)
    labels = label_latents(
        acts, titles, {"genres": TOY_TAGS}, item_ids=[5, 6, 7, 8], thresholds={"genres": 0.2}
    )
    # even a loose threshold labels nothing chance explains, and says so
    assert not labels[0].labelled and "within chance" in format_latent(labels, 0)
    ev = labels[0].evidence
    assert (ev["hits"], ev["n_top"], ev["precision"], ev["recall"]) == (2, 2, 1.0, 1.0)
    assert ev["p_value"] == pytest.approx(1 / 6)  # both action films among 2 of 4 by chance
    assert ev["expected_precision"] == pytest.approx(
        (2 + PRIOR_STRENGTH * 0.5) / (2 + PRIOR_STRENGTH)
    )
    # 10 action films among 40: three of three is no longer chance (p = 0.012)
    many = np.zeros((40, 1))
    many[:3, 0] = [1.0, 0.7, 0.5]
    action = ItemTags(sp.csr_matrix((np.arange(40) < 10)[:, None].astype(np.float32)), ["action"])
    titles = [f"film {i}" for i in range(40)]
    big = label_latents(many, titles, {"genres": action}, thresholds={"genres": 0.2})
    assert (
        big[0].labelled
        and big[0].text == "action [3/3 top items, lift 4.0] | film 0; film 1; film 2"
    )
    expected = (3 + PRIOR_STRENGTH * 0.25) / (3 + PRIOR_STRENGTH)
    assert f"labelled: expected precision {expected:.2f} >= 0.20" in format_latent(big, 0)
    assert labels[1].concepts[0][:2] == ("genres", "drama")
    assert labels[1].top_items[0] == ("7", "Hamlet", 1.0)
    assert not labels[2].live and labels[2].n_items == 0
    assert [label.latent for label in labels.live()] == [0, 1]
