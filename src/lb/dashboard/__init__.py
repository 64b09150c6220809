"""The live dashboard at `{admin.path_prefix}/dashboard`: one page served by the app.

The page is put together from the files in `static/` (its markup, script and styles, and the
vendored uPlot chart library, MIT, see `static/uPlot.LICENSE`) into a single response, so the one
guarded request that loads it is all a browser needs: no other asset to authorise, no CDN, no build
step. Its script polls `status` and calls the admin API with the bearer token, which it takes once
from `?token=` (see `lb.admin.AdminGuard`) or from its own form, and keeps in sessionStorage.
The Content-Security-Policy allows exactly the two inlined scripts (by hash) and same-origin
requests.
"""

from __future__ import annotations

import base64
import hashlib
import html
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DASHBOARD = "/dashboard"
_SCRIPTS = ("uPlot.iife.min.js", "dashboard.js")
_STYLES = ("uPlot.min.css", "dashboard.css")
_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


def _read(name: str) -> str:
    return (resources.files(__name__) / "static" / name).read_text(encoding="utf-8")


def _hashes(texts: list[str]) -> str:
    """CSP sources allowing exactly these inline elements' contents, and nothing else inline."""
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(t.encode()).digest()).decode() + "'"
        for t in texts
    )


def _csp(scripts: list[str], styles: str) -> str:
    return (
        f"default-src 'none'; script-src {_hashes(scripts)}; style-src {_hashes([styles])}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


class DashboardPage:
    """The page, assembled on first use and then kept (the files do not change while serving)."""

    def __init__(self) -> None:
        self._page: tuple[bytes, str] | None = None

    def render(self) -> tuple[bytes, str]:
        """(the HTML document, its Content-Security-Policy)."""
        if self._page is None:
            scripts = [_read(name) for name in _SCRIPTS]
            styles = "\n".join(_read(name) for name in _STYLES)
            for text in scripts:
                if "</script" in text.lower():  # would end the inline element early
                    raise ValueError("a dashboard script contains '</script'")
            document = _read("index.html")
            document = document.replace("<!-- lb:styles -->", f"<style>{styles}</style>")
            document = document.replace(
                "<!-- lb:scripts -->", "".join(f"<script>{s}</script>" for s in scripts)
            )
            self._page = (document.encode("utf-8"), _csp(scripts, styles))
        return self._page


def dashboard_routes(prefix: str) -> list[Route]:
    page = DashboardPage()

    async def dashboard(request: Request) -> Response:
        body, csp = page.render()
        headers = {**_HEADERS, "content-security-policy": csp}
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)

    return [Route(f"{prefix}{DASHBOARD}", dashboard, methods=["GET", "HEAD"])]


_LOGIN_STYLE = """\
body{font:15px system-ui,sans-serif;background:#f4f5f7;color:#1f2328;display:grid;
place-items:center;min-height:90vh;margin:0}
form{background:#fff;padding:28px 32px;border-radius:10px;box-shadow:0 1px 3px #0002;
display:grid;gap:12px;min-width:320px}
h1{font-size:18px;margin:0} p{margin:0;color:#57606a}
input{font:inherit;padding:8px 10px;border:1px solid #d0d7de;border-radius:6px}
button{font:inherit;padding:8px;border:0;border-radius:6px;background:#1f6feb;color:#fff}
"""
_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lb dashboard: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{style}</style></head>
<body><form method="get" action="">
<h1>lb dashboard</h1><p>{message}</p>
<input type="password" name="token" placeholder="admin token" autocomplete="off" autofocus>
<button type="submit">Open dashboard</button>
</form></body></html>
"""


def login_page(wrong: bool = False) -> Response:
    """The 401 answer to a page request without a valid token: a form that asks for it."""
    message = "That token is not valid." if wrong else "This balancer asks for its admin token."
    body = _LOGIN.format(style=_LOGIN_STYLE, message=html.escape(message))
    headers = {
        **_HEADERS,
        "www-authenticate": "Bearer",
        "content-security-policy": f"default-src 'none'; style-src {_hashes([_LOGIN_STYLE])}; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    }
    return Response(body, 401, media_type="text/html; charset=utf-8", headers=headers)
