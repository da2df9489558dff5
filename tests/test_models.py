"""The shared recommender interface on real data, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from steercf.data import load_ml100k
from steercf.errors import InputError, ModelFileError
from steercf.evaluation import evaluate, split_users
from steercf.io import resolve_model_dir
from steercf.models import EASE, ELSA, Popularity, load_model


@pytest.fixture(scope="module")
def ml100k_split():
    data = load_ml100k()
    return data, split_users(data.matrix, seed=0)


@pytest.fixture(scope="module")
def fitted(ml100k_split):
    _, split = ml100k_split
    return {
        "popularity": Popularity().fit(split.train),
        "ease": EASE(l2=300.0).fit(split.train),
        "ease_lowrank": EASE(l2=300.0, rank=128).fit(split.train),
        "elsa": ELSA(factors=64, lr=3e-3, batch_size=128, epochs=4, progress=False).fit(
            split.train, split.val_full
        ),
    }


def test_ease_matches_its_closed_form(ml100k_split):
    _, split = ml100k_split
    x = split.train[:, :300].toarray().astype(np.float64)
    model = EASE(l2=50.0).fit(sp.csr_matrix(x))
    p = np.linalg.inv(x.T @ x + 50.0 * np.eye(300))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights_.numpy(), b, atol=1e-5)


def test_models_beat_popularity_and_low_rank_ease_stays_close(ml100k_split, fitted):
    _, split = ml100k_split
    recall = {
        name: evaluate(m, split.val_input, split.val_target).mean("recall@20")
        for name, m in fitted.items()
    }
    assert recall["ease"] > recall["popularity"] + 0.1
    assert recall["elsa"] > recall["popularity"] + 0.05
    assert recall["ease_lowrank"] > recall["ease"] - 0.05
    assert fitted["ease_lowrank"].encode(split.test_input).shape == (split.test_input.shape[0], 128)


def test_recommend_never_returns_seen_or_filtered_items(ml100k_split, fitted):
    _, split = ml100k_split
    rows = split.test_input[:20]
    banned = np.arange(10)
    for model in fitted.values():
        ids, scores = model.recommend(rows, N=30, filter_items=banned)
        assert ids.shape == scores.shape == (20, 30)
        for user, items in enumerate(ids):
            assert not set(items) & set(rows[user].indices)
            assert not set(items) & set(banned)
        assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_save_load_round_trip_gives_identical_scores(tmp_path, ml100k_split, fitted):
    _, split = ml100k_split
    for name, model in fitted.items():
        model.save(tmp_path / name, metadata={"note": name})
        loaded = load_model(tmp_path / name)
        assert type(loaded) is type(model)
        assert loaded.metadata_ == {"note": name}
        a = model.recommend(split.test_input[:10], N=10)[0]
        b = loaded.recommend(split.test_input[:10], N=10)[0]
        assert np.array_equal(a, b)


def test_elsa_rows_are_unit_norm_and_training_is_deterministic(ml100k_split, fitted):
    _, split = ml100k_split
    norms = fitted["elsa"].items_.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    again = ELSA(factors=64, lr=3e-3, batch_size=128, epochs=4, progress=False).fit(
        split.train, split.val_full
    )
    assert torch.equal(again.items_, fitted["elsa"].items_)


# ---- bad input ----------------------------------------------------------------------


def test_bad_user_rows_get_clear_errors(fitted):
    model = fitted["ease"]
    n = model.n_items_
    with pytest.raises(InputError, match="item columns"):
        model.recommend(sp.csr_matrix((2, n + 1), dtype=np.float32))
    with pytest.raises(InputError, match="empty history"):
        model.recommend(sp.csr_matrix((2, n), dtype=np.float32))
    nan_row = np.zeros((1, n), dtype=np.float32)
    nan_row[0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        model.recommend(nan_row)
    with pytest.raises(InputError, match="2-D"):
        model.recommend(np.zeros((1, 1, n)))
    with pytest.raises(InputError, match="negative"):
        model.recommend(-np.ones((1, n)))
    with pytest.raises(InputError, match="embeddings"):
        fitted["elsa"].decode(torch.zeros(3, 7))


def test_unfitted_model_and_bad_hyperparameters_are_refused():
    with pytest.raises(InputError, match="not fitted"):
        ELSA().recommend(np.ones((1, 5)))
    with pytest.raises(InputError, match="l2"):
        EASE(l2=-1).fit(sp.identity(5, format="csr"))


def test_ease_refuses_a_solve_that_would_not_fit_in_memory():
    x = sp.identity(3000, format="csr", dtype=np.float32)
    with pytest.raises(InputError, match="EASE needs a dense 3,000 x 3,000 solve"):
        EASE(max_memory_bytes=10_000_000).fit(x)


def test_corrupt_or_wrong_kind_model_files_are_refused(tmp_path, fitted):
    fitted["ease"].save(tmp_path / "ease")
    with pytest.raises(ModelFileError, match="holds a EASE model, expected ELSA"):
        ELSA.load(tmp_path / "ease")
    (resolve_model_dir(tmp_path / "ease") / "tensors.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ModelFileError, match="corrupt tensor file"):
        load_model(tmp_path / "ease")
    fitted["elsa"].save(tmp_path / "elsa")
    config_path = resolve_model_dir(tmp_path / "elsa") / "config.json"
    meta = json.loads(config_path.read_text())
    meta["config"]["factors"] = 65
    config_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="does not match its checksum"):
        load_model(tmp_path / "elsa")
    config_path.write_text("{ not json")
    with pytest.raises(ModelFileError, match="corrupt model config"):
        load_model(tmp_path / "elsa")
    with pytest.raises(ModelFileError, match="no model directory"):
        load_model(tmp_path / "missing")
    meta["format_version"] = 99
    config_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(tmp_path / "elsa")


def test_save_replaces_atomically_and_keeps_the_old_model_on_failure(tmp_path, fitted, monkeypatch):
    target = tmp_path / "model"
    fitted["popularity"].save(target)
    import steercf.io as io

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io, "_write_file", broken)
    with pytest.raises(ModelFileError, match="disk full.*previous model there is unchanged"):
        fitted["ease"].save(target)
    assert isinstance(load_model(target), Popularity)  # the old model survived
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp litter
    assert len([p for p in target.iterdir() if p.name.startswith("v-")]) == 1
