"""steercf models inside RecBole 1.2.1, end to end on RecBole's bundled ml-100k."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("recbole")

from steercf.errors import InputError, UnknownIdError  # noqa: E402
from steercf.integrations.recbole import (  # noqa: E402
    SteerCFMultVAE,
    SteerCFSplicedELSA,
    SteerCFSplicedMultVAE,
    run_recbole,
    train_recbole,
)
from steercf.models import MultVAE  # noqa: E402
from steercf.models.spliced import SplicedRecommender  # noqa: E402
from steercf.steering import Knob, steer  # noqa: E402

QUIET = {"show_progress": False, "use_gpu": False}
# Tiny but real: ELSA and the SAE both train, inside RecBole's flow.
SMALL_SPLICED = {
    **QUIET,
    "elsa_factors": 64,
    "elsa_epochs": 5,
    "elsa_lr": 1e-2,
    "elsa_input_dropout": 0.5,
    "sae_k": 8,
    "sae_expansion": 4,
    "sae_max_epochs": 10,
    "sae_augment": 1,
}

RUNNER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from steercf.integrations.recbole import SteerCFEASE, run_recbole
    quiet = {"show_progress": False, "use_gpu": False}
    ours = run_recbole(SteerCFEASE, "ml-100k", config_dict={**quiet, "reg_weight": 250.0})
    theirs = run_recbole("EASE", "ml-100k", config_dict={**quiet, "reg_weight": 250.0},
                         saved=False)
    print(json.dumps({
        "ours": dict(ours["test_result"]),
        "theirs": dict(theirs["test_result"]),
        "keys": sorted(ours),
        "ray": "ray" in sys.modules,
        "quick_start": "recbole.quick_start" in sys.modules,
        "cuda_env": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
    }))
    """
)


def test_runner_matches_recboles_ease_without_ray_env_changes_or_litter(tmp_path: Path) -> None:
    # A fresh interpreter, so that no other test has imported ray already. The script
    # gets an argument RecBole's Config would otherwise parse as a setting.
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    script = tmp_path / "run.py"
    script.write_text(RUNNER_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), "--reg_weight=1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ray"] is False and out["quick_start"] is False
    assert out["cuda_env"] == "<unset>"
    assert out["keys"] == [
        "best_valid_result",
        "best_valid_score",
        "test_result",
        "valid_score_bigger",
    ]
    # Same closed form, same inputs: steercf's EASE is RecBole's EASE (float64 vs float32
    # inverse aside), and the script's --reg_weight=1 was not picked up.
    assert abs(out["ours"]["ndcg@10"] - out["theirs"]["ndcg@10"]) <= 0.005
    assert abs(out["ours"]["recall@10"] - out["theirs"]["recall@10"]) <= 0.005
    assert out["theirs"]["ndcg@10"] == pytest.approx(0.3295, abs=0.002)  # RecBole's default
    # RecBole's log/, log_tensorboard/ and saved/ went to a temporary directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.py"]


@pytest.fixture(scope="module")
def spliced_run():
    torch.set_num_threads(1)
    return train_recbole(SteerCFSplicedELSA, "ml-100k", config_dict=SMALL_SPLICED)


@pytest.mark.slow
def test_spliced_elsa_trains_its_sae_inside_recbole_and_ranks(spliced_run) -> None:
    result = spliced_run.result
    test = result["test_result"]
    # RecBole's Pop gets Recall@10 0.084 / NDCG@10 0.101 here, this ELSA alone 0.27 / 0.32.
    assert 0.15 < test["recall@10"] < 1.0
    assert 0.18 < test["ndcg@10"] < 1.0
    model = spliced_run.model
    inner = model.steercf_model
    assert isinstance(inner, SplicedRecommender) and hasattr(inner, "sae_")
    assert inner.n_latents == 64 * 4
    # The SAE was trained on the CFAE's embeddings of RecBole's training users.
    assert inner.base.items_.shape == (spliced_run.dataset.item_num, 64)
    assert model.interaction_matrix.shape == (
        spliced_run.dataset.user_num,
        spliced_run.dataset.item_num,
    )
    codes = inner.encode(model.interaction_matrix[1:20]).codes
    active = (codes > 0).sum(1)
    assert (active <= 8).all() and active.float().mean() > 7  # k = 8; the refit may drop one


