"""Streaming batch scoring: equal to recommend/steer, chunked, resumable, config-checked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from steercf.distributed import Collective, launch
from steercf.errors import InputError
from steercf.models.elsa import ELSA
from steercf.models.spliced import SplicedRecommender
from steercf.sae import TrainConfig
from steercf.scoring import (
    CSRDirSource,
    MatrixSource,
    read_scores,
    save_csr_dir,
    score_users,
)
from steercf.steering import Knob, steer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def matrix() -> sp.csr_matrix:
    """(530, 120) binary interactions, every row non-empty."""
    rng = np.random.default_rng(4)
    dense = (rng.random((530, 120)) < 0.05).astype(np.float32)
    dense[np.arange(530), rng.integers(0, 120, 530)] = 1.0
    return sp.csr_matrix(dense)


@pytest.fixture(scope="module")
def elsa(matrix) -> ELSA:
    torch.set_num_threads(1)
    return ELSA(factors=16, batch_size=64, epochs=2, progress=False).fit(matrix)


@pytest.fixture(scope="module")
def spliced(elsa, matrix) -> SplicedRecommender:
    torch.set_num_threads(1)
    config = TrainConfig(max_epochs=3, progress=False)
    return SplicedRecommender(elsa, {"k": 4, "expansion": 4}, config, augment=0).fit(matrix)


def test_scores_equal_recommend_and_memory_is_per_batch(elsa, matrix, tmp_path, monkeypatch):
    batches = []
    decode = elsa.decode
    monkeypatch.setattr(elsa, "decode", lambda z: batches.append(z.shape[0]) or decode(z))
    report = score_users(elsa, matrix, tmp_path, N=7, chunk_users=100, batch_users=33)
    assert max(batches) == 33 and sum(batches) == matrix.shape[0]  # never the whole matrix
    assert report.n_chunks == 6 and report.scored_chunks == list(range(6))
    assert sorted(p.name for p in tmp_path.glob("part-*")) == [
        f"part-{c:05d}.parquet" for c in range(6)
    ]
    frame = read_scores(tmp_path)
    assert len(frame) == matrix.shape[0] * 7
    assert frame["user"].tolist() == np.repeat(np.arange(530), 7).tolist()
    assert frame["rank"].tolist() == np.tile(np.arange(1, 8), 530).tolist()
    ids, scores = elsa.recommend(matrix, N=7)
    np.testing.assert_array_equal(frame["item"].to_numpy().reshape(530, 7), ids)
    np.testing.assert_allclose(frame["score"].to_numpy().reshape(530, 7), scores, rtol=1e-6)
    seen = matrix[np.repeat(np.arange(530), 7), frame["item"].to_numpy()]
    assert not np.asarray(seen).any()  # no item a user already has
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 530 * 7


def test_interrupted_run_resumes_to_the_same_output(elsa, matrix, tmp_path):
    settings = dict(N=5, chunk_users=90, batch_users=40, progress=False)
    score_users(elsa, matrix, tmp_path / "whole", **settings)
    expected = read_scores(tmp_path / "whole")

    class Crash(Exception):
        pass

    def crash_after_chunk_2(chunk: int) -> None:
        if chunk == 2:
            raise Crash

    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        score_users(elsa, matrix, out, on_chunk=crash_after_chunk_2, **settings)
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-{c:05d}.parquet" for c in range(3)]
    with pytest.raises(InputError, match="not complete"):
        read_scores(out)
    # what a kill in the middle of a write leaves: a temporary file, and (written by
    # something else) a damaged part under its final name; both must be redone
    (out / ".part-00003.parquet.tmp-1234").write_bytes(b"half a file")
    (out / "part-00004.parquet").write_bytes(b"not parquet")

    seen = []
    report = score_users(elsa, matrix, out, on_chunk=seen.append, **settings)
    assert seen == report.scored_chunks == [3, 4, 5] and report.skipped_chunks == [0, 1, 2]
    assert report.users_scored == matrix.shape[0] - 3 * 90
    assert not list(out.glob(".part-*"))
    pd.testing.assert_frame_equal(read_scores(out), expected)
    # a finished run reruns as a no-op
    assert score_users(elsa, matrix, out, **settings).scored_chunks == []


def test_a_different_config_is_refused(elsa, matrix, tmp_path):
    settings = dict(N=5, chunk_users=200, progress=False)
    score_users(elsa, matrix, tmp_path, **settings)
    with pytest.raises(InputError, match="N differ"):
        score_users(elsa, matrix, tmp_path, **{**settings, "N": 6})
    with pytest.raises(InputError, match="chunk_users differ"):
        score_users(elsa, matrix, tmp_path, **{**settings, "chunk_users": 100})
    other_data = matrix.copy()
    other_data.data[0] = 2.0  # one interaction weighs more
    with pytest.raises(InputError, match="data differ"):
        score_users(elsa, other_data, tmp_path, **settings)
    retrained = ELSA(factors=16, batch_size=64, epochs=1, seed=1, progress=False).fit(matrix)
    with pytest.raises(InputError, match="model differ"):
        score_users(retrained, matrix, tmp_path, **settings)
    report = score_users(retrained, matrix, tmp_path, overwrite=True, **settings)
    assert report.scored_chunks == [0, 1, 2]


def test_steered_scores_equal_steer_with_original_ids(spliced, matrix, tmp_path):
    codes = spliced.encode(matrix).codes
    latent = int(codes.sum(0).argmax())
    knobs = [Knob.of(latent, 0.5), Knob.of([(latent + 1) % spliced.n_latents], -1.0)]
    users = np.array([f"u{i}" for i in range(530)], dtype=object)
    items = np.arange(1000, 1120)
    score_users(
        spliced, matrix, tmp_path, N=6, chunk_users=128, knobs=knobs,
        user_ids=users, item_ids=items, progress=False,
    )  # fmt: skip
    frame = read_scores(tmp_path)
    assert frame["user"].tolist() == np.repeat(users, 6).tolist()
    ids, _ = steer(spliced, matrix, knobs, N=6)
    np.testing.assert_array_equal(frame["item"].to_numpy().reshape(530, 6), items[ids])
    plain, _ = spliced.recommend(matrix, N=6)
    assert (ids != plain).any()  # steering changed something

    with pytest.raises(InputError, match="spliced"):
        score_users(spliced.base, matrix, tmp_path / "x", knobs=knobs)
    with pytest.raises(InputError, match="out of range"):
        score_users(spliced, matrix, tmp_path / "x", knobs=[Knob.of(10**6, 0.5)])


def test_bf16_scores_stay_close(elsa, matrix, tmp_path):
    score_users(elsa, matrix, tmp_path / "fp32", N=10, progress=False)
    score_users(elsa, matrix, tmp_path / "bf16", N=10, precision="bf16", progress=False)
    exact, rough = read_scores(tmp_path / "fp32"), read_scores(tmp_path / "bf16")
    scale = np.abs(exact["score"]).max()
    top1 = exact["rank"] == 1
    # bfloat16 keeps ~3 significant digits: scores agree to ~1 %, lists mostly agree
    assert (exact["item"][top1].to_numpy() == rough["item"][top1].to_numpy()).mean() > 0.8
    np.testing.assert_allclose(rough["score"][top1], exact["score"][top1], atol=0.02 * scale)


def test_csr_directory_reads_ranges_and_hashes_like_memory(matrix, tmp_path):
    source = CSRDirSource(save_csr_dir(matrix, tmp_path / "csr"))
    assert source.shape == matrix.shape
    for start, stop in ((0, 1), (17, 301), (500, 530), (530, 530)):
        assert (source.rows(start, stop) != matrix[start:stop]).nnz == 0
    assert source.fingerprint() == MatrixSource(matrix).fingerprint()
    with pytest.raises(InputError, match="not a CSR directory"):
        CSRDirSource(tmp_path)


def _score_on_ranks(group: Collective, model, matrix, out) -> list[int]:
    return score_users(model, matrix, out, N=4, chunk_users=100, group=group).scored_chunks


def test_two_processes_split_the_chunks(elsa, matrix, tmp_path):
    rank0_chunks = launch(_score_on_ranks, 2, elsa, matrix, tmp_path / "two")
    assert rank0_chunks == [0, 2, 4]
    score_users(elsa, matrix, tmp_path / "one", N=4, chunk_users=100, progress=False)
    pd.testing.assert_frame_equal(read_scores(tmp_path / "two"), read_scores(tmp_path / "one"))


@pytest.mark.slow
def test_cli_score_writes_every_user_and_resumes(tmp_path, capsys):
    from steercf.cli import main
    from steercf.data import load_dataset

    model = tmp_path / "elsa"
    params = ["--param", "factors=16", "--param", "epochs=1", "--param", "batch_size=256"]
    assert main(["train", "--model", "elsa", *params, "--out", str(model), "--quiet"]) == 0
    command = ["score", str(model), "--out", str(tmp_path / "scores"), "-n", "5", "--quiet"]
    assert main([*command, "--chunk-users", "300"]) == 0
    assert "4 scored now, 0 found complete" in capsys.readouterr().out
    data = load_dataset("ml-100k")
    frame = read_scores(tmp_path / "scores")
    assert len(frame) == data.n_users * 5
    assert set(frame["user"]) == set(data.user_ids.tolist())
    assert set(frame["item"]) <= set(data.item_ids.tolist())
    assert main([*command, "--chunk-users", "300"]) == 0
    assert "0 scored now, 4 found complete" in capsys.readouterr().out
    assert main([*command, "--chunk-users", "100"]) == 2
    assert "chunk_users differ" in capsys.readouterr().err
    assert main([*command, "--concept", "+latent:3"]) == 2
    assert "needs a spliced model" in capsys.readouterr().err


def test_n_beyond_the_unseen_items_writes_only_unseen_items(elsa, matrix, tmp_path):
    """Issue 14: ``score -n 5000`` wrote every user's own history at -inf."""
    report = score_users(elsa, matrix, tmp_path, N=matrix.shape[1] + 50, progress=False)
    frame = read_scores(tmp_path)
    assert report.N == matrix.shape[1]
    assert len(frame) == matrix.shape[0] * matrix.shape[1] - matrix.nnz
    assert np.isfinite(frame["score"]).all()
    seen = set(zip(*matrix.nonzero(), strict=True))
    assert not any((u, i) in seen for u, i in zip(frame["user"], frame["item"], strict=True))
    # a rerun finds every (shorter) part file complete
    again = score_users(elsa, matrix, tmp_path, N=matrix.shape[1] + 50, progress=False)
    assert again.scored_chunks == []
