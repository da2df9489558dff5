"""The evidence labeller: expected precision above chance, held-out judging, threshold
choice."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import hypergeom

from steercf.concepts.evidence import (
    PRIOR_STRENGTH,
    choose_threshold,
    concept_evidence,
    held_out_curves,
    held_out_labelling,
    held_out_precision,
    labelling_curve,
    precision_ceiling,
    split_items,
)
from steercf.concepts.mapping import best_characterizes
from steercf.errors import InputError


def planted(seed: int = 0):
    """200 items, 4 tags; latent 0 fires on tag-0 items, latent 1 on random items, latent
    2 on the most frequent tag's items only half the time, latent 3 on nothing."""
    rng = np.random.default_rng(seed)
    n = 200
    tags = np.zeros((n, 4))
    tags[:40, 0] = 1  # 20 % of items
    tags[:, 1] = rng.random(n) < 0.5  # a frequent tag
    tags[100:110, 2] = 1
    tags[:, 3] = rng.random(n) < 0.1
    acts = np.zeros((n, 4))
    acts[:40, 0] = rng.random(40) + 1.0
    acts[rng.choice(n, 30, replace=False), 1] = rng.random(30) + 0.1
    frequent = np.flatnonzero(tags[:, 1])
    acts[frequent[:30], 2] = 1.0 + rng.random(30)
    acts[np.flatnonzero(tags[:, 1] == 0)[:30], 2] = rng.random(30)  # weaker, off-concept
    return acts, sp.csr_matrix(tags)


def test_evidence_is_the_hypergeometric_tail_of_the_top_items():
    acts, tags = planted()
    evidence = concept_evidence(acts, tags, k=10)
    assert evidence.concept[0] == 0 and evidence.hits[0] == 10 and evidence.precision[0] == 1.0
    assert evidence.p_value[0] == pytest.approx(hypergeom.sf(9, 200, 40, 10))
    assert evidence.lift[0] == pytest.approx(1.0 / (40 / 200))
    assert evidence.recall[0] == pytest.approx(10 / 40)
    assert evidence.expected_precision[0] == pytest.approx(
        (10 + PRIOR_STRENGTH * 0.2) / (10 + PRIOR_STRENGTH)
    )
    assert evidence.concept[3] == -1 and evidence.n_top[3] == 0 and evidence.p_value[3] == 1.0
    # a frequent tag needs more than its base rate: all 10 top items carry tag 1, yet
    # its p-value is far weaker than latent 0's for a 20 % tag
    assert evidence.concept[2] == 1 and evidence.p_value[2] > 100 * evidence.p_value[0]
    labelled = evidence.labelled(0.55)
    assert labelled[0] and not labelled[1] and not labelled[3]


def test_held_out_judge_and_threshold_choice():
    acts, tags = planted()
    fit, val, test = split_items(200, seed=0)
    assert len(set(fit) | set(val) | set(test)) == 200 and not set(fit) & set(val)
    # read at the judge's depth: the validation top 10 of 40 items are 30 of the 120
    from steercf.concepts.evidence import judging_depth, pair_evidence

    pairs = pair_evidence(acts, tags, fit, judging_depth(10, len(fit), len(val)))
    evidence = pairs.evidence(pairs.best())
    live = (acts > 0).any(axis=0)
    precision = held_out_precision(acts, tags, evidence.concept, test)
    assert precision[0] == 1.0 and np.isnan(precision[3])
    curve = labelling_curve(evidence, acts, tags, val, live, thresholds=(0.1, 0.5, 0.7, 0.99))
    assert [p["n_labelled"] for p in curve] == sorted(
        (p["n_labelled"] for p in curve), reverse=True
    )
    assert curve[-1]["n_labelled"] == 0 and curve[-1]["coverage"] == 0.0
    chosen = choose_threshold(curve, target_precision=0.9)
    strict = next(p for p in curve if p["threshold"] == chosen)
    assert strict["precision@10"] >= 0.9 and strict["n_labelled"] >= 1
    # the loosest reaching the target: every looser point misses it
    assert all(p["precision@10"] < 0.9 for p in curve if p["threshold"] < chosen)
    assert choose_threshold(curve, target_precision=1.5) == 0.99  # none reaches: strictest


def test_coverage_precision_curves_share_the_split_and_end_at_the_single_points():
    acts, tags = planted()
    live = (acts > 0).any(axis=0)
    curves = held_out_curves(acts, tags, live, seed=0)
    points = held_out_labelling(acts, tags, live, seed=0)
    tfidf = curves["best_characterizes"]
    assert [p["coverage"] for p in tfidf] == sorted(p["coverage"] for p in tfidf)
    # labelling every live unit is the published mapping's single point
    assert tfidf[-1]["coverage"] == points["best_characterizes"]["coverage"] == 1.0
    assert tfidf[-1]["precision@10"] == pytest.approx(points["best_characterizes"]["precision@10"])
    # one unit labelled: the one with the highest TF-IDF score on the fitting items,
    # judged alone on the test items
    fit, _, test = split_items(200, seed=0)
    mapping = best_characterizes(acts[fit], tags[fit])
    top = int(np.argmax(np.where(live, mapping.scores.max(axis=0), -np.inf)))
    alone = held_out_precision(
        acts, tags, np.where(np.arange(4) == top, mapping.top_concepts(), -1), test
    )
    first = next(p for p in tfidf if p["n_labelled"] == 1)
    assert first["precision@10"] == pytest.approx(np.nanmax(alone))
    evidence = curves["evidence"]
    chosen = points["evidence"]
    assert any(p["threshold"] == chosen["threshold"] and p == chosen for p in evidence)


