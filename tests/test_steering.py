"""Steering: rules on codes, concept knobs, explanations and the evaluation protocol."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from steercf.concepts import concept_tags
from steercf.data import load_ml100k
from steercf.errors import InputError, UnknownIdError
from steercf.evaluation import recall_at_k, split_users
from steercf.models import ELSA
from steercf.models.spliced import SplicedRecommender
from steercf.sae import TrainConfig
from steercf.steering import (
    DECODER_EFFECT,
    DEFAULT_STRENGTH,
    ConceptKnobs,
    Knob,
    compare,
    explain_items,
    latent_contributions,
    steer,
    steer_codes,
    user_concepts,
)
from steercf.steering_eval import share_with_tag, steering_sweep, suppression, target_concepts


@pytest.fixture(scope="module")
def setup():
    data = load_ml100k()
    split = split_users(data.matrix, seed=0)
    base = ELSA(factors=64, lr=3e-3, batch_size=64, epochs=6, progress=False).fit(
        split.train, split.val_full
    )
    model = SplicedRecommender(
        base,
        {"k": 8, "expansion": 4},
        TrainConfig(max_epochs=40, patience=5, progress=False),
        augment=2,
    ).fit(split.train, split.val_full)
    tags = concept_tags(data, "genres", split.train_users)
    return data, split, model, tags


def test_convex_rule_matches_the_published_formula():
    e = torch.tensor([[1.0, 2.0, 0.0, 1.0]])
    out = steer_codes(e, [Knob.of(2, 0.5)], "convex")
    s = 4.0
    expected = 0.5 * e + torch.tensor([[0.0, 0.0, 0.5 * s, 0.0]])
    torch.testing.assert_close(out, expected)
    assert out.sum().item() == pytest.approx(s)  # convex keeps the total activation
    away = steer_codes(e, [Knob.of([1, 3], -1.0, [3, 1])], "convex")
    torch.testing.assert_close(away, torch.tensor([[1.0, -3.0, 0.0, -1.0]]))
    add = steer_codes(e, [Knob.of(0, 0.25)], "additive")
    torch.testing.assert_close(add, torch.tensor([[2.0, 2.0, 0.0, 1.0]]))
    assert e.tolist() == [[1.0, 2.0, 0.0, 1.0]]  # the input code is never edited


def test_bad_knobs_get_clear_errors():
    e = torch.ones(1, 4)
    with pytest.raises(InputError, match="out of range"):
        steer_codes(e, [Knob.of(9, 0.2)])
    with pytest.raises(InputError, match=r"convex strength must be in \[-1, 1\]"):
        steer_codes(e, [Knob.of(1, 1.5)])
    with pytest.raises(InputError, match="sum to <= 1"):
        steer_codes(e, [Knob.of(1, 0.6), Knob.of(2, 0.6)])
    with pytest.raises(InputError, match="additive strength"):
        steer_codes(e, [Knob.of(1, 50.0)], "additive")
    with pytest.raises(InputError, match="unknown steering rule"):
        steer_codes(e, [Knob.of(1, 0.1)], "warp")
    with pytest.raises(InputError, match="finite"):
        Knob.of(1, float("nan"))
    with pytest.raises(InputError, match="twice"):
        Knob.of([1, 1], 0.2)


def test_concept_knobs_parse_specs_and_name_unknown_concepts(setup):
    data, split, model, _ = setup
    knobs = ConceptKnobs.for_model(
        model, data, "genres", "best_characterizes", split.train_users, 3
    )
    toward = knobs.parse("+Horror")
    assert toward.name == "Horror" and toward.strength == pytest.approx(DEFAULT_STRENGTH)
    assert len(toward.latents) == 3
    # a bare "-X" is the same moderate step as "+X", not a full removal
    assert knobs.parse("-Comedy").strength == pytest.approx(-DEFAULT_STRENGTH)
    assert knobs.parse("-Comedy:0.5").strength == -0.5
    assert knobs.parse("+latent:5:0.2").latents == (5,)
    with pytest.raises(UnknownIdError, match="Horror"):
        knobs.parse("+Horrr")
    with pytest.raises(InputError, match="must start with"):
        knobs.parse("Horror")


def test_one_call_combines_concepts_from_several_sources():
    from steercf.data import load_dataset
    from steercf.steering import parse_knobs

    data = load_dataset("ml-100k")
    split = split_users(data.matrix, seed=0)
    base = ELSA(factors=32, epochs=1, progress=False).fit(split.train)
    model = SplicedRecommender(
        base, {"k": 4, "expansion": 2}, TrainConfig(max_epochs=2, progress=False), augment=0
    ).fit(split.train)
    kg_name = str(concept_tags(data, "kg", split.train_users).names[0])
    knobs = parse_knobs(
        model, data, ["+Horror", "-genres:Comedy:0.5", f"+kg:{kg_name}", "+latent:3"]
    )
    assert [k.name.split(" (")[0] for k in knobs] == ["Horror", "Comedy", kg_name, "latent:3"]
    assert knobs[2].name.startswith(f"{kg_name} (") or not kg_name.split(":")[1].startswith("m.")
    assert [k.strength for k in knobs] == pytest.approx(
        [DEFAULT_STRENGTH, -0.5, DEFAULT_STRENGTH, DEFAULT_STRENGTH]
    )
    with pytest.raises(UnknownIdError):
        parse_knobs(model, data, ["+kg:Horror"])  # a genre is not a kg concept


def test_steering_raises_the_target_share_never_mutates_and_keeps_history_masked(setup):
    data, split, model, tags = setup
    rows = split.test_input
    knobs = ConceptKnobs.for_model(model, data, "genres", DECODER_EFFECT, split.train_users, 8)
    horror = data.tags["genres"].index("Horror")
    horror_col = list(tags.names).index("Horror")
    before_state = {k: v.clone() for k, v in model.sae_.state_dict().items()}
    result = compare(model, rows, [knobs.knob("Horror", 0.5)], rule="convex", N=20)
    for k, v in model.sae_.state_dict().items():
        assert torch.equal(v, before_state[k])
    concept = np.full(rows.shape[0], horror_col)
    before = share_with_tag(result.before_ids, concept, tags.matrix).mean()
    after = share_with_tag(result.after_ids, concept, tags.matrix).mean()
    assert after > 3 * before  # small test model: 4% -> ~19% Horror
    additive = compare(model, rows, [knobs.knob("Horror", DEFAULT_STRENGTH)], N=20)  # default rule
    assert share_with_tag(additive.after_ids, concept, tags.matrix).mean() > 2 * before
    for user in range(rows.shape[0]):
        assert not set(result.after_ids[user]) & set(rows[user].indices)
    ids, _ = steer(model, rows[:3], [knobs.knob("Horror", 0.5)], rule="convex")
    assert np.array_equal(ids, result.after_ids[:3])
    assert data.tags["genres"].items_with("Horror").size > 0 and horror >= 0


def test_steering_refuses_empty_histories(setup):
    _, _, model, _ = setup
    with pytest.raises(InputError, match="empty history"):
        steer(model, sp.csr_matrix((1, model.n_items_), dtype=np.float32), [Knob.of(0, 0.1)])


def test_contributions_add_up_to_the_scores(setup):
    _, split, model, _ = setup
    row = split.test_input[:1]
    encoding = model.encode(row)
    items = np.arange(model.n_items_)
    parts = latent_contributions(model, encoding, items)
    std, mean = encoding.std[0], encoding.mean[0]
    bias = model.base.decode((model.sae_.b_dec * std + mean).reshape(1, -1))[0]
    torch.testing.assert_close(parts.sum(0) + bias, model.score(row)[0], atol=1e-3, rtol=1e-4)
    why = explain_items(model, row, [3, 4])
    assert len(why) == 2 and all(c > 0 for item in why for _, c in item)


def test_user_concepts_are_weighted_votes(setup):
    data, split, model, tags = setup
    knobs = ConceptKnobs.for_model(model, data, "genres", "best_characterizes", split.train_users)
    concepts = user_concepts(model, split.test_input[:1], knobs.mapping)
    assert concepts and sum(w for _, w in concepts) <= 1 + 1e-9
    assert all(name in set(tags.names) for name, _ in concepts)


def test_target_concept_is_the_most_over_represented_tag():
    tags = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32))
    given = sp.csr_matrix(np.array([[1, 1, 0, 0]], dtype=np.float32))
    held = sp.csr_matrix(np.array([[0, 0, 1, 0]], dtype=np.float32))
    assert target_concepts(given, held, tags).tolist() == [1]
    assert target_concepts(given, sp.csr_matrix((1, 4), dtype=np.float32), tags).tolist() == [-1]


def test_sweep_and_suppression_on_real_data(setup):
    data, split, model, tags = setup
    knobs = ConceptKnobs.for_model(model, data, "genres", DECODER_EFFECT, split.train_users, 8)
    sweep = steering_sweep(model, split, tags.matrix, knobs, strengths=(0.0, 0.3), rule="convex")
    assert sweep[1]["segment_recall@20"] > sweep[0]["segment_recall@20"]
    assert sweep[1]["target_share@20"] > sweep[0]["target_share@20"]
    away = suppression(model, split, tags.matrix, knobs, strength=-5.0, rule="additive")
    assert away["drop"] > 0.5


def test_a_wide_knob_holds_only_units_that_lift_the_concept():
    from steercf.concepts import ConceptMapping

    scores = np.array([[0.5, -0.2, 0.0, 0.3], [-0.1, -0.3, -0.2, -0.4]])
    mapping = ConceptMapping("toy", scores, np.array(["up", "down"]), np.ones(4, dtype=bool))
    knobs = ConceptKnobs(mapping, top_latents=4)
    assert list(knobs.knob("up", -1.0).latents) == [0, 3]
    # a convex "away" must not zero the unrelated units 1 and 2
    codes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    steered = steer_codes(codes, [knobs.knob("up", -1.0)], "convex")
    assert steered[0, 1:3].tolist() == [2.0, 3.0]
    # no unit lifts "down": its best (least negative) unit is kept so the knob exists
    assert list(knobs.knob("down", 0.2).latents) == [0]


def test_decoder_fit_mix_lifts_each_concept_at_least_as_well_as_its_best_latent(setup):
    """NNLS over the candidates can always pick the best single latent, so the fitted
    mix's item effects correlate with membership at least as well as any one latent."""
    from steercf.steering import decoder_effect, decoder_fit

    data, split, model, tags = setup
    fit = decoder_fit(model, tags, candidates=32)
    effect = decoder_effect(model, tags)
    effects = model.latent_item_effects().double().numpy()
    has = (tags.matrix > 0).toarray().astype(float)
    for t in range(0, has.shape[1], 3):
        weights = fit.scores[t]
        assert (weights >= 0).all() and weights.any()
        mix = np.corrcoef(weights @ effects, has[:, t])[0, 1]
        assert mix >= effect.scores[t, effect.live].max() - 1e-9
    knobs = ConceptKnobs.for_model(model, data, "genres", "decoder_fit", split.train_users, 4)
    knob = knobs.knob("Horror", 0.3)
    horror = knobs.mapping.scores[list(tags.names).index("Horror")]
    assert all(horror[n] > 0 for n in knob.latents)
    assert list(knob.latents) == list(np.argsort(-horror)[: len(knob.latents)])


