"""The SAE spliced between a CFAE's encoder and decoder, on MovieLens 100K."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from steercf.data import load_ml100k
from steercf.errors import InputError, ModelFileError
from steercf.evaluation import evaluate, monitor_hold_out, recall_at_k, split_users
from steercf.io import resolve_model_dir
from steercf.models import EASE, ELSA, load_model
from steercf.models.spliced import SplicedRecommender, augmented_rows
from steercf.sae import SAEConfig, SparseAutoencoder, TrainConfig

SAE = {"k": 8, "expansion": 4}


def quick_train(seed: int = 0) -> TrainConfig:
    return TrainConfig(max_epochs=40, patience=5, seed=seed, progress=False)


@pytest.fixture(scope="module")
def split():
    return split_users(load_ml100k().matrix, seed=0)


@pytest.fixture(scope="module")
def base(split):
    return ELSA(factors=48, lr=3e-3, batch_size=64, epochs=6, progress=False).fit(
        split.train, split.val_full
    )


@pytest.fixture(scope="module")
def spliced(split, base):
    return SplicedRecommender(base, SAE, quick_train(), augment=2).fit(split.train, split.val_full)


def test_spliced_model_recommends_close_to_its_base_from_sparse_codes(split, base, spliced):
    encoding = spliced.encode(split.test_input)
    codes, mean, std = encoding.codes, encoding.mean, encoding.std
    assert codes.shape == (split.test_input.shape[0], 48 * 4)
    active = (codes > 0).sum(1)
    # TopK picks k = 8 latents per user; the refit may set one of them to 0, never add one
    assert (active <= 8).all() and active.float().mean() > 7.5
    torch.testing.assert_close(
        spliced.score(split.test_input), base.decode(spliced.sae_.decode(codes, mean, std))
    )
    r_base = evaluate(base, split.test_input, split.test_target).mean("recall@20")
    r_spliced = evaluate(spliced, split.test_input, split.test_target).mean("recall@20")
    assert r_spliced > r_base - 0.06
    ids, _ = spliced.recommend(split.test_input[:10], N=20)
    for user, items in enumerate(ids):
        assert not set(items) & set(split.test_input[user].indices)


def test_sparse_code_is_a_first_class_result(split, spliced):
    code = spliced.sparse_code(split.test_input[:5])
    assert code.values.shape == code.indices.shape == (5, 8)
    assert (np.diff(code.values, axis=1) <= 0).all()
    dense = spliced.encode(split.test_input[:5]).codes
    for user in range(5):
        for latent, value in code.of(user):
            assert dense[user, latent].item() == pytest.approx(value)


def test_augmentation_adds_sub_histories_that_are_subsets(split):
    rows = split.train[:50]
    out = augmented_rows(rows, 3, np.random.default_rng(0))
    assert out.shape == (200, rows.shape[1])
    assert (np.diff(out.indptr) > 0).all()
    for copy in range(1, 4):
        part = out[copy * 50 : (copy + 1) * 50]
        assert (part - part.multiply(rows)).nnz == 0  # only items the user had
    assert out[50:].nnz < 3 * rows.nnz


def test_dead_latents_cover_users_and_single_items(split, spliced):
    dead = spliced.dead_latents(split.train)
    assert dead.shape == (spliced.n_latents,)
    codes = spliced.item_codes()
    assert not dead[np.flatnonzero((codes > 0).any(0).numpy())].any()


def test_save_load_round_trip_and_swapped_parts_are_refused(tmp_path, split, base, spliced):
    spliced.save(tmp_path / "a", metadata={"seed": 0})
    loaded = load_model(tmp_path / "a")
    assert isinstance(loaded, SplicedRecommender) and loaded.metadata_ == {"seed": 0}
    # the SAE's training settings travel with it
    assert (
        loaded.train_config_.to_dict() == spliced.train_config_.to_dict() == quick_train().to_dict()
    )
    a = spliced.recommend(split.test_input[:10])[0]
    assert np.array_equal(a, loaded.recommend(split.test_input[:10])[0])

    other = SplicedRecommender(base, SAE, quick_train(seed=1), augment=0).fit(split.train)
    other.save(tmp_path / "b")
    a_dir, b_dir = resolve_model_dir(tmp_path / "a"), resolve_model_dir(tmp_path / "b")
    shutil.rmtree(a_dir / "sae")
    shutil.copytree(b_dir / "sae", a_dir / "sae")
    with pytest.raises(ModelFileError, match="SAE was not trained on this model's CFAE"):
        load_model(tmp_path / "a")

    other_base = ELSA(factors=48, epochs=1, progress=False, seed=5).fit(split.train)
    SplicedRecommender.from_parts(other_base, other.sae_).save(tmp_path / "c")
    shutil.rmtree(b_dir / "base")
    shutil.copytree(resolve_model_dir(tmp_path / "c") / "base", b_dir / "base")
    with pytest.raises(ModelFileError, match="base CFAE is not the one"):
        load_model(tmp_path / "b")


def test_width_mismatches_and_bad_embeddings_get_clear_errors(split, base, spliced):
    wide = SparseAutoencoder(SAEConfig(d_in=64, k=4, expansion=2))
    with pytest.raises(
        InputError, match="SAE input width 64 does not match the CFAE embedding width 48"
    ):
        SplicedRecommender.from_parts(base, wide)
    with pytest.raises(InputError, match="d_in 64 does not match"):
        SplicedRecommender(base, {"d_in": 64}).fit(split.train)
    with pytest.raises(InputError, match="k = 500 is larger than the number of latents"):
        SplicedRecommender(base, {"k": 500, "expansion": 2}).fit(split.train)
    with pytest.raises(InputError, match="NaN"):
        spliced.sae_.encode(torch.full((2, 48), float("nan")))
    with pytest.raises(InputError, match="item columns"):
        spliced.recommend(sp.csr_matrix((1, 7), dtype=np.float32))
    with pytest.raises(InputError, match="CFAE"):
        SplicedRecommender(object())  # type: ignore[arg-type]


def test_low_rank_ease_can_host_an_sae(split):
    ease = EASE(l2=300.0, rank=32).fit(split.train)
    model = SplicedRecommender(ease, {"k": 8, "expansion": 4}, quick_train(), augment=1)
    model.fit(split.train, split.val_full)
    r_base = evaluate(ease, split.val_input, split.val_target).mean("recall@20")
    r_spliced = evaluate(model, split.val_input, split.val_target).mean("recall@20")
    assert r_spliced > r_base - 0.08


def test_thin_rows_takes_per_row_shares_and_keeps_empty_rows_empty():
    from steercf.data.rows import thin_rows

    rows = sp.csr_matrix(np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float32))
    out = thin_rows(rows, np.array([0.0, 0.5, 0.999]), np.random.default_rng(0))
    assert out[0].nnz == 4  # share 0 keeps everything
    assert out[1].nnz == 0  # an empty row stays empty
    assert out[2].nnz == 1  # almost everything dropped, but never the whole row


def test_monitor_recall_stops_on_the_spliced_models_validation_recall(tmp_path, split, base):
    model = SplicedRecommender(base, SAE, quick_train(), augment=2, monitor="recall@20")
    model.fit(split.train, split.val_full)
    scores = [h["val_score"] for h in model.history_]
    assert model.best_epoch_ == int(np.argmax(scores))
    # the score is the spliced model's recall on held-out validation items: recompute it
    given, target = monitor_hold_out(split.val_full, "recall@20", model.seed)
    ranked, _ = model.recommend(given, N=20)
    assert recall_at_k(ranked, target, 20).mean() == pytest.approx(max(scores), abs=1e-6)
    model.save(tmp_path / "m")
    assert SplicedRecommender.load(tmp_path / "m").monitor == "recall@20"
    with pytest.raises(InputError, match="monitor"):
        SplicedRecommender(base, SAE, quick_train(), monitor="hits").fit(split.train)


def test_splice_ranking_loss_is_lowest_at_the_base_and_ignores_seen_items(split, base):
    from steercf.models.splice_loss import splice_ranking_loss

    rows = split.train[:32]
    z = base.user_vectors(rows)
    loss = splice_ranking_loss(base, z, rows, sharpness=5.0)
    index = torch.arange(32)
    exact = loss(z.clone(), index)
    noisy = z + 0.5 * z.std() * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    assert loss(noisy, index) > exact
    # a change that only moves seen items' scores is free: they are not ranked
    x_hat = noisy.clone().requires_grad_(True)
    loss(x_hat, index).backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


def test_splice_holdout_loss_is_the_multinomial_likelihood_of_hidden_items(split, base):
    from steercf.data.rows import thin_rows
    from steercf.models.splice_loss import splice_holdout_loss

    full = split.train[:16]
    shown = thin_rows(full, 0.5, np.random.default_rng(0))
    inputs = sp.vstack([full[:4], shown[4:]], format="csr")  # 4 full rows, 12 thinned
    loss = splice_holdout_loss(base, inputs, full, weight=0.5)
    z = base.user_vectors(inputs).requires_grad_(True)
    value = loss(z, torch.arange(16))
    # by hand: full rows predict their own items over all items; thinned rows predict
    # their hidden items over the items they did not show
    scores = base.decode(z.detach())
    expected = []
    for u in range(16):
        given, held = inputs[u].toarray()[0] > 0, full[u].toarray()[0] > 0
        hidden = held & ~given
        if u < 4 or not hidden.any():
            target, allowed = held, np.ones_like(held)
        else:
            target, allowed = hidden, ~given
        log_q = torch.log_softmax(scores[u][torch.from_numpy(allowed)], 0)
        picked = torch.from_numpy(target[allowed])
        expected.append(-log_q[picked].mean())
    assert float(value.detach()) == pytest.approx(
        0.5 * float(torch.stack(expected).mean()), rel=1e-5
    )
    value.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        splice_holdout_loss(base, inputs[:3], full)


def test_splice_aware_finetune_is_kept_only_if_validation_recall_rises(tmp_path, split, base):
    short = TrainConfig(max_epochs=4, patience=4, seed=0, progress=False)
    model = SplicedRecommender(
        base, SAE, short, augment=0, finetune_epochs=3, finetune_sharpness=5.0
    ).fit(split.train, split.val_full)
    phases = [record.get("phase") for record in model.history_]
    assert phases.count("splice") == 3 and phases[0] is None and len(phases) == 7
    assert np.isfinite(model.finetune_gain_)
    if model.finetune_gain_ <= 0:  # the reconstruction-trained SAE was kept
        assert model.history_[model.best_epoch_].get("phase") is None
    else:
        assert model.history_[model.best_epoch_]["phase"] == "splice"
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.finetune_epochs == 3
    torch.testing.assert_close(
        loaded.score(split.test_input[:5]), model.score(split.test_input[:5])
    )
    with pytest.raises(InputError, match="needs validation rows"):
        SplicedRecommender(base, SAE, short, finetune_epochs=1).fit(split.train)


def test_error_term_mode_keeps_the_base_scores_and_steers_the_sparse_code(tmp_path, split, base):
    from steercf.sae.steer import Knob
    from steercf.steering import error_term_shares, explain_items, score_parts, steer_codes

    sae = SplicedRecommender(base, SAE, quick_train(), augment=2).fit(split.train, split.val_full)
    model = SplicedRecommender.from_parts(base, sae.sae_, error_term=True)
    rows = split.test_input[:20]
    # unsteered, the error term gives the base's exact scores; the pure splice does not
    torch.testing.assert_close(model.score(rows), base.score(rows), atol=1e-4, rtol=1e-4)
    assert (sae.score(rows) - base.score(rows)).abs().max() > 1e-2
    # steering edits the code and keeps the error term: the change is the pure splice's
    encoding = model.encode(rows)
    latent = int(encoding.codes[0].argmax())
    knob = Knob.of(latent, 2.0)
    steered = encoding.with_codes(steer_codes(encoding.codes, [knob], "additive"))
    assert steered.residual is encoding.residual
    pure = sae.encode(rows)
    pure_steered = pure.with_codes(steer_codes(pure.codes, [knob], "additive"))
    torch.testing.assert_close(
        model.decode(steered) - model.decode(encoding),
        sae.decode(pure_steered) - sae.decode(pure),
        atol=1e-4,
        rtol=1e-4,
    )
    # explanations: the score splits into latents + error term + rest; the error term is
    # signed (it can lower a score), and zero for the pure splice
    ids, _ = model.recommend(rows[:5], N=10)
    for user in range(5):
        parts = score_parts(model, rows[user], ids[user])
        total = parts["latents"] + parts["error_term"] + parts["rest"]
        np.testing.assert_allclose(total, parts["score"], atol=1e-4)
        pure = score_parts(sae, rows[user], ids[user])
        # same code, same latents' part; the error term is the whole difference in score
        np.testing.assert_allclose(parts["latents"], pure["latents"], atol=1e-4)
        np.testing.assert_allclose(parts["error_term"], parts["score"] - pure["score"], atol=1e-4)
        assert (pure["error_term"] == 0).all()
        shares = error_term_shares(model, rows[user], ids[user])
        np.testing.assert_allclose(shares * np.abs(parts["score"]), parts["error_term"], atol=1e-4)
    every = score_parts(model, rows[:1], model.recommend(rows[:1], N=200)[0][0])["error_term"]
    assert every.min() < 0 < every.max()  # both signs occur
    reasons = explain_items(model, rows[:1], ids[0], shares=True, top=10_000)
    assert all(0 < share <= 1 for why in reasons for _, _, share in why)
    # saved and loaded, it stays in error-term mode
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.error_term and torch.allclose(loaded.score(rows), model.score(rows))
    with pytest.raises(InputError, match="error_term"):
        SplicedRecommender(base, error_term="yes")


def test_splice_train_config_layers_defaults_data_set_and_overrides():
    from steercf.experiment import SPLICE_TRAINING, splice_train_config
    from steercf.models.spliced import TRAIN_DEFAULTS

    assert splice_train_config("ml-100k").patience == TRAIN_DEFAULTS["patience"]
    assert splice_train_config("unknown").to_dict() == splice_train_config("ml-100k").to_dict()
    tuned = splice_train_config("ml-latest-small", seed=3)
    assert tuned.patience == SPLICE_TRAINING["ml-latest-small"]["patience"] != 5
    assert (tuned.seed, tuned.lr) == (3, TRAIN_DEFAULTS["lr"])
    assert splice_train_config("ml-latest-small", patience=2).patience == 2
