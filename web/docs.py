"""The interactive API documentation — Swagger UI at /docs, ReDoc at /redoc — served with
the app's own copies of their scripts (web.assets), so both work on a network without the
internet. Neither page is in the OpenAPI document.

Both pages carry a Content-Security-Policy that lets them load only from this origin: the
browser itself refuses what the libraries would fetch from elsewhere (ReDoc's sidebar shows
a logo from cdn.redoc.ly — the visitor's address to a third party — and hides it when the
load fails), and an inline script runs only if it is the page's own, by hash.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from web.assets import vendor_url

SWAGGER_UI_PARAMETERS = {
    # Swagger UI would otherwise send the document to validator.swagger.io for its badge.
    "validatorUrl": None,
}
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str) -> str:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in INLINE_SCRIPT.findall(html)
    )
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' {hashes}".strip(),
            # Both libraries set style attributes and inject <style> elements at run time.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",  # ReDoc's search index
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _with_policy(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = content_security_policy(
        bytes(response.body).decode()
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def install(app: FastAPI) -> None:
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return _with_policy(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=vendor_url("swagger-ui-js", root),
                swagger_css_url=vendor_url("swagger-ui-css", root),
                swagger_favicon_url=vendor_url("favicon", root),
                swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            )
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return _with_policy(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=vendor_url("redoc", root),
                redoc_favicon_url=vendor_url("favicon", root),
                with_google_fonts=False,
            )
        )
