"""Static files: web/static/ served at /static.

The third-party front-end libraries (htmx and its SSE extension, Swagger UI, ReDoc,
ECharts) are copied from their npm packages into web/static/vendor/<package>-<version>/ by
`scripts/vendor` and committed, so a page never loads anything from another host and the
app needs no network at install or run time. web/static/vendor/VENDOR.json pins each
package and names its files; templates and /docs ask `vendor_url(name)` for a URL rather
than spelling a version.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
MANIFEST = VENDOR_DIR / "VENDOR.json"
PREFIX = "/static"

# A vendored file's URL holds its package's version, so it never changes: browsers may keep
# it a year without asking. The project's own files change in place and are revalidated
# (ETag / Last-Modified, answered 304 while unchanged).
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Not left to the mimetypes module, whose answer for .js depends on the Python version and
# the host's /etc/mime.types.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
}


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return data


@cache
def _vendor_paths() -> dict[str, str]:
    paths = {}
    for package in manifest()["packages"]:
        folder = f"{package['name']}-{package['version']}"
        for name, file in package["assets"].items():
            paths[name] = f"vendor/{folder}/{file}"
    return paths


def vendor_names() -> list[str]:
    return sorted(_vendor_paths())


def vendor_url(name: str, root_path: str = "") -> str:
    """The URL of a vendored file by its name in VENDOR.json's `assets` ("htmx",
    "htmx-sse", "echarts", "swagger-ui-js", ...); `root_path` is the app's mount prefix
    behind a proxy, if any."""
    try:
        path = _vendor_paths()[name]
    except KeyError:
        raise KeyError(f"no vendored asset {name!r}; known: {', '.join(vendor_names())}") from None
    return f"{root_path.rstrip('/')}{PREFIX}/{path}"


class Assets(StaticFiles):
    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        path = Path(full_path)
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is not None and response.status_code != 304:
            response.headers["content-type"] = media_type
        vendored = path.is_relative_to(VENDOR_DIR) and path.name != MANIFEST.name
        response.headers["cache-control"] = IMMUTABLE if vendored else REVALIDATE
        response.headers["x-content-type-options"] = "nosniff"
        return response


def install(app: FastAPI) -> None:
    app.mount(PREFIX, Assets(directory=STATIC_DIR), name="static")
