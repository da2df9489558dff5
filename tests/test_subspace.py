"""PrincipalSubspace: a linear CFAE kept to the principal directions of its training
users' item scores (the splice base's input narrowing)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from steercf.errors import InputError, ModelFileError
from steercf.models import EASE, ELSA, MultVAE, PrincipalSubspace, load_model


def _rows(n_users: int = 60, n_items: int = 30, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))


@pytest.fixture(scope="module")
def elsa() -> ELSA:
    return ELSA(factors=16, lr=1e-2, batch_size=16, epochs=5, seed=0, progress=False).fit(_rows())


def test_full_rank_scores_like_the_base(elsa):
    rows = _rows(seed=1)
    full = PrincipalSubspace(elsa, rank=16).fit(_rows())
    # every direction kept: the same scores (the decoder is an orthonormal rotation)
    np.testing.assert_allclose(full.score(rows), elsa.score(rows), atol=1e-4)
    assert full.explained_ == pytest.approx(1.0)


def test_kept_directions_hold_the_most_training_score_energy(elsa):
    train = _rows()
    scores = elsa.score(train).double()
    energy = []
    for rank in (2, 6, 12):
        model = PrincipalSubspace(elsa, rank=rank).fit(train)
        # the decoder's columns are orthonormal
        gram = model.decoder_.T @ model.decoder_
        np.testing.assert_allclose(gram, torch.eye(rank), atol=1e-4)
        kept = (model.score(train).double() ** 2).sum() / (scores**2).sum()
        assert float(kept) == pytest.approx(model.explained_, abs=1e-4)
        energy.append(model.explained_)
        # no other rank-r projection of these scores keeps more (Eckart-Young): compare
        # with the best rank-r approximation from the scores' own SVD
        s = torch.linalg.svdvals(scores)
        best = float((s[:rank] ** 2).sum() / (s**2).sum())
        assert model.explained_ == pytest.approx(best, abs=1e-4)
    assert energy == sorted(energy)


def test_fits_an_unfitted_base_and_accepts_low_rank_ease():
    train = _rows()
    model = PrincipalSubspace(EASE(l2=5.0, rank=10), rank=5).fit(train)
    assert model.d_ == 5 and model.encode(train).shape == (60, 5)
    assert model.base_kind == "EASE" and model.base_params["rank"] == 10


def test_refuses_a_nonlinear_base_and_bad_ranks(elsa):
    vae = MultVAE(hidden_dims=(8,), latent_dim=4, epochs=2, seed=0, progress=False)
    with pytest.raises(InputError, match="MultVAE is not linear"):
        PrincipalSubspace(vae, rank=2).fit(_rows())
    for rank in (0, 17, 2.5):
        with pytest.raises(InputError, match="rank must be"):
            PrincipalSubspace(elsa, rank=rank).fit(_rows())
    with pytest.raises(InputError, match="linear CFAE"):
        PrincipalSubspace(None).fit(_rows())


def test_save_load_keeps_scores_and_provenance(elsa, tmp_path):
    model = PrincipalSubspace(elsa, rank=6).fit(_rows())
    model.save(tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert isinstance(back, PrincipalSubspace) and back.base is None
    assert back.base_kind == "ELSA" and back.base_params["factors"] == 16
    assert back.describe() == "ELSA, 6 principal directions"  # what the CLI and explorer show
    rows = _rows(seed=2)
    np.testing.assert_allclose(back.score(rows), model.score(rows), atol=1e-6)


def test_a_file_with_the_wrong_shapes_is_refused(elsa, tmp_path):
    from steercf.io import save_model_dir

    model = PrincipalSubspace(elsa, rank=6).fit(_rows())
    config, tensors = model._state()
    tensors["decoder"] = tensors["decoder"][:, :5]
    save_model_dir(tmp_path / "bad", model.kind, config, tensors)
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "bad")


def test_full_rank_ease_keeps_its_best_score_directions():
    # full EASE scores x B with an item x item B: the directions come from the scores'
    # own SVD (fewer users than items), and every direction the users span is exact
    train = _rows(n_users=20, n_items=50)
    ease = EASE(l2=5.0).fit(train)
    scores = ease.score(train).double()
    s = torch.linalg.svdvals(scores)
    for rank in (3, 8):
        model = PrincipalSubspace(ease, rank=rank).fit(train)
        assert model.explained_ == pytest.approx(float((s[:rank] ** 2).sum() / (s**2).sum()))
        kept = (model.score(train).double() ** 2).sum() / (scores**2).sum()
        assert float(kept) == pytest.approx(model.explained_, abs=1e-5)
    spanned = PrincipalSubspace(ease, rank=20).fit(train)
    np.testing.assert_allclose(spanned.score(train), scores.float(), atol=1e-4)
    assert spanned.describe() == "EASE, 20 principal directions"
    with pytest.raises(InputError, match="20 training users"):
        PrincipalSubspace(ease, rank=21).fit(train)
