"""Admin endpoints of runtime control: PATCH a backend's state or weight, POST reload."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lb.control.overrides import PatchError, find_backend, parse_patch
from lb.control.reload import ReloadError, log_reload, log_reload_failure

if TYPE_CHECKING:
    from lb.app import LoadBalancer

MAX_BODY = 64 * 1024


def _json(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status, headers={"cache-control": "no-store"})


def admin_error(
    status: int,
    code: str,
    detail: str,
    problems: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An admin endpoint's error: JSON `{"error", "detail"}` (operators' words, no cause of a
    failure inside: that goes to the log), never cached."""
    body: dict[str, Any] = {"error": code, "detail": detail}
    if problems is not None:
        body["problems"] = problems
    return JSONResponse(body, status, headers={"cache-control": "no-store", **(headers or {})})


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is over `MAX_BODY`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return body


def control_routes(app: LoadBalancer, prefix: str) -> list[Route]:
    async def patch_backend(request: Request) -> Response:
        pool, backend_id = request.path_params["pool"], request.path_params["backend_id"]
        if find_backend(app.generation, pool, backend_id) is None:
            return admin_error(404, "not_found", f"no backend {backend_id!r} in pool {pool!r}")
        body = await _read_body(request)
        if body is None:
            return admin_error(400, "bad_request", f"body larger than {MAX_BODY} bytes")
        try:
            state, weight = parse_patch(body)
        except PatchError as exc:
            return admin_error(400, "bad_request", str(exc), exc.problems)
        try:
            backend = await app.control.set_backend(pool, backend_id, state, weight)
        except KeyError:  # removed by a reload while the body was read
            return admin_error(404, "not_found", f"no backend {backend_id!r} in pool {pool!r}")
        return _json(
            {
                "pool": pool,
                "id": backend.id,
                "url": backend.url,
                "state": backend.state,
                "admin_state": backend.admin_state,
                "weight": backend.weight,
            }
        )

    async def reload(request: Request) -> Response:
        trigger = f"POST {request.url.path} from {request.client.host if request.client else '?'}"
        try:
            report = await app.control.reload(share=True)
        except ReloadError as exc:
            log_reload_failure(trigger, exc.problems)
            detail = "the config has problems; the running config is unchanged"
            return admin_error(400, "invalid_config", detail, exc.problems)
        log_reload(trigger, report)
        return _json(report)

    return [
        Route(f"{prefix}/pools/{{pool}}/backends/{{backend_id}}", patch_backend, methods=["PATCH"]),
        Route(f"{prefix}/reload", reload, methods=["POST"]),
    ]