@pytest.mark.slow
def test_recbole_scores_are_the_steercf_models_scores(spliced_run) -> None:
    from recbole.data.interaction import Interaction

    model = spliced_run.model
    users = np.array([1, 5, 42])
    batch = Interaction({model.USER_ID: torch.from_numpy(users)})
    full = model.full_sort_predict(batch).view(len(users), -1)
    direct = model.steercf_model.score(model.interaction_matrix[users])
    torch.testing.assert_close(full, direct)
    items = np.array([3, 7, 11])
    pairs = Interaction(
        {model.USER_ID: torch.from_numpy(users), model.ITEM_ID: torch.from_numpy(items)}
    )
    torch.testing.assert_close(model.predict(pairs), direct[np.arange(3), items])
    # The padding user has no history: zero scores, not an error.
    zero = model.full_sort_predict(Interaction({model.USER_ID: torch.tensor([0])}))
    assert torch.count_nonzero(zero) == 0


@pytest.mark.slow
def test_steering_is_reachable_from_the_recbole_model(spliced_run) -> None:
    model = spliced_run.model
    users = np.arange(1, 31)
    plain, _ = model.recommend(users, N=10)
    latent = int(model.steercf_model.sparse_code(model.interaction_matrix[1:2]).indices[0, 0])
    ids, scores = model.steer(users, steer_latents={latent: 0.8}, N=10)
    assert ids.shape == scores.shape == (30, 10)
    assert (ids != plain).any()
    rows = model.interaction_matrix[users]
    for row, items in zip(rows, ids, strict=True):
        assert 0 not in items  # RecBole's padding item
        assert not set(items) & set(row.indices)  # the history stays masked
    # Same as steercf's own steering API on the same histories.
    expected, _ = steer(
        model.steercf_model, rows, [Knob.of(latent, 0.8)], N=10, filter_items=np.array([0])
    )
    np.testing.assert_array_equal(ids, expected)
    tokens = model.item_tokens(ids)
    assert tokens.shape == (30, 10) and isinstance(tokens[0, 0], str)
    first = spliced_run.dataset.field2id_token[spliced_run.dataset.uid_field][1]
    assert model.user_ids([first]).tolist() == [1]
    with pytest.raises(UnknownIdError):
        model.recommend([10**6])
    with pytest.raises(InputError):
        model.steer(users)  # nothing to turn


def test_multvae_keys_are_its_parameters() -> None:
    settable = set(MultVAE.param_names()) - {"seed", *MultVAE.RUNTIME_PARAMS}
    keys = {key for key in SteerCFMultVAE.defaults if key.startswith("multvae_")}
    assert keys == {f"multvae_{name}" for name in settable}
    assert set(SteerCFSplicedMultVAE.defaults) > set(SteerCFMultVAE.defaults)
    model = SteerCFMultVAE.build(None, {**SteerCFMultVAE.defaults, "multvae_latent_dim": 7}, 3)
    assert isinstance(model, MultVAE) and model.latent_dim == 7 and model.seed == 3
    assert model.hidden_dims == tuple(SteerCFMultVAE.defaults["multvae_hidden_dims"])


@pytest.mark.slow
def test_spliced_multvae_inside_recbole() -> None:
    torch.set_num_threads(1)
    config = {
        **QUIET,
        "multvae_hidden_dims": [64],
        "multvae_latent_dim": 16,
        "multvae_batch_size": 128,
        "multvae_epochs": 6,
        "multvae_total_anneal_steps": 100,
        "sae_k": 4,
        "sae_expansion": 4,
        "sae_max_epochs": 5,
        "sae_augment": 1,
    }
    run = train_recbole(SteerCFSplicedMultVAE, "ml-100k", config_dict=config)
    inner = run.model.steercf_model
    assert isinstance(inner, SplicedRecommender) and isinstance(inner.base, MultVAE)
    assert inner.base.hidden_dims == (64,) and inner.n_latents == 16 * 4
    # RecBole's Pop gets Recall@10 0.084 here
    assert 0.1 < run.result["test_result"]["recall@10"] < 1.0
    ids, _ = run.model.recommend(np.arange(1, 11), N=10)
    assert ids.shape == (10, 10) and (ids > 0).all()


def test_runner_rejects_a_class_that_is_not_a_recbole_model() -> None:
    with pytest.raises(InputError, match="GeneralRecommender"):
        run_recbole(SplicedRecommender, "ml-100k", config_dict=QUIET)