def test_steer_with_n_beyond_the_unseen_items_returns_only_unseen_items(setup):
    """Issue 14: ``steer(..., N=48)`` on a long history returned seen items at -inf."""
    data, split, model, _ = setup
    dense = split.test_input[:1].toarray()
    dense[0, : model.n_items_ - 40] = 1.0  # all but 40 items seen
    row = sp.csr_matrix(dense)
    ids, scores = steer(model, row, [Knob.of(0, 0.2)], N=48)
    assert ids.shape == (1, 40) and np.isfinite(scores).all()
    assert not set(ids[0].tolist()) & set(np.flatnonzero(row.toarray()[0]).tolist())


def test_hidden_tags_partition_each_concept():
    from steercf.steering_eval import hide_tag_items

    rng = np.random.default_rng(0)
    tags = sp.csr_matrix((rng.random((50, 4)) < 0.3).astype(np.float32))
    visible, hidden = hide_tag_items(tags, 0.5, seed=1)
    assert (visible + hidden != tags).nnz == 0
    assert visible.multiply(hidden).nnz == 0
    per_concept = np.asarray((tags > 0).sum(0)).ravel()
    hidden_count = np.asarray((hidden > 0).sum(0)).ravel()
    assert np.array_equal(hidden_count, np.round(0.5 * per_concept).astype(int))
    again = hide_tag_items(tags, 0.5, seed=1)[1]
    assert (again != hidden).nnz == 0  # seeded


