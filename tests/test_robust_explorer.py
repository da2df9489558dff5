"""Issue 18, the explorer: it answers only the host names it serves (DNS rebinding),
warns when it listens beyond loopback, renders its API docs with no network, takes no
JSON ``true`` for an id or a number, keeps reads going while a concept mapping builds,
and keeps its mapping cache at its bound.

One small spliced ELSA on MovieLens 100K (seconds to fit) serves every test: what is
checked is the web layer and its caches, not the model's quality."""

from __future__ import annotations

import re
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("fastapi_offline")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from steercf.cli import main  # noqa: E402
from steercf.data import load_ml100k  # noqa: E402
from steercf.errors import InputError  # noqa: E402
from steercf.evaluation import split_users  # noqa: E402
from steercf.explorer import RecommenderExplorer, create_app  # noqa: E402
from steercf.explorer import recommender as recommender_module  # noqa: E402
from steercf.explorer.app import SearchIn, allowed_host_names  # noqa: E402
from steercf.explorer.cache import BuildCache  # noqa: E402
from steercf.explorer.server import running, serve  # noqa: E402
from steercf.models import ELSA  # noqa: E402
from steercf.models.spliced import SplicedRecommender  # noqa: E402
from steercf.sae import TrainConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    data = load_ml100k()
    split = split_users(data.matrix, seed=0)
    base = ELSA(factors=16, batch_size=256, epochs=1, progress=False)
    base.fit(split.train, split.val_full)
    spliced = SplicedRecommender(
        base, {"k": 4, "expansion": 2}, TrainConfig(max_epochs=2, progress=False)
    )
    return spliced.fit(split.train, split.val_full), data


@pytest.fixture(scope="module")
def explorer(model) -> RecommenderExplorer:
    return RecommenderExplorer(*model)


@pytest.fixture(scope="module")
def app(explorer):
    return create_app(explorer)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, base_url="http://localhost")


def get_with_host(client: TestClient, path: str, host: str) -> httpx.Response:
    return client.get(path, headers={"host": host})


@pytest.mark.parametrize(
    "host",
    ["localhost:1@evil.com", "localhost@evil.com", "localhost:80x", "localhost:", "local host",
     "[::1", "[::1]x", "localhost:8000:1", "localhost/evil.com", "127.0.0.1:99999999"],
)  # fmt: skip
def test_a_malformed_host_header_is_refused(client, host):
    """`Host: localhost:1@evil.com` was answered (200): the parser kept "localhost"."""
    response = get_with_host(client, "/api/info", host)
    assert response.status_code == 400, (host, response.text)
    assert "malformed Host header" in response.json()["error"]
    with pytest.raises(InputError, match="not a host name"):
        allowed_host_names([host])


# ---- (1) the Host header -------------------------------------------------------------------
def test_only_loopback_names_and_named_hosts_are_answered(app, client, explorer):
    for host in ("localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1:53117", "[::1]:8000"):
        response = get_with_host(client, "/api/info", host)
        assert response.status_code == 200, (host, response.text)
        assert response.json()["n_users"] == explorer.data.n_users
    for host in ("evil.com", "evil.com:8000", "localhost.evil.com", "127.0.0.1.nip.io", ""):
        response = get_with_host(client, "/api/info", host)
        assert response.status_code == 403, (host, response.text)
        error = response.json()["error"]
        assert "n_users" not in response.text  # no data leaks with the refusal
        assert "localhost, 127.0.0.1, [::1] only" in error and "--allow-host" in error
    assert repr("evil.com") in get_with_host(client, "/api/info", "evil.com:80").json()["error"]
    refused = client.post(
        "/api/recommend", json={"user": "196", "n": 3}, headers={"host": "evil.com"}
    )
    assert refused.status_code == 403
    # a host the server was told to serve (--host / --allow-host) is answered too
    named = TestClient(create_app(explorer, allowed_hosts=["box.lan", "10.1.2.3"]))
    assert get_with_host(named, "/api/health", "box.lan:8000").status_code == 200
    assert get_with_host(named, "/api/health", "10.1.2.3").status_code == 200
    assert get_with_host(named, "/api/health", "evil.com").status_code == 403
    with pytest.raises(InputError, match="not a host name"):
        allowed_host_names(["*"])
    # behind a real server as well (the browser's view)
    with running(app) as url:
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200
        rebound = httpx.get(f"{url}/api/info", headers={"host": "evil.com"}, timeout=10)
        assert rebound.status_code == 403 and "error" in rebound.json()


