"""Mult-VAE (Liang et al., WWW 2018): schedule, training, persistence, errors, splicing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from steercf.data import load_ml100k
from steercf.errors import InputError, ModelFileError
from steercf.evaluation import evaluate, split_users
from steercf.experiment import base_params, make_model
from steercf.models import MultVAE, Popularity, load_model
from steercf.models.multvae import kl_weight
from steercf.models.spliced import SplicedRecommender
from steercf.sae import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides) -> MultVAE:
    settings = {
        "hidden_dims": (16,),
        "latent_dim": 8,
        "batch_size": 8,
        "epochs": 4,
        "total_anneal_steps": 20,
        "progress": False,
    }
    return MultVAE(**{**settings, **overrides})


def toy(seed: int = 0, n_users: int = 40, n_items: int = 30) -> sp.csr_matrix:
    """(n_users, n_items) binary rows, 3-8 items each."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((n_users, n_items), dtype=np.float32)
    for user in range(n_users):
        dense[user, rng.choice(n_items, rng.integers(3, 9), replace=False)] = 1.0
    return sp.csr_matrix(dense)


@pytest.fixture(scope="module")
def fitted() -> MultVAE:
    return tiny(epochs=6, patience=10).fit(toy(), toy(1, n_users=12))


@pytest.fixture(scope="module")
def ml100k_split():
    return split_users(load_ml100k().matrix, seed=0)


def test_kl_weight_rises_linearly_to_the_cap() -> None:
    assert kl_weight(0, 0.2, 1000) == 0.0
    assert kl_weight(100, 0.2, 1000) == pytest.approx(0.1)
    assert kl_weight(200, 0.2, 1000) == pytest.approx(0.2)
    assert kl_weight(10**6, 0.2, 1000) == pytest.approx(0.2)
    assert kl_weight(0, 0.3, 0) == 0.3  # no annealing: the cap from the start
    # A fit follows it step by step: 40 users in batches of 8 are 5 steps per epoch and
    # each record holds the weight of its epoch's last step.
    model = tiny(anneal_cap=1.0, total_anneal_steps=20, epochs=6).fit(toy())
    weights = [record["kl_weight"] for record in model.history_]
    assert weights == pytest.approx([min(1.0, (5 * e + 4) / 20) for e in range(6)])


def test_training_lowers_the_validation_loss_and_beats_popularity(ml100k_split) -> None:
    split = ml100k_split
    model = MultVAE(
        hidden_dims=(200,),
        latent_dim=64,
        batch_size=128,
        epochs=12,
        total_anneal_steps=300,
        patience=12,
        progress=False,
    ).fit(split.train, split.val_full)
    losses = [record["val_loss"] for record in model.history_]
    assert losses[-1] < losses[0] - 10
    recalls = [record["val_recall@20"] for record in model.history_]
    assert model.best_epoch_ == int(np.argmax(recalls))  # the best epoch is kept
    ours = evaluate(model, split.test_input, split.test_target).mean("recall@20")
    popular = Popularity().fit(split.train)
    theirs = evaluate(popular, split.test_input, split.test_target).mean("recall@20")
    assert ours > theirs + 0.03, (ours, theirs)


def test_encode_decode_shapes_and_gradients(fitted) -> None:
    rows = toy()[:5]
    z = fitted.encode(rows)
    assert z.shape == (5, 8) and z.dtype == torch.float32 and not z.requires_grad
    scores = fitted.decode(z)
    assert scores.shape == (5, 30)
    torch.testing.assert_close(fitted.score(rows), scores)
    # decode is differentiable in its input (a spliced model may fine-tune through it);
    # the network's own weights stay frozen
    z = z.clone().requires_grad_(True)
    fitted.decode(z).logsumexp(1).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in fitted.network_.parameters())
    # input scale does not matter (rows are L2-normalised), an empty row is accepted
    torch.testing.assert_close(fitted.encode(rows * 3), fitted.encode(rows))
    assert fitted.user_vectors(sp.csr_matrix((2, 30))).shape == (2, 8)
    with pytest.raises(InputError, match=r"\(n, 8\)"):
        fitted.decode(torch.zeros(2, 5))
    with pytest.raises(InputError, match="30 items"):
        fitted.encode(sp.csr_matrix((2, 31)))


def test_seeded_and_sensitive_to_the_seed() -> None:
    a = tiny(seed=3).fit(toy())
    b = tiny(seed=3).fit(toy())
    c = tiny(seed=4).fit(toy())
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_save_load_round_trip(fitted, tmp_path) -> None:
    fitted.save(tmp_path / "vae")
    loaded = load_model(tmp_path / "vae")
    assert isinstance(loaded, MultVAE) and loaded.hidden_dims == (16,)
    assert loaded.saved_params() == fitted.saved_params()
    assert loaded.fingerprint() == fitted.fingerprint()
    rows = toy()[:10]
    torch.testing.assert_close(loaded.score(rows), fitted.score(rows))
    assert MultVAE.load(tmp_path / "vae").d_ == 8
    # a file whose tensors do not match its config is refused
    config, tensors = fitted._state()
    with pytest.raises(ModelFileError, match="shape"):
        MultVAE._from_state({**config, "latent_dim": 9}, tensors, "bad")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hidden_dims": 600}, "hidden_dims"),
        ({"hidden_dims": (600, 0)}, "hidden_dims"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 2.5}, "epochs"),
        ({"dropout": 1.0}, "dropout"),
        ({"anneal_cap": -0.1}, "anneal_cap"),
        ({"total_anneal_steps": -1}, "total_anneal_steps"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"monitor": "mrr@10"}, "monitor"),
    ],
)
def test_bad_parameters_are_refused(params, message) -> None:
    with pytest.raises(InputError, match=message):
        tiny(**params).fit(toy())


def test_input_errors() -> None:
    with pytest.raises(InputError, match="not fitted"):
        tiny().encode(toy()[:1])
    with pytest.raises(InputError, match="no user"):
        tiny().fit(sp.csr_matrix((5, 30), dtype=np.float32))
    with pytest.raises(InputError, match="val_user_items"):
        tiny().fit(toy(), toy(n_items=31))
    # users without interactions are skipped, not an error
    rows = sp.vstack([toy(), sp.csr_matrix((3, 30))]).tocsr()
    assert tiny(dropout=0.0).fit(rows).d_ == 8


def test_the_experiment_loop_knows_it() -> None:
    assert isinstance(make_model("multvae", latent_dim=4), MultVAE)
    for dataset in ("ml-100k", "ml-latest-small"):
        quick = base_params(dataset, "multvae", quick=True)
        assert quick["epochs"] == 3 and not quick["progress"]
        MultVAE(**quick)  # every preset key is a parameter


def test_spliced_multvae_fits_recommends_and_round_trips(tmp_path) -> None:
    train = TrainConfig(max_epochs=5, batch_size=16, progress=False)
    spliced = SplicedRecommender(tiny(), {"k": 4, "expansion": 4}, train, augment=1)
    spliced.fit(toy(), toy(1, n_users=12))
    rows = toy(2)[:6]
    ids, scores = spliced.recommend(rows, N=5)
    assert ids.shape == (6, 5) and np.isfinite(scores).all()
    for row, listed in zip(rows, ids, strict=True):
        assert not set(listed.tolist()) & set(row.indices.tolist())
    assert spliced.encode(rows).codes.shape == (6, 8 * 4)
    spliced.save(tmp_path / "spliced")
    loaded = load_model(tmp_path / "spliced")
    assert isinstance(loaded.base, MultVAE)
    np.testing.assert_array_equal(loaded.recommend(rows, N=5)[0], ids)
