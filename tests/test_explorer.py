"""The explorer web app over a spliced recommender: its JSON API in-process (FastAPI's
TestClient), the ``serve`` command behind a real uvicorn, and the page itself driven in
headless Chromium. A small spliced ELSA is trained on MovieLens 100K through the CLI,
so the saved directory records its data set the way users' models do."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from steercf.cli import main  # noqa: E402
from steercf.concepts import audience_activations  # noqa: E402
from steercf.concepts.report import sae_item_activations  # noqa: E402
from steercf.explorer import RecommenderExplorer, create_app  # noqa: E402
from steercf.explorer.server import running  # noqa: E402
from steercf.models import load_model  # noqa: E402
from steercf.steering import ConceptKnobs, Knob, compare, explain_items  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO_ROOT / "artifacts" / "explorer_steered.png"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explorer")
    base, spliced = out / "elsa", out / "spliced"
    params = ["--param", "factors=64", "--param", "epochs=8", "--param", "batch_size=64"]
    assert main(["train", "--model", "elsa", *params, "--out", str(base), "--quiet"]) == 0
    sae = ["--k", "8", "--expansion", "4", "--max-epochs", "20", "--augment", "2"]
    assert main(["train-sae", str(base), "--out", str(spliced), *sae, "--quiet"]) == 0
    return spliced


@pytest.fixture(scope="module")
def app(model_dir):
    # no data given: the explorer must find ml-100k from the model's own metadata
    return create_app(model_dir)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, base_url="http://localhost")  # the app answers loopback names


@pytest.fixture(scope="module")
def explorer(app) -> RecommenderExplorer:
    return app.state.explorer


def titles(items: list[dict]) -> list[str]:
    return [item["title"] for item in items]


def test_info_names_the_model_and_its_data_set(client, explorer):
    info = client.get("/api/info").json()
    assert info["kind"] == "recommender" and info["dataset"] == "ml-100k"
    assert info["n_items"] == explorer.data.n_items == explorer.model.n_items_
    assert info["n_latents"] == explorer.model.n_latents == 256
    assert info["sources"][:2] == ["genres", "kg"]
    # the default user is a held-out test user of the split the model was trained under
    default = info["defaults"]["user"]
    row = int(explorer.data.user_index(np.asarray([default], dtype=object))[0])
    assert row in set(explorer.split.test_users.tolist())


def test_plain_list_is_the_models_recommendation(client, explorer):
    answer = client.post("/api/recommend", json={"user": "196", "n": 10}).json()
    row = int(explorer.data.user_index(np.asarray(["196"], dtype=object))[0])
    history = explorer.data.matrix[row]
    ids, scores = explorer.model.recommend(history, N=10)
    assert [item["index"] for item in answer["before"]] == ids[0].tolist()
    assert np.allclose([item["score"] for item in answer["before"]], scores[0], atol=1e-5)
    assert titles(answer["before"]) == explorer.data.titles(ids[0])
    assert [item["index"] for item in answer["after"]] == ids[0].tolist()  # nothing turned
    assert all(item["before_rank"] == item["rank"] for item in answer["after"])
    assert answer["entered"] == [] and answer["left"] == []
    assert answer["history"]["n"] == history.nnz
    assert not set(history.indices) & {item["index"] for item in answer["before"]}
    # the user's latents are their sparse code, strongest first, with stored labels
    code = explorer.model.sparse_code(history).of(0)
    assert [(n["latent"], round(n["activation"], 5)) for n in answer["latents"]] == [
        (nid, round(value, 5)) for nid, value in code[:12]
    ]
    assert answer["latents"][0]["label"] == explorer.labels[code[0][0]].text


def test_steered_list_and_explanations_match_the_library(client, explorer, model_dir):
    body = {
        "user": "196",
        "knobs": [{"concept": "Horror", "strength": 0.4}, {"latent": 7, "strength": -0.5}],
        "n": 15,
    }
    answer = client.post("/api/recommend", json=body).json()
    model = load_model(model_dir)
    concept = ConceptKnobs.for_model(
        model, explorer.data, "genres", "decoder_effect", explorer.split.train_users, 8
    ).knob("Horror", 0.4)
    knobs = [concept, Knob.of(7, -0.5)]
    history = explorer.history(user="196")
    expected = compare(model, history, knobs, N=15)
    assert [item["index"] for item in answer["after"]] == expected.after_ids[0].tolist()
    assert answer["entered"] == expected.entered(0) and answer["left"] == expected.left(0)
    assert answer["knobs"][0] == {
        "name": "Horror",
        "strength": 0.4,
        "latents": list(concept.latents),
    }
    why = explain_items(model, history, expected.after_ids[0], knobs, shares=True)
    assert [[(w["latent"], w["share"]) for w in item["why"]] for item in answer["after"]] == [
        [(n, pytest.approx(share)) for n, _, share in reasons] for reasons in why
    ]
    for item in answer["after"]:
        if item["before_rank"] is None:
            assert item["index"] in answer["entered"]
        else:
            assert answer["before"][item["before_rank"] - 1]["index"] == item["index"]


def test_steering_toward_a_genre_raises_its_share(client, explorer):
    before, after = [], []
    for user in explorer.info()["example_users"][:6]:
        answer = client.post(
            "/api/recommend",
            json={
                "user": user,
                "knobs": [{"concept": "Horror", "strength": 1.0}],
                "explain": False,
            },
        ).json()
        before.append(np.mean(["Horror" in item["tags"] for item in answer["before"]]))
        after.append(np.mean(["Horror" in item["tags"] for item in answer["after"]]))
    assert np.mean(after) >= np.mean(before) + 0.1


def test_map_shows_the_test_users_moving_toward_the_concepts_items(client, explorer):
    answer = client.post("/api/map", json={"knobs": [{"concept": "Horror", "strength": 1.0}]})
    assert answer.status_code == 200, answer.text
    atlas = answer.json()
    n = atlas["n_users"]
    assert n == len(atlas["before"]) == len(atlas["after"]) > 10
    assert len(atlas["anchors"]) == len(atlas["items"]) == 12
    assert all("Horror" in item["tags"] for item in atlas["items"])
    assert atlas["moved_toward"] > 0.9
    away = client.post("/api/map", json={"knobs": [{"concept": "Horror", "strength": -1.0}]})
    assert away.json()["moved_toward"] < 0.1
    latent = client.post("/api/map", json={"knobs": [{"latent": 0, "strength": 1.0}]})
    assert latent.status_code == 200 and len(latent.json()["items"]) == 12
    resting = client.post("/api/map", json={"knobs": [{"concept": "Horror", "strength": 0}]})
    assert resting.status_code == 422 and "knob" in resting.json()["error"]
    unknown = client.post("/api/map", json={"knobs": [{"concept": "Horrror", "strength": 1}]})
    assert unknown.status_code == 404


def test_a_profile_of_a_users_items_gets_the_users_list(client, explorer):
    history = explorer.history(user="196")
    items = [str(explorer.data.item_ids[i]) for i in history.indices]
    knobs = [{"concept": "Comedy", "strength": -1.0}]
    by_user = client.post("/api/recommend", json={"user": "196", "knobs": knobs}).json()
    by_items = client.post("/api/recommend", json={"items": items, "knobs": knobs}).json()
    assert by_items["user"] is None
    assert titles(by_items["before"]) == titles(by_user["before"])
    assert titles(by_items["after"]) == titles(by_user["after"])


def test_search_and_pickers(client, explorer):
    star = client.get("/api/items", params={"q": "STAR WARS", "limit": 5}).json()
    assert star["items"][0]["title"] == "Star Wars (1977)"
    assert all("star wars" in item["title"].lower() for item in star["items"])
    assert "Sci-Fi" in star["items"][0]["tags"]
    users = client.get("/api/users", params={"q": "19", "limit": 50}).json()
    assert users["users"] and all(u["id"].startswith("19") for u in users["users"])
    assert {u["id"] for u in users["users"]} >= {"19", "196"}
    genres = client.get("/api/concepts").json()
    assert genres["source"] == "genres" and "Horror" in genres["concepts"]
    assert "unknown" not in genres["concepts"]  # the placeholder genre is no concept
    kg = client.get("/api/concepts", params={"source": "kg", "q": "directed_by"}).json()
    assert kg["concepts"] and all(c.startswith("directed_by:") for c in kg["concepts"])
    # each concept comes with a name a person reads: no bare knowledge-graph ids
    assert len(kg["display"]) == len(kg["concepts"])
    assert all(d.startswith("director of ") and ":m." not in d for d in kg["display"])
    by_name = client.get("/api/concepts", params={"source": "kg", "q": "actor in"}).json()
    assert by_name["concepts"] and all(c.startswith("actor:") for c in by_name["concepts"])


def test_latent_browser(client, explorer):
    listing = client.get("/api/latents", params={"q": "horror", "limit": 500}).json()
    assert listing["total"] == len(listing["latents"]) > 0
    assert all("horror" in n["label"].lower() for n in listing["latents"])
    # ordered by what users meet: most users first, latents no user activates last
    counts = [n["n_users"] for n in listing["latents"]]
    assert counts == sorted(counts, reverse=True)
    everything = client.get("/api/latents", params={"limit": 500}).json()["latents"]
    codes = explorer.model.encode(explorer.data.matrix).codes.numpy()
    for entry in everything[:20]:
        assert entry["n_users"] == int((codes[:, entry["latent"]] > 0).sum()) > 0
    first_idle = next((i for i, n in enumerate(everything) if not n["for_users"]), len(everything))
    assert all(not n["for_users"] for n in everything[first_idle:])

    nid = listing["latents"][0]["latent"]
    detail = client.get(f"/api/latents/{nid}").json()
    # top items as the labels read them: by the mean code of each item's training users
    train_rows = explorer.data.matrix[explorer.split.train_users]
    acts = audience_activations(explorer.model, train_rows)[:, nid]
    assert detail["top_items"][0]["index"] == int(np.argmax(acts))
    assert np.isclose(detail["top_items"][0]["activation"], acts.max(), rtol=1e-5)
    label_titles = [title for _, title, _ in explorer.labels[nid].top_items]
    shown = [item["title"] for item in detail["top_items"][: len(label_titles)]]
    assert shown == label_titles
    # the item count stays the one-item histories it fires for
    assert detail["n_items"] == int((sae_item_activations(explorer.model)[:, nid] > 0).sum())
    assert detail["label"] == explorer.labels[nid].text
    # the histogram counts every user of the data set whose code uses the latent
    codes = explorer.model.encode(explorer.data.matrix).codes
    active = codes[:, nid].numpy()
    assert detail["histogram"]["n_users"] == explorer.data.n_users
    assert (
        detail["histogram"]["n_active"] == sum(detail["histogram"]["counts"]) == (active > 0).sum()
    )
    # nearest latents: highest decoder cosine first, never the latent itself
    w = explorer.model.sae_.W_dec.detach().numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    cosine = w @ w[nid]
    cosine[nid] = -np.inf
    assert [m["latent"] for m in detail["nearest"]] == np.argsort(-cosine)[:8].tolist()


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"user": "no-such-user"}, 404, "unknown user id: 'no-such-user'"),
        ({"user": "196", "knobs": [{"concept": "Horor", "strength": 0.3}]}, 404, "'Horror'"),
        ({"user": "196", "knobs": [{"latent": 10**6, "strength": 0.3}]}, 404, "unknown latent"),
        (
            {
                "user": "196",
                "rule": "convex",
                "knobs": [{"concept": "Horror", "strength": 0.7}, {"latent": 3, "strength": 0.7}],
            },
            422,
            "sum to <= 1",
        ),
        (
            {"user": "196", "knobs": [{"concept": "Horror", "strength": 9}]},
            422,
            "less than or equal to 5",
        ),
        (
            {"user": "196", "knobs": [{"concept": "Horror", "latent": 2, "strength": 0.1}]},
            422,
            "exactly one",
        ),
        ({"user": "196", "n": 1000}, 422, "n: Input should be less than or equal to 100"),
        ({"user": "196", "items": ["50"]}, 422, "either 'user'"),
        ({}, 422, "either 'user'"),
        ({"items": []}, 422, "profile is empty"),
        ({"items": ["50", "no-such-item"]}, 404, "unknown item id: 'no-such-item'"),
        ({"user": "196", "rule": "sideways"}, 422, "rule"),
        ({"user": "196", "mapping": "astrology"}, 404, "unknown mapping 'astrology'"),
        ({"user": "196", "source": "moods"}, 404, "unknown concept source 'moods'"),
        ({"user": "196", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({"items": ["50"] * 2001}, 422, "at most 2000"),
    ],
)
def test_bad_requests_get_clear_4xx(client, body, status, message):
    response = client.post("/api/recommend", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert "Traceback" not in response.text


def test_malformed_and_oversized_bodies(client):
    nan = client.post(
        "/api/recommend",
        content=b'{"user": "196", "knobs": [{"concept": "Horror", "strength": NaN}]}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422 and "finite" in nan.json()["error"]
    broken = client.post(
        "/api/recommend", content=b'{"user": ', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["error"]
    huge = client.post(
        "/api/recommend",
        content=json.dumps({"items": ["50"] * 100_000}).encode(),
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and "too large" in huge.json()["error"]

    def chunks():  # no Content-Length: the limit must hold for streamed bodies too
        for _ in range(100):
            yield b" " * 4096

    streamed = client.post(
        "/api/recommend", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    for path, status, message in [
        ("/api/latents/abc", 422, "valid integer"),
        ("/api/latents/-1", 404, "unknown latent -1"),
        ("/api/items?q=", 422, "type part of a title"),
        (f"/api/items?q={'x' * 500}", 422, "at most 200 characters"),
        ("/api/latents?limit=0", 422, "limit"),
        ("/api/nothing-here", 404, "Not Found"),
    ]:
        response = client.get(path)
        assert response.status_code == status, (path, response.text)
        assert message in response.json()["error"], (path, response.text)


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "steercf explorer" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_runs_a_local_server(model_dir):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "steercf", "serve", str(model_dir), "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.25)
        assert health.json() == {"status": "ok"}
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/recommend",
            json={"user": "196", "knobs": [{"concept": "Horror", "strength": 0.5}], "n": 5},
            timeout=30,
        )
        assert answer.status_code == 200 and len(answer.json()["after"]) == 5
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert f"http://127.0.0.1:{port}/" in output  # local only by default


def test_serve_refuses_a_model_without_latents(model_dir, capsys):
    assert main(["serve", str(model_dir.parent / "elsa"), "--quiet"]) == 2
    assert "needs a spliced model" in capsys.readouterr().err
    assert main(["serve", str(model_dir.parent / "missing"), "--quiet"]) == 2
    assert "no model directory" in capsys.readouterr().err


# ---- the page in a real browser ------------------------------------------------------------
def chromium_or_skip() -> str:
    """The system Chromium for Playwright; CI sets STEERCF_REQUIRE_BROWSER=1 so that a
    missing browser fails there instead of skipping."""
    required = os.environ.get("STEERCF_REQUIRE_BROWSER") == "1"
    path = os.environ.get("STEERCF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("STEERCF_REQUIRE_BROWSER=1 but the playwright package is missing")
        pytest.skip("playwright is not installed")
    if not Path(path).is_file():
        if required:
            pytest.fail(f"STEERCF_REQUIRE_BROWSER=1 but no chromium at {path}")
        pytest.skip("no chromium (apt-get install chromium chromium-driver)")
    return path


def test_browser_slider_reranks_live(app, client):
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    errors: list[str] = []
    with running(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            after = page.locator("#after-list li .title .name")
            user = page.input_value("#user-input")
            plain = after.all_inner_texts()
            assert len(plain) == 20 and page.locator("#after-list li.entered").count() == 0

            # drag the Horror slider to the right: the steered list changes on its own
            slider = page.locator('input[data-key="c:Horror"]')
            box = slider.bounding_box()
            slider.click(position={"x": box["width"] * 0.8, "y": box["height"] / 2})
            page.wait_for_selector("#after-list li.entered")
            page.wait_for_function(
                "document.querySelector('#steer-status').textContent.includes('Horror')"
            )
            strength = float(slider.input_value())
            from steercf.steering import DEFAULT_RULE, MAX_ADDITIVE

            top = 1.0 if DEFAULT_RULE == "convex" else MAX_ADDITIVE  # the slider's range
            assert 0.5 * top < strength <= top
            steered = after.all_inner_texts()
            assert steered != plain
            expected = client.post(
                "/api/recommend",
                json={"user": user, "knobs": [{"concept": "Horror", "strength": strength}]},
            ).json()
            assert steered == titles(expected["after"])  # the page shows the API's answer
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # a latent slider turned down (negative) changes the list again
            latent = page.locator("#rec-latent-sliders input[type=range]").first
            box = latent.bounding_box()
            latent.click(position={"x": 2, "y": box["height"] / 2})
            page.wait_for_function(
                "document.querySelector('#steer-status').textContent.includes('latent:')"
            )
            assert float(latent.input_value()) < 0
            assert after.all_inner_texts() != steered

            # the map: the test users before and after these knobs, with anchor items
            page.click("#map-btn")
            page.wait_for_selector("#steer-map circle.map-anchor")
            assert page.locator("#steer-map circle.map-after").count() > 10
            assert "moved toward" in page.inner_text("#map-status")

            # the latent browser: click a latent, see its histogram and neighbours
            page.click("#tab-rec-latents")
            page.locator("#rec-latent-list li").first.click()
            page.wait_for_selector("#rec-latent-detail svg.histogram")
            assert page.locator("#rec-latent-detail svg.histogram rect").count() == 20
            assert page.locator("#rec-latent-detail ol li").count() > 8

            # a profile built by searching titles gets its own recommendations
            page.click("#tab-recommend")
            page.check("input[name=mode][value=profile]")
            page.fill("#item-search", "star wars")
            page.locator("#item-results li", has_text="Star Wars (1977)").click()
            page.wait_for_function(
                "document.querySelector('#user-summary h2')?.textContent.startsWith('Your profile')"
            )
            assert page.locator("#profile-items .chip").count() == 1
            assert page.locator("#before-list li").count() == 20
        finally:
            browser.close()
    assert not errors, errors