# ---- (2) listening beyond loopback -----------------------------------------------------------
def test_listening_on_every_interface_warns_of_no_authentication(
    model, tmp_path, monkeypatch, capsys
):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append((app, kw)))
    for host in ("127.0.0.1", "localhost", "::1"):
        serve(object(), host, 8000, quiet=True)
        assert capsys.readouterr().err == "", host
    serve(object(), "0.0.0.0", 8000, quiet=True)
    warning = capsys.readouterr().err
    assert "every network interface" in warning and "NO AUTHENTICATION" in warning
    serve(object(), "192.0.2.7", 8000, quiet=True)
    assert "NO AUTHENTICATION" in capsys.readouterr().err
    # through the command: warned, and the named host is answered
    spliced, _ = model
    spliced.save(tmp_path / "spliced")
    command = ["serve", str(tmp_path / "spliced"), "--data", "ml-100k", "--host", "0.0.0.0"]
    assert main([*command, "--allow-host", "box.lan", "--quiet"]) == 0
    assert "NO AUTHENTICATION" in capsys.readouterr().err
    app, options = served[-1]
    assert options["host"] == "0.0.0.0"
    assert get_with_host(TestClient(app), "/api/health", "box.lan:8000").status_code == 200
    assert get_with_host(TestClient(app), "/api/health", "evil.com").status_code == 403
    assert main([*command, "--allow-host", "*.lan"]) == 2
    assert "not a host name" in capsys.readouterr().err


