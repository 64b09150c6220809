"""Admin endpoints of runtime control: PATCH a backend's state or weight, POST reload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lb.control.overrides import PatchError, find_backend, parse_patch
from lb.control.reload import ReloadError, log_reload, log_reload_failure
from lb.proxy.errors import admin_error, json_response

if TYPE_CHECKING:
    from lb.control.runtime import Control

MAX_BODY = 64 * 1024


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is over `MAX_BODY`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return body


def _no_backend(request: Request, pool: str, backend_id: str) -> Response:
    detail = f"no backend {backend_id!r} in pool {pool!r}"
    return admin_error(request.scope, 404, "not_found", detail)


def control_routes(control: Control, prefix: str) -> list[Route]:
    async def patch_backend(request: Request) -> Response:
        pool, backend_id = request.path_params["pool"], request.path_params["backend_id"]
        if find_backend(control.runtime.generation, pool, backend_id) is None:
            return _no_backend(request, pool, backend_id)
        body = await _read_body(request)
        if body is None:
            detail = f"body larger than {MAX_BODY} bytes"
            return admin_error(request.scope, 400, "bad_request", detail)
        try:
            state, weight = parse_patch(body)
        except PatchError as exc:
            return admin_error(request.scope, 400, "bad_request", str(exc), problems=exc.problems)
        try:
            backend, applied = await control.set_backend(pool, backend_id, state, weight)
        except KeyError:  # removed by a reload while the body was read
            return _no_backend(request, pool, backend_id)
        return json_response(
            {
                "pool": pool,
                "id": backend.id,
                "url": backend.url,
                "state": backend.state,
                "admin_state": backend.admin_state,
                "weight": backend.weight,
                "applied": applied.to_json(),
            }
        )

    async def reload(request: Request) -> Response:
        trigger = f"POST {request.url.path} from {request.client.host if request.client else '?'}"
        try:
            report = await control.reload(share=True)
        except ReloadError as exc:
            log_reload_failure(trigger, exc.problems)
            detail = "the config has problems; the running config is unchanged"
            return admin_error(request.scope, 400, "invalid_config", detail, problems=exc.problems)
        log_reload(trigger, report)
        return json_response(report)

    return [
        Route(f"{prefix}/pools/{{pool}}/backends/{{backend_id}}", patch_backend, methods=["PATCH"]),
        Route(f"{prefix}/reload", reload, methods=["POST"]),
    ]