def test_steering_task_segment_counts_only_the_given_tags():
    from steercf.steering_eval import steering_task

    tags = sp.csr_matrix(np.array([[1, 0], [1, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32))
    hidden = sp.csr_matrix(np.array([[0, 0], [0, 0], [1, 0], [0, 1], [0, 0]], dtype=np.float32))
    given = sp.csr_matrix(np.array([[1, 0, 0, 1, 0]], dtype=np.float32))
    held = sp.csr_matrix(np.array([[0, 1, 1, 0, 0]], dtype=np.float32))
    task = steering_task(given, held, tags, hidden)
    assert task.concepts.tolist() == [0]
    assert task.segment.indices.tolist() == [2]  # only the hidden, unseen item of concept 0
    assert task.in_segment.indices.tolist() == [2]
    assert sorted(task.carries.indices.tolist()) == [0, 1, 2, 4]


def test_tag_boost_and_sae_steerers_on_real_data(setup):
    from steercf.steering_eval import (
        choose_point,
        sae_steerer,
        steering_task,
        sweep,
        tag_boost_steerer,
    )

    data, split, model, tags = setup
    task = steering_task(split.val_input, split.val_target, tags.matrix)
    rerank = tag_boost_steerer(model, tags.matrix)
    torch.testing.assert_close(rerank(task, 0.0), model.score(task.rows))
    curve = sweep(rerank, task, [0.0, 0.5, 1.0, 100.0])
    shares = [p["target_share@20"] for p in curve]
    assert shares == sorted(shares) and shares[-1] > 0.99  # a huge boost lists only the tag
    point = choose_point(curve)
    assert point["personal_kept@20"] >= 0.95 and point["segment_gain@20"] >= 1.0
    knobs = ConceptKnobs.for_model(model, data, "genres", DECODER_EFFECT, split.train_users, 8)
    steered = sweep(sae_steerer(model, knobs, "convex"), task, [0.0, 0.3])
    assert steered[1]["target_share@20"] > steered[0]["target_share@20"]
    assert steered[0]["personal_recall@20"] == pytest.approx(curve[0]["personal_recall@20"])


def test_tag_space_model_ranks_and_steers_through_the_tag_dimension(setup):
    from steercf.models import TagSpaceAutoencoder
    from steercf.steering_eval import steering_task, sweep, tag_space_steerer

    data, split, _, tags = setup
    with pytest.raises(InputError, match="item_tags"):
        TagSpaceAutoencoder().fit(split.train)
    with pytest.raises(InputError, match="rows"):
        TagSpaceAutoencoder().fit(split.train, item_tags=tags.matrix[:-1])
    model = TagSpaceAutoencoder(seed=0).fit(split.train, item_tags=tags.matrix)
    assert model.encode(split.val_input).shape == (split.val_input.shape[0], tags.matrix.shape[1])
    task = steering_task(split.val_input, split.val_target, tags.matrix)
    curve = sweep(tag_space_steerer(model), task, [0.0, 0.5, 2.0])
    assert curve[0]["personal_recall@20"] > 0.1  # the item bias ranks within a tag set
    shares = [p["target_share@20"] for p in curve]
    assert shares[0] < shares[1] < shares[2]


def test_steering_map_moves_users_toward_the_concepts_anchor_items(setup, tmp_path):
    from steercf.steering import concept_anchor_items, plot_steering_map, steering_map

    data, split, model, tags = setup
    comedy = int(np.flatnonzero(tags.names == "Comedy")[0])
    popularity = np.asarray(split.train.sum(axis=0)).ravel()
    anchors = concept_anchor_items(tags.matrix, comedy, popularity, n=10)
    assert tags.matrix[anchors, comedy].toarray().all()
    assert popularity[anchors[0]] >= popularity[anchors[-1]]
    knobs = ConceptKnobs.for_model(model, data, "genres", DECODER_EFFECT, split.train_users, 8)
    rows = split.test_input[:60]
    atlas = steering_map(model, rows, [knobs.knob("Comedy", 1.0)], anchors, projection="pca")
    assert atlas.before.shape == atlas.after.shape == (60, 2)
    assert atlas.anchors.shape == (10, 2) and atlas.projection == "pca"
    assert np.mean(atlas.toward_anchors > 0) > 0.9
    again = steering_map(model, rows, [knobs.knob("Comedy", 1.0)], anchors, projection="pca")
    np.testing.assert_allclose(again.after, atlas.after)
    away = steering_map(model, rows, [knobs.knob("Comedy", -1.0)], anchors, projection="pca")
    assert np.mean(away.toward_anchors < 0) > 0.9
    with pytest.raises(InputError, match="anchor_items"):
        steering_map(model, rows, [], np.array([10**6]))
    plot_steering_map(atlas, tmp_path / "map.png", "Comedy")
    assert (tmp_path / "map.png").stat().st_size > 1000


def test_explanation_shares_split_the_latent_part_of_each_score(setup):
    _, split, model, _ = setup
    history = split.test_input[:1]
    ids, _ = model.recommend(history, N=5)
    every = explain_items(model, history, ids[0], top=model.n_latents, shares=True)
    top3 = explain_items(model, history, ids[0], shares=True)
    for reasons, first in zip(every, top3, strict=True):
        assert sum(share for _, _, share in reasons) == pytest.approx(1.0, abs=1e-5)
        assert [r[:2] for r in first] == [r[:2] for r in reasons[:3]]
        assert [r[2] for r in first] == sorted((r[2] for r in first), reverse=True)


def test_combined_steerer_is_the_sae_step_plus_the_tag_boost(setup):
    from steercf.steering_eval import (
        combined_steerer,
        sae_steerer,
        steering_task,
        tag_boost_steerer,
    )

    data, split, model, tags = setup
    task = steering_task(split.val_input, split.val_target, tags.matrix)
    knobs = ConceptKnobs.for_model(model, data, "genres", DECODER_EFFECT, split.train_users, 8)
    sae = sae_steerer(model, knobs)
    rerank = tag_boost_steerer(model, tags.matrix)
    both = combined_steerer(sae, rerank, 2.0)
    torch.testing.assert_close(both(task, 0.0), model.score(task.rows))
    # the boost part is exactly beta * s sds on the tagged items, on top of the SAE step
    lift = both(task, 0.5) - sae(task, 0.5)
    torch.testing.assert_close(lift, rerank(task, 1.0) - rerank(task, 0.0))
    carries = torch.from_numpy((tags.matrix > 0).T.toarray())[torch.from_numpy(task.concepts)]
    assert float(lift[carries].min()) > 0 and float(lift[~carries].abs().max()) == 0.0
    torch.testing.assert_close(combined_steerer(sae, rerank, 0.0)(task, 0.5), sae(task, 0.5))
    with pytest.raises(InputError, match="beta_per_strength"):
        combined_steerer(sae, rerank, float("nan"))


def test_steering_sweep_reports_exactly_what_sweep_reports_on_the_same_task(setup):
    """steering_sweep and suppression are sweeps of sae_steerer: their figures must be
    sweep's on the same task, and sweep's nDCG and target share the per-user metrics."""
    from steercf.evaluation import ndcg_at_k
    from steercf.ranking import top_n
    from steercf.steering_eval import sae_steerer, steering_task, sweep

    data, split, model, tags = setup
    knobs = ConceptKnobs.for_model(model, data, "genres", DECODER_EFFECT, split.train_users, 8)
    strengths = (0.0, 0.3)
    curve = steering_sweep(model, split, tags.matrix, knobs, strengths, "convex")
    task = steering_task(split.test_input, split.test_target, tags.matrix)
    steerer = sae_steerer(model, knobs, "convex")
    reference = sweep(steerer, task, strengths, ndcg=True)
    assert curve == reference  # every key, every figure
    for key in ("personal_ndcg@20", "segment_ndcg@20", "target_share@20", "n_users"):
        assert key in curve[0]
    ids, _ = top_n(steerer(task, 0.3), task.rows, 20)
    assert curve[1]["personal_ndcg@20"] == pytest.approx(
        np.nanmean(ndcg_at_k(ids, task.target, 20))
    )
    assert curve[1]["segment_ndcg@20"] == pytest.approx(
        np.nanmean(ndcg_at_k(ids, task.segment, 20))
    )
    shares = share_with_tag(ids, task.concepts, tags.matrix)  # by the full tags
    assert curve[1]["target_share@20"] == pytest.approx(shares.mean())
    # suppression: the tag steered from is the most present one in the unsteered list
    away = suppression(model, split, tags.matrix, knobs, strength=-1.0, rule="convex")
    before, _ = top_n(model.decode(model.encode(split.test_input)), split.test_input, 20)
    counts = np.stack([np.asarray((tags.matrix[row] > 0).sum(0)).ravel() for row in before])
    assert away["suppressed_share_before@20"] == pytest.approx(counts.max(1).mean() / 20)
    assert away["personal_recall_before@20"] == pytest.approx(
        np.nanmean(recall_at_k(before, split.test_target, 20))
    )
    assert away["suppressed_share@20"] < away["suppressed_share_before@20"]


def test_sweep_scores_short_lists_and_refuses_bad_input():
    """A toy task: user 0 has one unseen item, so top_n pads their list with -1; an
    empty slot is no hit and never "the last item" (which carries the concept)."""
    from steercf.steering_eval import steering_task, sweep

    tags = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32))
    shown = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=np.float32))
    held = sp.csr_matrix(np.array([[0, 0, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    task = steering_task(shown, held, tags)
    assert task.concepts.tolist() == [1, 1]

    def steerer(task, strength):  # a later item scores higher: lists [3], [3, 2, 1]
        return torch.arange(4.0).repeat(len(task.concepts), 1)

    plain, with_ndcg = sweep(steerer, task, [0.0], k=3), sweep(steerer, task, [0.0], 3, True)
    assert "personal_ndcg@3" not in plain[0]
    assert {k: v for k, v in with_ndcg[0].items() if "ndcg" not in k} == plain[0]
    assert with_ndcg[0]["personal_ndcg@3"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    assert with_ndcg[0]["segment_ndcg@3"] == pytest.approx(1.0)  # [3] and [3, 2] first
    assert plain[0]["target_share@3"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    ids = np.array([[3, -1, -1], [3, 2, 1]])
    assert share_with_tag(ids, task.concepts, tags).tolist() == pytest.approx([1 / 3, 2 / 3])
    with pytest.raises(InputError, match="at least one strength"):
        sweep(steerer, task, [])
    with pytest.raises(InputError, match="finite"):
        sweep(steerer, task, [0.0, float("nan")])
    with pytest.raises(InputError, match="numbers"):
        sweep(steerer, task, [True])
    nobody = steering_task(shown, sp.csr_matrix((2, 4), dtype=np.float32), tags)
    with pytest.raises(InputError, match="no users"):
        sweep(steerer, nobody, [0.0])


def test_suppression_refuses_a_strength_toward(setup):
    data, split, model, tags = setup
    knobs = ConceptKnobs.for_model(model, data, "genres", DECODER_EFFECT, split.train_users, 2)
    for strength in (0.0, 0.5, float("nan")):
        with pytest.raises(InputError, match="strength must be < 0"):
            suppression(model, split, tags.matrix, knobs, strength=strength)