# ---- (3) the API docs offline -----------------------------------------------------------------
def test_api_docs_render_with_no_network(app, client):
    page = client.get("/api/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert client.get(url).status_code == 200, url
    assert not re.search(r"https?://", page.text), "the page names an outside URL"
    assert len(client.get("/api/docs-assets/swagger-ui-bundle.js").content) > 100_000
    # in a browser that may reach nothing but the server, Swagger UI draws the API
    from test_explorer import CHROMIUM_ARGS, chromium_or_skip

    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with running(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def only_local(route) -> None:
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.goto(f"{url}/api/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            assert page.locator(".opblock").count() >= 10
            assert "/api/recommend" in page.content()
        finally:
            browser.close()
    assert outside == []


# ---- (4) JSON booleans are no ids or numbers ----------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": True}, "user"),
        ({"items": ["50", True]}, "items.1"),
        ({"user": "196", "knobs": [{"latent": True, "strength": 0.5}]}, "knobs.0.latent"),
        ({"user": "196", "knobs": [{"latent": 1, "strength": True}]}, "knobs.0.strength"),
        ({"user": "196", "n": True}, "n"),
        ({"user": "196", "top_latents": True}, "top_latents"),
    ],
)
def test_json_true_is_refused_where_an_id_or_number_is_expected(client, body, field):
    response = client.post("/api/recommend", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith(f"{field}: ") and "true" in error, error


def test_json_numbers_still_name_users_latents_and_sizes(client):
    # the same fields as numbers keep working: only booleans are refused
    response = client.post(
        "/api/recommend",
        json={"user": 196, "knobs": [{"latent": 1, "strength": 1}], "n": 3, "explain": False},
    )
    assert response.status_code == 200, response.text
    assert response.json()["knobs"][0]["latents"] == [1] and len(response.json()["after"]) == 3
    with pytest.raises(ValidationError, match="sliders.0.latent"):
        SearchIn.model_validate({"query": "x", "sliders": [{"latent": True, "strength": 0.5}]})


# ---- (5) building a mapping blocks no reads; the cache stays bounded ------------------------
def test_reads_return_while_a_concept_mapping_is_being_built(app, explorer, monkeypatch):
    default = (explorer.source, explorer.mapping, explorer.top_latents)
    other = next(s for s in explorer.sources if s != explorer.source)
    assert default in explorer._knobs and (other, "most_unique", 2) not in explorer._knobs
    build = recommender_module.ConceptKnobs.for_model
    started, release = threading.Event(), threading.Event()
    builds: list[tuple] = []

    def slow_build(model, data, source, mapping, *args):
        builds.append((source, mapping))
        started.set()
        assert release.wait(30), "the test never released the build"
        return build(model, data, source, mapping, *args)

    monkeypatch.setattr(recommender_module.ConceptKnobs, "for_model", slow_build)
    answers: list[int] = []
    with running(app) as url:

        def build_request(user: str) -> None:
            params = {"source": other, "mapping": "most_unique", "top_latents": 2}
            body = {"user": user, "n": 3, **params}
            answers.append(httpx.post(f"{url}/api/recommend", json=body, timeout=60).status_code)

        # two requests for the same new mapping: one builds, the other waits for it
        waiting = [threading.Thread(target=build_request, args=(u,)) for u in ("196", "186")]
        try:
            for thread in waiting:
                thread.start()
            assert started.wait(30), "the build never started"
            begin = time.monotonic()
            for path in ("/api/latents/3", "/api/info", f"/api/concepts?source={default[0]}"):
                response = httpx.get(f"{url}{path}", timeout=10)
                assert response.status_code == 200, (path, response.text)
            plain = httpx.post(f"{url}/api/recommend", json={"user": "1", "n": 3}, timeout=10)
            assert plain.status_code == 200, plain.text
            assert time.monotonic() - begin < 5 and not release.is_set()
            assert answers == []  # the mapping requests were still waiting on the build
        finally:
            release.set()
            for thread in waiting:
                thread.join(60)
    assert answers == [200, 200]
    assert builds == [(other, "most_unique")]  # built once for both requests


def test_the_concept_mapping_cache_stays_at_its_bound(explorer):
    default = (explorer.source, explorer.mapping, explorer.top_latents)
    settings = [
        (source, mapping, top)
        for source in explorer.sources
        for mapping in ("best_characterizes", "most_unique", "decoder_effect")
        for top in (1, 2, 3, 4)
    ]
    assert len(settings) > recommender_module.KNOB_CACHE + 1
    for key in settings:
        explorer.knobs_for(*key)
        # the default (every latent page reads it) stays, beside KNOB_CACHE others
        assert len(explorer._knobs) <= recommender_module.KNOB_CACHE + 1
        assert default in explorer._knobs and key in explorer._knobs
    assert settings[0] not in explorer._knobs  # the least recently used went first
    rebuilt = explorer.knobs_for(*settings[0])  # and comes back the same when asked again
    again = recommender_module.ConceptKnobs.for_model(
        explorer.model,
        explorer.data,
        settings[0][0],
        settings[0][1],
        explorer.split.train_users,
        settings[0][2],
    )
    assert list(rebuilt.mapping.tag_names) == list(again.mapping.tag_names)
    assert (rebuilt.mapping.scores == again.mapping.scores).all()


def test_build_cache_bound_order_and_failed_builds():
    cache: BuildCache[int] = BuildCache(2, pinned=("keep",))
    assert cache.get("keep", lambda: 0) == 0
    for i in range(5):
        assert cache.get(i, lambda i=i: i * 10) == i * 10
    assert len(cache) == 3 and "keep" in cache and 3 in cache and 4 in cache
    cache.get(3, lambda: -1)  # a hit: 3 becomes the most recent, 4 goes next
    cache.get(9, lambda: 90)
    assert 4 not in cache and 3 in cache and cache.get(3, lambda: -1) == 30

    def fail() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get("bad", fail)
    assert "bad" not in cache and cache.get("bad", lambda: 7) == 7
    with pytest.raises(ValueError, match="at least one"):
        BuildCache(0)
