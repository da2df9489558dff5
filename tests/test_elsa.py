"""ELSA: the hand-written gradient, training determinism, early stopping, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from steercf.data.rows import thin_rows
from steercf.errors import InputError
from steercf.models.elsa import ELSA, PRESETS, Workspace, elsa_loss_and_grad


def _random_rows(n_users: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    """(n_users, n_items) binary CSR with every row non-empty."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0
    return sp.csr_matrix(dense)


def _autograd_loss_and_grad(
    rows: sp.csr_matrix, items: torch.Tensor, input_rows: sp.csr_matrix | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The published loss written densely, differentiated by autograd (float64)."""
    a = items.detach().double().requires_grad_(True)
    x = torch.from_numpy(rows.toarray()).double()
    x_in = x if input_rows is None else torch.from_numpy(input_rows.toarray()).double()
    r = torch.relu(x_in @ a @ a.T - x_in)
    diff = torch.nn.functional.normalize(r, dim=1) - torch.nn.functional.normalize(x, dim=1)
    loss = (diff**2).sum(dim=1).mean()
    loss.backward()
    return loss.detach(), a.grad


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> sp.csr_matrix:
    """120 users x 40 items with a block structure, so the model has something to learn."""
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 4, 120)
    dense = (rng.random((120, 40)) < 0.05).astype(np.float32)
    for user, group in enumerate(groups):
        block = np.arange(group * 10, group * 10 + 10)
        dense[user, rng.choice(block, 5, replace=False)] = 1.0
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("denoise", [False, True])
def test_hand_gradient_matches_autograd(denoise: bool) -> None:
    rows = _random_rows(37, 53, 0.15, seed=1)
    # values other than 1 exercise the normalisation of x
    rows.data = np.random.default_rng(2).uniform(0.5, 2.0, rows.nnz).astype(np.float32)
    items = torch.nn.functional.normalize(
        torch.randn(53, 8, generator=torch.Generator().manual_seed(0)), dim=1
    )
    input_rows = thin_rows(rows, 0.5, np.random.default_rng(0)) if denoise else None
    if denoise:
        assert input_rows.nnz < rows.nnz
    loss, grad = elsa_loss_and_grad(rows, items, input_rows=input_rows)
    ref_loss, ref_grad = _autograd_loss_and_grad(rows, items, input_rows)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


def test_hand_gradient_with_reused_workspace_and_smaller_batch() -> None:
    """A workspace sized by a bigger earlier batch must not leak into a smaller one."""
    items = torch.nn.functional.normalize(
        torch.randn(30, 6, generator=torch.Generator().manual_seed(1)), dim=1
    )
    workspace = Workspace()
    elsa_loss_and_grad(_random_rows(50, 30, 0.3, seed=4), items, workspace=workspace)
    rows = _random_rows(9, 30, 0.2, seed=5)
    loss, grad = elsa_loss_and_grad(rows, items, workspace=workspace)
    ref_loss, ref_grad = _autograd_loss_and_grad(rows, items)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


def test_duplicate_entries_are_summed_like_a_dense_row() -> None:
    """A non-canonical CSR (duplicate column entries) means the summed dense row."""
    rows = sp.csr_matrix(
        (np.ones(4, np.float32), np.array([2, 2, 5, 1]), np.array([0, 3, 4])), shape=(2, 8)
    )
    items = torch.nn.functional.normalize(
        torch.randn(8, 4, generator=torch.Generator().manual_seed(2)), dim=1
    )
    loss, grad = elsa_loss_and_grad(rows, items)
    ref_loss, ref_grad = _autograd_loss_and_grad(sp.csr_matrix(rows.toarray()), items)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


def test_training_is_deterministic_given_seed(toy: sp.csr_matrix) -> None:
    params = dict(factors=8, lr=1e-2, batch_size=32, epochs=3, input_dropout=0.2, progress=False)
    a = ELSA(seed=7, **params).fit(toy)
    b = ELSA(seed=7, **params).fit(toy)
    c = ELSA(seed=8, **params).fit(toy)
    assert torch.equal(a.items_, b.items_)
    assert not torch.equal(a.items_, c.items_)


@pytest.mark.parametrize("monitor", ["loss", "recall@5"])
def test_early_stopping_restores_best_epoch(toy: sp.csr_matrix, monitor: str) -> None:
    train, val = toy[:90], toy[90:]
    # a large learning rate makes validation worsen after a few epochs
    model = ELSA(
        factors=16,
        lr=0.1,
        batch_size=16,
        epochs=30,
        patience=2,
        monitor=monitor,
        seed=0,
        progress=False,
    ).fit(train, val)
    key = "val_loss" if monitor == "loss" else "val_recall@5"
    values = [record[key] for record in model.history_]
    best = int(np.argmin(values)) if monitor == "loss" else int(np.argmax(values))
    assert model.best_epoch_ == best
    assert len(model.history_) == min(30, best + 1 + 2)  # stopped `patience` epochs later
    # the kept items give back the best epoch's validation loss
    loss, _ = elsa_loss_and_grad(val, model.items_, need_grad=False)
    assert loss.item() == pytest.approx(model.history_[model.best_epoch_]["val_loss"], rel=1e-5)


def test_unit_norm_rows_after_fit(toy: sp.csr_matrix) -> None:
    model = ELSA(factors=12, lr=5e-2, batch_size=20, epochs=4, seed=1, progress=False).fit(toy)
    norms = torch.linalg.vector_norm(model.items_, dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)
    assert model.items_.shape == (toy.shape[1], 12)


def test_training_lowers_the_loss(toy: sp.csr_matrix) -> None:
    model = ELSA(factors=16, lr=1e-2, batch_size=16, epochs=8, seed=0, progress=False).fit(toy)
    assert model.history_[-1]["train_loss"] < model.history_[0]["train_loss"] - 0.05


def test_save_load_round_trip(toy: sp.csr_matrix, tmp_path: Path) -> None:
    model = ELSA(
        factors=8, lr=1e-2, batch_size=32, epochs=2, monitor="ndcg@10", seed=3, progress=False
    )
    model.fit(toy[:100], toy[100:])
    model.save(tmp_path / "elsa")
    loaded = ELSA.load(tmp_path / "elsa")
    assert torch.equal(loaded.items_, model.items_)
    assert (loaded.factors, loaded.lr, loaded.monitor) == (8, 1e-2, "ndcg@10")
    ids, scores = model.recommend(toy[100:], N=5)
    ids2, scores2 = loaded.recommend(toy[100:], N=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2)


@pytest.mark.parametrize(
    "params",
    [
        {"factors": 0},
        {"batch_size": 0},
        {"epochs": 0},
        {"patience": 0},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"betas": (0.9, 1.0)},
        {"input_dropout": 1.0},
        {"input_dropout": -0.1},
        {"monitor": "precision@20"},
        {"monitor": "recall@0"},
        {"monitor": "recall"},
    ],
)
def test_bad_hyperparameters_raise_input_error(toy: sp.csr_matrix, params: dict) -> None:
    with pytest.raises(InputError):
        ELSA(progress=False, **params).fit(toy)


def test_presets_are_valid_constructor_arguments() -> None:
    for name, params in PRESETS.items():
        model = ELSA(progress=False, **params)
        model._check_params()
        assert name


def _recall_at_20(scores: np.ndarray, given: sp.csr_matrix, target: sp.csr_matrix) -> float:
    from steercf.evaluation import recall_at_k

    scores = scores.copy()
    scores[given.toarray() > 0] = -np.inf
    return float(recall_at_k(np.argsort(-scores, axis=1)[:, :20], target, 20).mean())


def test_ease_warm_start_ranks_like_ease_on_ml100k() -> None:
    """The spectral warm start puts ELSA's unit-norm, rank-d form close to EASE, far
    above a random start (the reason ``init="ease"`` exists)."""
    from steercf.data import load_ml100k
    from steercf.evaluation import split_users
    from steercf.models import EASE

    split = split_users(load_ml100k().matrix, seed=0)
    ease = EASE(l2=300.0).fit(split.train)
    ease_recall = _recall_at_20(
        split.val_input.toarray() @ ease.weights_.numpy(), split.val_input, split.val_target
    )
    model = ELSA(factors=512, init="ease", init_l2=300.0, init_scale=10.0, epochs=1, lr=1e-9)
    model.fit(split.train)
    z = model.encode(split.val_input)
    warm_recall = _recall_at_20(model.decode(z).numpy(), split.val_input, split.val_target)
    assert warm_recall > ease_recall - 0.02
    assert torch.allclose(model.items_.norm(dim=1), torch.ones(model.n_items_), atol=1e-5)


def test_ease_warm_start_is_a_candidate_and_training_moves_from_it(toy: sp.csr_matrix) -> None:
    model = ELSA(
        factors=8, init="ease", init_l2=1.0, lr=1e-3, batch_size=16, epochs=3, progress=False
    ).fit(toy, toy[:20])
    epochs = [record["epoch"] for record in model.history_]
    assert epochs[0] == -1 and "val_loss" in model.history_[0]
    # The warm start comes out of eigh column-major; a non-contiguous parameter made the
    # fused Adam step pair the wrong gradient elements and the loss stalled.
    assert model.history_[1]["val_loss"] < model.history_[0]["val_loss"]


def test_ease_warm_start_is_saved_and_checked(toy: sp.csr_matrix, tmp_path: Path) -> None:
    model = ELSA(factors=8, init="ease", init_scale=5.0, epochs=1, progress=False).fit(toy)
    model.save(tmp_path / "elsa")
    loaded = ELSA.load(tmp_path / "elsa")
    assert (loaded.init, loaded.init_scale) == ("ease", 5.0)
    with pytest.raises(InputError, match="init must be"):
        ELSA(init="svd").fit(toy)
    with pytest.raises(InputError, match="factors <= n_items"):
        ELSA(factors=toy.shape[1] + 1, init="ease").fit(toy)


def test_padded_warm_start_rows(toy: sp.csr_matrix, tmp_path: Path) -> None:
    """Unit rows; the first ``rank`` columns hold the scaled EASE factor, shrunk to at
    most unit length, with about ``quantile`` of the items left unshrunk."""
    from steercf.models.elsa import ease_padded_init

    start = ease_padded_init(toy, 12, 1.0, 6, 0.8, torch.Generator().manual_seed(0))
    assert start.shape == (toy.shape[1], 12)
    assert torch.allclose(start.norm(dim=1), torch.ones(toy.shape[1]), atol=1e-5)
    signal = start[:, :6].norm(dim=1)
    assert signal.max() <= 1 + 1e-5
    assert 0.7 <= float((signal < 1 - 1e-4).float().mean()) <= 0.85
    again = ease_padded_init(toy, 12, 1.0, 6, 0.8, torch.Generator().manual_seed(0))
    assert torch.equal(start, again)

    model = ELSA(factors=12, init="ease_padded", init_rank=6, init_quantile=0.8, epochs=1)
    model.progress = False
    model.fit(toy, toy[:20])
    assert model.history_[0]["epoch"] == -1  # the start is a candidate
    model.save(tmp_path / "elsa")
    loaded = ELSA.load(tmp_path / "elsa")
    assert (loaded.init, loaded.init_rank, loaded.init_quantile) == ("ease_padded", 6, 0.8)
    with pytest.raises(InputError, match="init_rank must be in"):
        ELSA(factors=6, init="ease_padded", init_rank=6).fit(toy)
    with pytest.raises(InputError, match="init_quantile"):
        ELSA(factors=12, init="ease_padded", init_rank=6, init_quantile=0.0).fit(toy)


@pytest.mark.slow
def test_padded_warm_start_keeps_ease_ranking_on_latest_small(shared_data: Path) -> None:
    """On latest-small most items are rare and their rows of the EASE factor are short:
    renormalising them (what the plain spectral start does) inflates their scores, while
    filling them up in spare columns keeps EASE's ranking at a fraction of its width."""
    from steercf.data import load_dataset
    from steercf.evaluation import split_users
    from steercf.models import EASE
    from steercf.models.elsa import ease_padded_init

    split = split_users(load_dataset("ml-latest-small", data_dir=shared_data).matrix, seed=0)
    given, target = split.val_input, split.val_target
    ease = EASE(l2=100.0).fit(split.train)
    ease_recall = _recall_at_20(given.toarray() @ ease.weights_.numpy(), given, target)
    start = ease_padded_init(split.train, 256, 100.0, 128, 0.95, torch.Generator().manual_seed(0))

    def recall(rows: torch.Tensor) -> float:
        return _recall_at_20((given.toarray() @ rows.numpy()) @ rows.numpy().T, given, target)

    padded = recall(start)
    renormalised = recall(torch.nn.functional.normalize(start[:, :128], dim=1))
    assert padded > ease_recall - 0.02
    assert padded > renormalised + 0.05


def test_partial_eigensolver_matches_full_decomposition() -> None:
    """The padded warm start keeps a few eigenpairs of a large matrix through a Lanczos
    solver: same values and the same subspace as the full decomposition."""
    from steercf.models.elsa_init import top_eigenpairs

    generator = torch.Generator().manual_seed(0)
    half = torch.randn(300, 300, generator=generator, dtype=torch.float64)
    symmetric = half + half.T
    values, vectors = top_eigenpairs(symmetric, 20)  # 20 of 300: the partial solver
    full_values, full_vectors = torch.linalg.eigh(symmetric)
    assert torch.allclose(values, full_values[-20:], atol=1e-8)
    overlap = torch.linalg.svdvals(vectors.T @ full_vectors[:, -20:])
    assert float(overlap.min()) > 1 - 1e-8
    assert torch.equal(top_eigenpairs(symmetric, 20)[1], vectors)  # deterministic
    many_values, _ = top_eigenpairs(symmetric, 200)  # most of the spectrum: eigh
    assert torch.allclose(many_values, full_values[-200:])


def test_capped_presets_stay_valid() -> None:
    """Benchmarks and the demo cap ELSA's width; a padded warm start's factor must then
    shrink with it, leaving spare columns for the filler."""
    from steercf.experiment import PRESETS as STUDY_PRESETS
    from steercf.experiment import base_params, cap_factors

    for dataset, models in STUDY_PRESETS.items():
        for name in ("elsa", "elsa_random"):
            for params in (base_params(dataset, name, quick=True), cap_factors(models[name], 64)):
                assert params["factors"] <= 128
                ELSA(**params)._check_params()
                if params.get("init") == "ease_padded":
                    assert params["init_rank"] < params["factors"]
    assert cap_factors({"factors": 512, "init": "ease_padded", "init_rank": 64}, 64) == {
        "factors": 64,
        "init": "ease_padded",
        "init_rank": 32,
    }
