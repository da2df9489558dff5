"""Tests of the sparse core (steercf.sae): activations, standardisation, decoder
constraints, training (recovery, AuxK, determinism, early stopping), storage, input
checks and metrics. Small synthetic data only; the whole file runs in well under a minute."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from steercf.errors import InputError, ModelFileError
from steercf.io import resolve_model_dir, save_model_dir
from steercf.sae import (
    SAEConfig,
    SparseAutoencoder,
    TrainConfig,
    activation_counts,
    geometric_median,
    latent_density,
    plot_latent_density,
    reconstruction_loss,
    sae_metrics,
    train_sae,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def sparse_data(
    n: int,
    seed: int,
    n_dirs: int = 256,
    d: int = 64,
    d_signal: int | None = None,
    active: int = 4,
    noise: float = 0.01,
) -> torch.Tensor:
    """Rows = sums of ``active`` of ``n_dirs`` fixed random unit directions (weights in
    [0.5, 2]) + Gaussian noise. The directions span the first ``d_signal`` coordinates
    and do not depend on ``seed``, so train and validation rows share them."""
    d_signal = d_signal or d
    dirs = torch.zeros(n_dirs, d)
    dirs[:, :d_signal] = torch.randn(n_dirs, d_signal, generator=torch.Generator().manual_seed(99))
    dirs /= dirs.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    which = torch.rand(n, n_dirs, generator=g).argsort(1)[:, :active]
    weights = torch.zeros(n, n_dirs).scatter(
        1, which, torch.rand(n, active, generator=g) * 1.5 + 0.5
    )
    return weights @ dirs + noise * torch.randn(n, d, generator=g)


def quick(**kwargs) -> TrainConfig:
    defaults = dict(batch_size=256, lr=3e-3, max_epochs=40, patience=10, progress=False)
    return TrainConfig(**{**defaults, **kwargs})


# ---------------------------------------------------------------- activations
def test_topk_exactly_k_per_row():
    sae = SparseAutoencoder(SAEConfig(d_in=32, k=5))
    x = torch.randn(50, 32)
    codes, _, _ = sae.encode(x)
    assert codes.shape == (50, 256)
    assert ((codes > 0).sum(1) == 5).all()
    assert (codes >= 0).all()
    # the kept entries are the row's 5 largest pre-activations
    pre = sae.encode_pre(sae.standardize(x)[0])
    kept = codes > 0
    assert (
        pre[kept].view(50, 5).min(1).values >= pre.masked_fill(kept, -math.inf).max(1).values
    ).all()


def test_batchtopk_training_keeps_k_times_batch_and_eval_uses_threshold():
    sae = SparseAutoencoder(SAEConfig(d_in=32, k=4, activation="batchtopk"))
    x = torch.randn(64, 32)
    assert float(sae.threshold) == 0.0
    sae.train()
    out = sae(x)
    assert int((out.codes > 0).sum()) == 4 * 64
    per_row = (out.codes > 0).sum(1)
    assert per_row.min() != per_row.max()  # a batch budget, not a per-row one
    threshold = float(sae.threshold)
    kept = out.codes[out.codes > 0]
    assert threshold == pytest.approx(float(kept.detach().min()))  # first estimate = batch cut-off
    sae.eval()
    eval_out = sae(x)
    expected = torch.where(eval_out.pre_acts > threshold, eval_out.pre_acts, 0.0)
    assert torch.equal(eval_out.codes, expected)
    sae.train()
    sae(torch.randn(64, 32))  # running estimate moves, eval mode does not
    assert float(sae.threshold) != threshold
    before = float(sae.threshold)
    sae.eval()
    sae(torch.randn(64, 32))
    assert float(sae.threshold) == before


def test_relu_l1_sparser_with_larger_coefficient():
    x = sparse_data(1024, seed=0, n_dirs=64, d=16)
    config = SAEConfig(d_in=16, activation="relu")
    l0 = {}
    for l1 in (0.0, 0.05):
        result = train_sae(x, config, quick(l1_coef=l1, lr=1e-2, max_epochs=30, aux_coef=0))
        l0[l1] = sae_metrics(result.sae, x)["l0"]
    assert l0[0.05] < 0.5 * l0[0.0]


def test_sparse_codes_sorted_and_consistent():
    sae = SparseAutoencoder(SAEConfig(d_in=16, k=3))
    x = torch.randn(10, 16)
    values, indices = sae.sparse_codes(x)
    assert values.shape == indices.shape == (10, 3)
    assert (values[:, :-1] >= values[:, 1:]).all()
    codes, _, _ = sae.encode(x)
    assert torch.equal(codes.gather(1, indices), values)
    assert sae.sparse_codes(x, top=5)[0].shape == (10, 5)


# ------------------------------------------------------------ standardisation
def test_standardize_never_modifies_input_and_decode_is_raw_space():
    config = SAEConfig(d_in=32, k=8)
    sae = SparseAutoencoder(config)
    x = 5.0 + 3.0 * torch.randn(20, 32)
    original = x.clone()
    x_std, mean, std = sae.standardize(x)
    out = sae(x)
    sae.encode(x)
    assert torch.equal(x, original)
    assert x_std.mean(1).abs().max() < 1e-5
    assert torch.allclose(x_std.std(1, correction=0), torch.ones(20), atol=1e-5)
    assert mean.shape == std.shape == (20, 1)
    codes, mean, std = sae.encode(x)
    assert torch.allclose(sae.decode(codes, mean, std), out.x_hat, atol=1e-5)
    assert torch.allclose(out.x_hat, out.x_hat_std * std + mean, atol=1e-5)

    # after training, decode(encode(x)) lands on the raw rows (offset 5, scale 3)
    data = 5.0 + 3.0 * sparse_data(2048, seed=0, d=32, n_dirs=64)
    before = data.clone()
    result = train_sae(data, config, quick(loss="mse", max_epochs=20))
    assert torch.equal(data, before)
    with torch.no_grad():
        codes, mean, std = result.sae.encode(data)
        rebuilt = result.sae.decode(codes, mean, std)
        unscaled = result.sae.decode(codes)
    nmse = (rebuilt - data).square().sum() / (data - data.mean(0)).square().sum()
    assert float(nmse) < 0.3
    assert float(F.cosine_similarity(rebuilt, data).mean()) > 0.98
    assert float(F.cosine_similarity(unscaled, data).mean()) < 0.5  # the standardised space


# ---------------------------------------------------------- decoder constraints
def test_decoder_unit_norm_and_parallel_gradient_removed():
    sae = SparseAutoencoder(SAEConfig(d_in=16, k=4))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(128), atol=1e-5)
    assert torch.equal(sae.W_enc, sae.W_dec.t())
    x = torch.randn(128, 16)
    out = sae(x)
    reconstruction_loss(out.x_hat, x, "mse").backward()
    grad = sae.W_dec.grad
    assert (grad * sae.W_dec).sum(1).abs().max() > 1e-4  # there was a parallel part
    sae.remove_parallel_grad()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-6

    result = train_sae(x, sae.config, quick(max_epochs=3))
    assert torch.allclose(result.sae.W_dec.norm(dim=1), torch.ones(128), atol=1e-5)


# ----------------------------------------------------------------- training
def test_recovers_sparse_structure():
    x, x_val = sparse_data(4096, seed=0), sparse_data(1024, seed=1)
    result = train_sae(x, SAEConfig(d_in=64, k=8), quick(), x_val=x_val)
    metrics = sae_metrics(result.sae, x_val)
    print("recovery", metrics)
    assert metrics["cosine"] > 0.9
    assert metrics["nmse"] < 0.25
    assert 7.5 < metrics["l0"] <= 8.0  # at most k: rows with < k positive pre-activations
    assert sae_metrics(result.sae, x)["dead_fraction"] < 0.05
    assert set(result.history[0]) >= {"train_loss", "val_loss", "val_cosine", "dead_fraction"}


def test_auxk_revives_dead_latents():
    # Data in the first 16 of 32 coordinates; half of the latents start in the other 16,
    # where they only see noise: they never make the top k, so without AuxK nothing ever
    # trains them. AuxK must pull them onto the data.
    config = SAEConfig(d_in=32, k=4)
    x, x_val = (
        sparse_data(n, seed, n_dirs=128, d=32, d_signal=16) for n, seed in ((2048, 0), (512, 1))
    )

    def stuck_sae() -> SparseAutoencoder:
        sae = SparseAutoencoder(config, seed=0)
        off = torch.randn(128, 16, generator=torch.Generator().manual_seed(5))
        off -= off.mean(1, keepdim=True)  # orthogonal to the constant the standardisation adds
        with torch.no_grad():
            sae.W_dec[:128] = torch.cat(
                [torch.zeros(128, 16), off / off.norm(dim=1, keepdim=True)], 1
            )
            sae.W_enc.copy_(sae.W_dec.t())
        sae.init_decoder_bias(x)
        return sae

    assert sae_metrics(stuck_sae(), x)["dead_fraction"] >= 0.5
    dead = {}
    for aux in (0.0, 1 / 32):
        tc = quick(aux_coef=aux, lr=1e-2, max_epochs=60)
        result = train_sae(x, config, tc, x_val=x_val, sae=stuck_sae())
        dead[aux] = sae_metrics(result.sae, x)["dead_fraction"]
    print("dead fraction without / with AuxK", dead)
    assert dead[0.0] > 0.4
    assert dead[1 / 32] < 0.08


def test_same_seed_same_weights_different_seed_different():
    x = sparse_data(600, seed=0, d=16, n_dirs=32)
    config = SAEConfig(d_in=16, k=4)

    def state(seed: int) -> dict[str, torch.Tensor]:
        return train_sae(x, config, quick(max_epochs=4, seed=seed)).sae.state_dict()

    first, again, other = state(1), state(1), state(2)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["W_dec"], other["W_dec"])


def test_early_stopping_restores_best_state():
    # Few rows, many latents, a large step: the validation loss turns up quickly.
    x, x_val = sparse_data(256, seed=0, d=16, n_dirs=64), sparse_data(256, seed=1, d=16, n_dirs=64)
    config = SAEConfig(d_in=16, k=4, expansion=16)
    tc = quick(lr=1e-2, batch_size=64, patience=5, max_epochs=300)
    result = train_sae(x, config, tc, x_val=x_val)
    history = result.history
    val = [h["val_loss"] for h in history]
    assert len(history) < tc.max_epochs  # stopped early
    assert len(history) == result.best_epoch + 1 + tc.patience
    assert result.best_epoch == int(np.argmin(val))
    restored = 1.0 - sae_metrics(result.sae, x_val)["cosine"]
    assert restored == pytest.approx(val[result.best_epoch], abs=1e-6)
    assert restored < val[-1]


def test_val_score_decides_early_stopping_and_the_restored_state():
    """A caller's score (higher is better) replaces the validation loss as the criterion;
    the state restored is the one that scored best."""
    x, x_val = sparse_data(256, seed=0, d=16, n_dirs=64), sparse_data(128, seed=1, d=16, n_dirs=64)
    config = SAEConfig(d_in=16, k=4, expansion=4)
    peak = [0.1, 0.3, 0.9, 0.5, 0.4, 0.2, 0.2, 0.1]  # best at epoch 2
    snapshots = []

    def score(sae: SparseAutoencoder) -> float:
        assert not sae.training  # judged in eval mode
        snapshots.append(sae.W_dec.detach().clone())
        return peak[len(snapshots) - 1]

    result = train_sae(x, config, quick(patience=3, max_epochs=8), x_val=x_val, val_score=score)
    assert result.best_epoch == 2
    assert len(result.history) == 2 + 1 + 3  # stopped after `patience` worse epochs
    assert [h["val_score"] for h in result.history] == peak[:6]
    assert torch.equal(result.sae.W_dec, snapshots[2])


def test_validation_split_and_numpy_input():
    x = sparse_data(500, seed=0, d=16, n_dirs=32).numpy().astype(np.float64)
    original = x.copy()
    result = train_sae(x, SAEConfig(d_in=16, k=4), quick(max_epochs=2, val_fraction=0.2))
    assert np.array_equal(x, original)
    assert len(result.history) == 2 and "val_cosine" in result.history[0]
    assert not result.sae.training


# ------------------------------------------------------------------- storage
def test_save_load_round_trip(tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=8, k=2, activation="batchtopk", width=40), seed=3)
    sae.train()
    sae(torch.randn(32, 8))  # sets a threshold
    sae.save(tmp_path / "sae")
    loaded = SparseAutoencoder.load(tmp_path / "sae")
    assert loaded.config == sae.config
    assert not loaded.training
    for name, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = torch.randn(5, 8)
    sae.eval()
    assert torch.equal(sae(x).x_hat, loaded(x).x_hat)


def test_load_rejects_bad_files(tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=8, k=2))
    sae.save(tmp_path / "good")

    corrupt = tmp_path / "corrupt"
    sae.save(corrupt)
    (resolve_model_dir(corrupt) / "tensors.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="corrupt"):
        SparseAutoencoder.load(corrupt)

    _, config, tensors = sae.model_parts()
    save_model_dir(tmp_path / "kind", "ELSA", config, tensors)
    with pytest.raises(ModelFileError, match="ELSA"):
        SparseAutoencoder.load(tmp_path / "kind")

    save_model_dir(tmp_path / "shape", "SparseAutoencoder", {**config, "d_in": 9}, tensors)
    with pytest.raises(ModelFileError, match="shape"):
        SparseAutoencoder.load(tmp_path / "shape")

    nan = {**tensors, "b_dec": torch.full((8,), float("nan"))}
    save_model_dir(tmp_path / "nan", "SparseAutoencoder", config, nan)
    with pytest.raises(ModelFileError, match="NaN"):
        SparseAutoencoder.load(tmp_path / "nan")

    bad_config = tmp_path / "config"
    save_model_dir(bad_config, "SparseAutoencoder", {**config, "activation": "gelu"}, tensors)
    with pytest.raises(ModelFileError, match="activation"):
        SparseAutoencoder.load(bad_config)

    with pytest.raises(ModelFileError):
        SparseAutoencoder.load(tmp_path / "missing")


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.tensor([[1.0, float("nan"), 0.0, 0.0]]), "NaN"),
        (torch.tensor([[1.0, float("inf"), 0.0, 0.0]]), "infinite"),
        (torch.zeros(3, 5), "width 5"),
        (torch.zeros(4), "2-D"),
        (torch.zeros(0, 4), "empty"),
        (np.array([["a", "b", "c", "d"]]), "real numbers"),
    ],
)
def test_bad_input_raises(x, message):
    sae = SparseAutoencoder(SAEConfig(d_in=4, k=2))
    with pytest.raises(InputError, match=message):
        sae.encode(x)
    with pytest.raises(InputError, match=message):
        train_sae(x, sae.config, quick(max_epochs=1))


def test_bad_configs_raise():
    with pytest.raises(InputError, match="k = 100"):
        SAEConfig(d_in=4, k=100).validate()
    with pytest.raises(InputError, match="k = 100"):
        SparseAutoencoder(SAEConfig(d_in=4, k=100))
    with pytest.raises(InputError, match="k must"):
        SAEConfig(d_in=4, k=0).validate()
    with pytest.raises(InputError, match="activation"):
        SAEConfig(d_in=4, activation="gelu").validate()
    with pytest.raises(InputError, match="d_in"):
        SAEConfig(d_in=0).validate()
    with pytest.raises(InputError, match="loss"):
        TrainConfig(loss="l2").validate()
    with pytest.raises(InputError, match="unknown SAEConfig field"):
        SAEConfig.from_dict({"d_in": 4, "depth": 2})
    config = SAEConfig(d_in=4, width=10, k=3)
    assert SAEConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(TrainConfig(lr=1e-3).to_dict()) == TrainConfig(lr=1e-3)
    sae = SparseAutoencoder(SAEConfig(d_in=4, k=2))
    with pytest.raises(InputError, match="x_val has width 3"):
        train_sae(torch.randn(10, 4), sae.config, quick(max_epochs=1), x_val=torch.randn(5, 3))
    with pytest.raises(InputError, match="codes must have shape"):
        sae.decode(torch.zeros(2, 5))


# ---------------------------------------------------------------- bias init
def test_geometric_median_robust_to_outlier():
    g = torch.Generator().manual_seed(0)
    centre = torch.full((8,), 2.0)
    bulk = centre + 0.1 * torch.randn(99, 8, generator=g)
    x = torch.cat([bulk, torch.full((1, 8), 500.0)])
    median = geometric_median(x)
    assert (median - centre).norm() < 0.1
    assert (x.mean(0) - centre).norm() > 10

    results = {}
    for mode in ("mean", "median", "zero"):
        sae = SparseAutoencoder(SAEConfig(d_in=8, k=2, standardize=False, decoder_bias_init=mode))
        sae.init_decoder_bias(x)
        results[mode] = float((sae.b_dec.detach() - centre).norm())
    assert results["median"] < 0.1 < 10 < results["mean"]
    assert results["zero"] == pytest.approx(float(centre.norm()))


# ------------------------------------------------------------------ metrics
def test_metrics_consistent_and_density_plot(tmp_path):
    x = sparse_data(2048, seed=0, d=32, n_dirs=64)
    sae = train_sae(x, SAEConfig(d_in=32, k=4), quick(max_epochs=10)).sae
    m = sae_metrics(sae, x, batch_size=300)  # several uneven batches
    with torch.no_grad():
        x_hat = sae(x).x_hat.double()
    xd = x.double()
    total = (xd - xd.mean(0)).square().sum()
    assert m["nmse"] == pytest.approx(float((xd - x_hat).square().sum() / total), rel=1e-5)
    cos = F.cosine_similarity(x_hat, xd, dim=1).mean()
    assert m["cosine"] == pytest.approx(float(cos), abs=1e-5)
    assert m["explained_variance"] >= 1.0 - m["nmse"] - 1e-9
    assert m["explained_variance"] == pytest.approx(1.0 - m["nmse"], abs=0.02)
    assert m["l0"] == pytest.approx(4.0)

    counts = activation_counts(sae, x)
    density = latent_density(sae, x)
    assert counts.shape == density.shape == (256,)
    assert counts.sum() == 4 * 2048
    assert np.allclose(density, counts / 2048)
    assert m["dead_fraction"] == pytest.approx(float((counts == 0).mean()))
    assert m["dense_fraction"] == pytest.approx(float((density > 0.1).mean()))
    strict = sae_metrics(sae, x, dense_threshold=0.0)["dense_fraction"]
    assert strict == pytest.approx(1.0 - m["dead_fraction"])

    density[:10] = 0.0
    png = plot_latent_density(density, tmp_path / "plots" / "density.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refit_recovers_the_activations_of_the_chosen_support():
    """Given the right support, the refit finds the exact non-negative amounts, whatever
    the encoder proposed for them; inactive latents stay off."""
    config = SAEConfig(d_in=32, k=4, expansion=4, refit=True, standardize=False)
    sae = SparseAutoencoder(config, seed=0).eval()
    support = torch.tensor([[1, 5, 9, 20], [3, 4, 60, 100]])
    amounts = torch.tensor([[0.5, 1.0, 2.0, 0.7], [1.5, 0.2, 0.9, 3.0]])
    x = torch.zeros(2, config.n_latents).scatter(1, support, amounts) @ sae.W_dec + sae.b_dec
    rough = torch.zeros(2, config.n_latents).scatter(1, support, torch.ones(2, 4))
    refit = sae.refit_active(x, rough)
    assert torch.allclose(refit.gather(1, support), amounts, atol=1e-3)
    assert ((refit > 0) == (rough > 0)).all()


def test_refit_only_at_inference_and_never_worse_reconstruction():
    x = sparse_data(512, seed=0, d=32, n_dirs=64)
    plain = train_sae(x, SAEConfig(d_in=32, k=4, expansion=4), quick(max_epochs=10)).sae
    refit = SparseAutoencoder(SAEConfig(d_in=32, k=4, expansion=4, refit=True))
    refit.load_state_dict(plain.state_dict())
    refit.eval()
    codes_plain, mean, std = plain.encode(x)
    codes_refit, _, _ = refit.encode(x)
    assert (codes_refit >= 0).all()
    assert ((codes_refit > 0) <= (codes_plain > 0)).all()  # same or smaller support
    error_plain = ((plain.decode(codes_plain, mean, std) - x) ** 2).sum(1)
    error_refit = ((refit.decode(codes_refit, mean, std) - x) ** 2).sum(1)
    assert (error_refit <= error_plain + 1e-5).all() and error_refit.mean() < error_plain.mean()
    refit.train()  # training sees the encoder's own amounts
    assert torch.equal(refit.encode(x)[0], codes_plain)


def test_independent_init_draws_encoder_and_decoder_apart():
    tied = SparseAutoencoder(SAEConfig(d_in=16, expansion=4, k=4), seed=0)
    apart = SparseAutoencoder(SAEConfig(d_in=16, expansion=4, k=4, init="independent"), seed=0)
    assert torch.equal(tied.W_enc, tied.W_dec.T)
    assert not torch.allclose(apart.W_enc, apart.W_dec.T)
    torch.testing.assert_close(apart.W_dec.norm(dim=1), torch.ones(64))
    # Kaiming-uniform bounds, as nn.Linear(16, 64) draws its weights
    assert apart.W_enc.abs().max() <= 1 / math.sqrt(16)
    again = SparseAutoencoder(SAEConfig(d_in=16, expansion=4, k=4, init="independent"), seed=0)
    assert torch.equal(apart.W_enc, again.W_enc)
    with pytest.raises(InputError, match="unknown SAE init"):
        SAEConfig(d_in=16, init="xavier").validate()


def test_task_loss_is_added_to_each_batch_with_the_callers_row_indices():
    """The trainer adds ``task_loss(x_hat, rows)`` to the loss; ``rows`` index the
    caller's ``x_train`` (also when validation rows are split off it)."""
    x = sparse_data(300, seed=0, d=16, n_dirs=64)
    config = SAEConfig(d_in=16, k=4, expansion=4)
    seen: list[torch.Tensor] = []
    target = torch.zeros(16)
    target[0] = 5.0  # pull every reconstruction toward e_0 * 5

    def pull(x_hat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        assert x_hat.requires_grad and x_hat.shape == (len(rows), 16)
        seen.append(rows.clone())
        return 10.0 * (x_hat - target).square().mean()

    plain = train_sae(x, config, quick(max_epochs=5, val_fraction=0.2))
    pulled = train_sae(x, config, quick(max_epochs=5, val_fraction=0.2), task_loss=pull)
    used = torch.cat(seen).unique()
    assert len(used) == 240 and used.max() < 300  # the 80 % kept for training, by index
    with torch.no_grad():
        mean_plain = plain.sae(x).x_hat[:, 0].mean()
        mean_pulled = pulled.sae(x).x_hat[:, 0].mean()
    assert mean_pulled > mean_plain + 0.1
