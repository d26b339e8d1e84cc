"""The vendored front-end libraries (web/static/vendor, scripts/vendor) and the API docs
pages that use them: everything a page loads comes from the app itself."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from web import assets
from web.app import create_app

VENDOR = assets.VENDOR_DIR
PACKAGES = assets.manifest()["packages"]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[TestClient]:
    """The app without a database: static files and the docs pages need none (the lazy
    session factory would make the SQLite file on first use; the test checks it never does)."""
    app = create_app(
        settings=Settings(environment="test", database_url=f"sqlite:///{tmp_path}/db/core.db")
    )
    with TestClient(app) as client:
        yield client
    assert not (tmp_path / "db").exists()


def _sha256(path: Path) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def _folder(package: dict) -> Path:
    return VENDOR / f"{package['name']}-{package['version']}"


@pytest.mark.parametrize("package", PACKAGES, ids=[p["name"] for p in PACKAGES])
def test_given_the_manifest_then_each_package_folder_holds_exactly_its_pinned_files(package):
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", package["integrity"])
    folder = _folder(package)
    expected = {Path(src).name: sha for src, sha in package["files"].items()}
    assert {f.name for f in folder.iterdir()} == set(expected)
    for name, sha in expected.items():
        assert _sha256(folder / name) == sha, f"{folder.name}/{name} differs from VENDOR.json"
    assert "LICENSE" in expected, f"{package['name']} is vendored without its licence"
    assert set(package["assets"].values()) <= set(expected)


def test_given_the_vendor_folder_then_no_unpinned_version_and_no_source_map_is_left():
    pinned = {_folder(p).name for p in PACKAGES} | {"VENDOR.json"}
    assert {p.name for p in VENDOR.iterdir()} == pinned
    assert not list(VENDOR.rglob("*.map"))


def test_given_htmx_then_it_is_version_2_as_the_sse_extension_needs():
    htmx = next(p for p in PACKAGES if p["name"] == "htmx.org")
    assert htmx["version"].split(".")[0] == "2"
    assert f'version:"{htmx["version"]}"' in (_folder(htmx) / "htmx.min.js").read_text()


@pytest.mark.parametrize(
    ("name", "content_type", "starts_with"),
    [
        ("htmx", "text/javascript; charset=utf-8", b"var htmx"),
        ("htmx-sse", "text/javascript; charset=utf-8", b"/*"),
        ("echarts", "text/javascript; charset=utf-8", b"\n/*"),
        ("swagger-ui-js", "text/javascript; charset=utf-8", b"/*!"),
        ("swagger-ui-css", "text/css; charset=utf-8", b".swagger-ui"),
        ("redoc", "text/javascript; charset=utf-8", b"/*!"),
        ("favicon", "image/png", b"\x89PNG"),
    ],
)
def test_given_a_vendored_asset_when_fetched_then_served_with_its_type_and_cached_for_a_year(
    site, name, content_type, starts_with
):
    url = assets.vendor_url(name)
    assert re.fullmatch(r"/static/vendor/[a-z.-]+-\d+\.\d+\.\d+/[\w.-]+", url)
    response = site.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content.startswith(starts_with)
    assert response.content == (assets.STATIC_DIR / url.removeprefix("/static/")).read_bytes()


def test_given_an_etag_when_fetched_again_then_304_without_the_body(site):
    url = assets.vendor_url("htmx")
    etag = site.get(url).headers["etag"]
    again = site.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_given_the_projects_own_static_file_then_revalidated_not_cached_for_a_year(site):
    response = site.get("/static/vendor/VENDOR.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.json()["packages"] == PACKAGES


@pytest.mark.parametrize(
    "path",
    ["/static/vendor/htmx.org-1.9.0/htmx.min.js", "/static/../assets.py", "/static/%2e%2e/app.py"],
)
def test_given_a_path_outside_the_vendored_files_then_404(site, path):
    assert site.get(path).status_code == 404


def test_given_an_unknown_asset_name_then_the_error_lists_the_known_ones():
    with pytest.raises(KeyError, match="htmx-sse"):
        assets.vendor_url("jquery")


def _references(html: str) -> list[str]:
    return re.findall(r'(?:src|href|spec-url)="([^"]*)"', html)


@pytest.mark.parametrize(
    ("page", "needs"), [("/docs", {"swagger-ui-js", "swagger-ui-css"}), ("/redoc", {"redoc"})]
)
def test_given_the_docs_pages_then_they_load_only_the_apps_own_files(site, page, needs):
    response = site.get(page)
    assert response.status_code == 200
    html = response.text
    assert not re.search(r"https?://|//[a-z]", html, re.IGNORECASE), "a URL to another host"
    refs = _references(html)
    assert {assets.vendor_url(n) for n in needs | {"favicon"}} <= set(refs)
    for ref in refs:
        assert site.get(ref).status_code == 200, ref
    assert "/openapi.json" in html
    assert "fonts.googleapis" not in html


def test_given_swagger_ui_then_its_online_validator_is_off(site):
    assert '"validatorUrl": null' in site.get("/docs").text


def test_given_a_proxy_prefix_then_the_docs_pages_point_under_it(tmp_path):
    app = create_app(
        settings=Settings(environment="test", database_url=f"sqlite:///{tmp_path}/core.db")
    )
    with TestClient(app, root_path="/hotline") as client:
        html = client.get("/docs").text
    assert "url: '/hotline/openapi.json'" in html
    assert f'src="/hotline{assets.vendor_url("swagger-ui-js")}"' in html


def test_given_the_openapi_document_then_docs_and_operational_routes_are_not_in_it(site):
    paths = site.get("/openapi.json").json()["paths"]
    assert not {"/docs", "/redoc", "/health", "/ready", "/static"} & set(paths)
    assert any(p.startswith("/api/v1/") for p in paths)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_given_the_docs_pages_then_their_policy_allows_only_this_origin_and_their_own_script(
    site, page
):
    response = site.get(page)
    policy = dict(
        directive.split(" ", 1)
        for directive in response.headers["content-security-policy"].split("; ")
    )
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    allowed = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in inline
    }
    assert set(policy["script-src"].split()) == {"'self'"} | allowed
    assert len(allowed) == (1 if page == "/docs" else 0)
