"""Data-parallel training: 2 processes (gloo on the CPU) against 1, devices, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from steercf.distributed import Collective, configure_precision, launch, resolve_device
from steercf.errors import InputError
from steercf.models.elsa import ELSA
from steercf.sae import SAEConfig, TrainConfig, train_sae

# 449 training users in batches of 64: the last batch holds one user, so one of the two
# processes gets an empty share of it.
ELSA_PARAMS = dict(
    factors=24, lr=3e-3, batch_size=64, epochs=5, patience=2, input_dropout=0.25, progress=False
)
SAE_CONFIG = SAEConfig(d_in=16, expansion=4, k=4)
# a short dead window keeps AuxK busy, so its cross-process bookkeeping is exercised
SAE_TRAIN = TrainConfig(
    batch_size=100, max_epochs=6, patience=3, dead_window=150, aux_k=8, l1_coef=1e-3,
    progress=False,
)  # fmt: skip
# Largest parameter difference allowed between 2-process and 1-process training. The
# only difference is the order of float32 additions (the gradient is summed over two
# shares); measured: ELSA ~1e-6, SAE ~1e-5 after these runs.
PARAM_ATOL = 1e-4


def _interactions() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(449, 300) training and (100, 300) validation rows with 6 item blocks."""
    rng = np.random.default_rng(0)
    dense = (rng.random((549, 300)) < 0.02).astype(np.float32)
    for user, group in enumerate(rng.integers(0, 6, 549)):
        dense[user, rng.choice(np.arange(group * 50, group * 50 + 50), 8, replace=False)] = 1
    matrix = sp.csr_matrix(dense)
    return matrix[:449], matrix[449:]


def _embeddings() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(900, 16, generator=generator) @ torch.randn(16, 16, generator=generator)


def _train_both(group: Collective, train, val, x) -> dict:
    """ELSA and an SAE trained under ``group``, and how many rows each process saw."""
    import steercf.models.elsa as elsa_module
    import steercf.sae.trainer as trainer_module

    seen = {"elsa": 0, "sae": 0}
    loss_and_grad, recon = elsa_module.elsa_loss_and_grad, trainer_module.reconstruction_loss

    def counting_loss_and_grad(rows, *args, **kwargs):
        if kwargs.get("need_grad", True):  # training, not validation
            seen["elsa"] += rows.shape[0]
        return loss_and_grad(rows, *args, **kwargs)

    def counting_recon(x_hat, x, kind, reference=None):
        if reference is None:  # the main loss of a training batch (AuxK passes one)
            seen["sae"] += x.shape[0]
        return recon(x_hat, x, kind, reference)

    elsa_module.elsa_loss_and_grad = counting_loss_and_grad
    trainer_module.reconstruction_loss = counting_recon
    try:
        elsa = ELSA(**ELSA_PARAMS).fit(train, val, group=group)
        sae = train_sae(x, SAE_CONFIG, SAE_TRAIN, group=group)
    finally:
        elsa_module.elsa_loss_and_grad = loss_and_grad
        trainer_module.reconstruction_loss = recon
    counts = torch.tensor([seen["elsa"], seen["sae"]], dtype=torch.float64)
    return {
        "items": elsa.items_,
        "elsa_history": elsa.history_,
        "elsa_best": elsa.best_epoch_,
        "sae": dict(sae.sae.state_dict()),
        "sae_history": sae.history,
        "sae_best": sae.best_epoch,
        "rows_here": counts.clone(),
        "rows_all": group.sum_(counts),
    }


pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_processes_train_elsa_and_the_sae_like_one():
    train, val = _interactions()
    x = _embeddings()
    one = _train_both(Collective(), train, val, x)
    two = launch(_train_both, 2, train, val, x)  # rank 0's result, gloo

    # every user once per epoch over both processes, about half of them on rank 0
    elsa_epochs, sae_epochs = len(two["elsa_history"]), len(two["sae_history"])
    assert two["rows_all"][0] == one["rows_all"][0] == elsa_epochs * train.shape[0]
    assert 0.45 < two["rows_here"][0] / two["rows_all"][0] < 0.55
    sae_rows = round(x.shape[0] * (1 - SAE_TRAIN.val_fraction))
    assert two["rows_all"][1] == sae_epochs * sae_rows
    assert 0.45 < two["rows_here"][1] / two["rows_all"][1] < 0.55

    assert two["elsa_best"] == one["elsa_best"] and elsa_epochs == len(one["elsa_history"])
    np.testing.assert_allclose(two["items"], one["items"].numpy(), rtol=0, atol=PARAM_ATOL)
    assert np.abs(two["items"] - one["items"].numpy()).max() > 0  # really two code paths
    for a, b in zip(one["elsa_history"], two["elsa_history"], strict=True):
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5)

    assert two["sae_best"] == one["sae_best"] and sae_epochs == len(one["sae_history"])
    for name, value in one["sae"].items():
        np.testing.assert_allclose(two["sae"][name], value.numpy(), rtol=0, atol=PARAM_ATOL)
    for a, b in zip(one["sae_history"], two["sae_history"], strict=True):
        assert a["dead_fraction"] == b["dead_fraction"]  # AuxK saw the same dead latents
        for key in ("train_loss", "train_aux_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7)


def test_single_process_collective_changes_nothing():
    group = Collective()
    grad, loss = torch.randn(5, 3), torch.tensor(0.5)
    out_loss, out_grad = group.mean_over_batch(loss, grad.clone(), 3, 7)
    assert out_loss is loss and torch.equal(out_grad, grad)
    assert group.scale_loss(loss, 3, 7) is loss
    assert group.sum_floats(1.5, 2.0) == (1.5, 2.0) and group.agree({"a": 1}) == {"a": 1}
    users = np.array([3, 5, 8])
    assert group.shard(users).tolist() == [3, 5, 8]


def test_shards_split_every_batch_exactly_once():
    batch = np.arange(10, 21)
    parts = [Collective(rank, 3).shard(batch) for rank in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == batch.tolist()
    assert [len(p) for p in parts] == [4, 4, 3]
    rows = sp.csr_matrix(np.eye(12, dtype=np.float32))
    users = np.array([1, 4, 6, 9, 11])
    mine, thinned = Collective(1, 2).shard_rows(rows, users, thin=lambda b: b * 2)
    assert mine.nonzero()[1].tolist() == [4, 9] and thinned.data.tolist() == [2.0, 2.0]


def test_data_parallel_sae_refuses_batch_coupled_settings():
    x = _embeddings()
    two = Collective(0, 2)  # the check runs before any collective call
    for sae_config, train_config in (
        (SAEConfig(d_in=16, activation="batchtopk", k=4), TrainConfig(progress=False)),
        (SAEConfig(d_in=16, k=4), TrainConfig(loss="nmse", progress=False)),
    ):
        with pytest.raises(InputError, match="per-row"):
            train_sae(x, sae_config, train_config, group=two)


def test_devices_resolve_and_models_move(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu9")
    assert configure_precision(torch.device("cpu")) == "fp32"
    with pytest.raises(InputError, match="precision"):
        configure_precision(torch.device("cpu"), "fp8")

    from steercf.models.spliced import SplicedRecommender

    train, val = _interactions()
    elsa = ELSA(factors=8, epochs=1, progress=False).fit(train)
    spliced = SplicedRecommender(
        elsa, {"k": 2, "expansion": 2}, TrainConfig(max_epochs=1, progress=False), augment=0
    ).fit(train)
    spliced.to("meta")  # a device without data: every tensor must have moved
    assert elsa.items_.device.type == "meta" and elsa.device == "meta"
    assert all(p.device.type == "meta" for p in spliced.sae_.parameters())


@pytest.mark.slow
def test_cli_trains_with_two_processes_like_one(tmp_path):
    """``steercf train --nproc 2`` runs torchrun; the saved model matches 1 process."""
    from steercf.models import load_model

    args = ["train", "--model", "elsa", "--quiet", "--device", "cpu"]
    args += ["--param", "factors=16", "--param", "epochs=2", "--param", "batch_size=128"]
    from steercf.cli import main

    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    one, two = load_model(tmp_path / "one"), load_model(tmp_path / "two")
    np.testing.assert_allclose(two.items_.numpy(), one.items_.numpy(), rtol=0, atol=PARAM_ATOL)
    assert two.metadata_["nproc"] == 2