def test_precision_ceiling_bounds_every_labeller():
    acts, tags = planted()
    live = (acts > 0).any(axis=0)  # latents 0-2
    _, _, test = split_items(200, seed=0)
    # by hand: each live latent's best concept share on its own top 10 test items
    best = []
    for latent in np.flatnonzero(live):
        order = np.argsort(-acts[test, latent], kind="stable")[:10]
        top = test[order][acts[test[order], latent] > 0]
        best.append(tags[top].toarray().mean(axis=0).max())
    best = sorted(best, reverse=True)
    ceiling = precision_ceiling(acts, tags, live, seed=0, coverages=(1 / 3, 2 / 3, 1.0))
    assert ceiling[1 / 3] == pytest.approx(best[0]) and best[0] == 1.0  # latent 0, tag 0
    assert ceiling[2 / 3] == pytest.approx(np.mean(best[:2]))
    assert ceiling[1.0] == pytest.approx(np.mean(best))
    # no labeller fitted on other items beats it at its own coverage
    for result in held_out_labelling(acts, tags, live, seed=0).values():
        if result["coverage"] > 0:
            bound = precision_ceiling(acts, tags, live, 0, (result["coverage"],))
            assert result["precision@10"] <= bound[result["coverage"]] + 1e-12
    # latent 3 fires on nothing: counted live, a labeller may label it for coverage
    # without the judge reading it, so it takes one of the labels at no cost
    silent = precision_ceiling(acts, tags, np.ones(4, bool), 0, (0.5, 1.0))
    assert silent[0.5] == pytest.approx(best[0]) and silent[1.0] == pytest.approx(np.mean(best))
    alone = held_out_precision(acts, tags, np.array([0, -1, -1, 2]), test)  # 0 and 3 labelled
    assert np.nanmean(alone) == 1.0 <= silent[0.5]
    assert np.isnan(precision_ceiling(acts[:, 3:], tags, np.ones(1, bool), 0)[0.2])
    with pytest.raises(InputError, match="coverages"):
        precision_ceiling(acts, tags, live, coverages=(0.0,))


def test_bad_inputs_are_named():
    acts, tags = planted()
    with pytest.raises(InputError, match="tagged items"):
        concept_evidence(acts[:-1], tags)
    with pytest.raises(InputError, match="k must be"):
        concept_evidence(acts, tags, k=0)
    with pytest.raises(InputError, match="shares"):
        split_items(10, shares=(0.5, 0.5, 0.0))


def test_expected_precision_prefers_what_a_reader_finds_over_surprise():
    """A latent whose top items nearly all carry a frequent tag is a safer label than one
    with 3 of 10 on a rare tag: the p-value ranks the rare pair first, expected precision
    the frequent one; both need to beat chance."""
    from steercf.concepts.evidence import PairEvidence, judging_depth

    hits = np.array([[9, 0], [0, 3], [4, 0]])  # tag 0 on 50 % of items, tag 1 on 1 %
    pairs = PairEvidence(
        hits=hits.astype(np.int32),
        p_value=np.array([[1e-2, 1.0], [1.0, 1e-5], [0.6, 1.0]]),
        n_top=np.array([10, 10, 10]),
        n_concept=np.array([500, 10]),
        n_items=1000,
    )
    expected = pairs.expected_precision(prior_strength=10)
    assert expected[0, 0] == pytest.approx((9 + 5) / 20)
    assert expected[1, 1] == pytest.approx((3 + 0.1) / 20)
    assert pairs.best().tolist() == [0, 1, 0]  # latent 2: its best guess, not above chance
    evidence = pairs.evidence(pairs.best())
    assert evidence.labelled(0.1).tolist() == [True, True, False]
    assert evidence.labelled(0.5).tolist() == [True, False, False]
    # under the cap a frequent concept may label many latents, a rare one at most 10 %
    assert pairs.capped(0.1).tolist() == [0, 1, -1]
    assert judging_depth(10, 600, 200) == 30 and judging_depth(10, 100, 1000) == 10


def test_curves_include_the_former_p_value_rule():
    acts, tags = planted()
    live = (acts > 0).any(axis=0)
    curves = held_out_curves(acts, tags, live, seed=0)
    former = curves["evidence_pvalue"]
    assert [p["coverage"] for p in former] == sorted(p["coverage"] for p in former)
    point = held_out_labelling(acts, tags, live, seed=0)["evidence"]
    assert point["n_labelled"] >= 1 and point["precision@10"] >= 0.6


def test_a_latent_without_evidence_shows_its_most_over_represented_concept():
    """Nothing above chance: the best guess is the smallest p-value, not a near-universal
    concept (a film's language on 85 % of the items) it has less of than chance."""
    from steercf.concepts.evidence import PairEvidence

    pairs = PairEvidence(
        hits=np.array([[6, 1]], dtype=np.int32),  # 6 of 10 English (lift 0.7), 1 Western
        p_value=np.array([[0.99, 0.4]]),
        n_top=np.array([10]),
        n_concept=np.array([850, 50]),
        n_items=1000,
    )
    assert pairs.expected_precision()[0, 0] > pairs.expected_precision()[0, 1]
    assert pairs.best().tolist() == [1]
    assert pairs.capped(None).tolist() == [1]  # the benchmark's best guess, same order
