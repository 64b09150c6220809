"""Admin endpoints of runtime control: PATCH a backend's state or weight, POST a new backend,
DELETE one, POST reload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lb.backend import Backend
from lb.control.members import parse_backend
from lb.control.overrides import PatchError, find_backend, parse_patch
from lb.control.reload import ReloadError, log_reload, log_reload_failure
from lb.control.workers import Applied
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


def _described(pool: str, backend: Backend, applied: Applied) -> dict[str, object]:
    """A backend as the admin API answers about it, with how many workers (and instances)
    applied the change before the answer."""
    return {
        "pool": pool,
        "id": backend.id,
        "url": backend.url,
        "origin": backend.origin,
        "state": backend.state,
        "admin_state": backend.admin_state,
        "weight": backend.weight,
        "applied": applied.to_json(),
    }


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
        return json_response(_described(pool, backend, applied))

    async def add_backend(request: Request) -> Response:
        pool = request.path_params["pool"]
        if pool not in control.runtime.generation.pools:
            return admin_error(request.scope, 404, "not_found", f"no pool {pool!r}")
        body = await _read_body(request)
        if body is None:
            detail = f"body larger than {MAX_BODY} bytes"
            return admin_error(request.scope, 400, "bad_request", detail)
        try:
            config = parse_backend(body)
        except PatchError as exc:
            return admin_error(request.scope, 400, "bad_request", str(exc), problems=exc.problems)
        try:
            backend, applied = await control.add_backend(pool, config)
        except KeyError:  # removed by a reload while the body was read
            return admin_error(request.scope, 404, "not_found", f"no pool {pool!r}")
        except ValueError:
            detail = f"pool {pool!r} has a backend {config.id!r} already"
            return admin_error(request.scope, 409, "conflict", detail)
        return json_response(_described(pool, backend, applied), 201)

    async def remove_backend(request: Request) -> Response:
        pool, backend_id = request.path_params["pool"], request.path_params["backend_id"]
        try:
            backend, applied = await control.remove_backend(pool, backend_id)
        except KeyError:
            return _no_backend(request, pool, backend_id)
        except ValueError as exc:
            where = "config file" if str(exc) == "config" else "DNS discovery"
            detail = (
                f"backend {backend_id!r} comes from the {where}, not the admin API; remove it "
                "there (or PATCH its state to draining)"
            )
            return admin_error(request.scope, 409, "conflict", detail)
        return json_response(_described(pool, backend, applied), 202)

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
        Route(f"{prefix}/pools/{{pool}}/backends", add_backend, methods=["POST"]),
        Route(f"{prefix}/pools/{{pool}}/backends/{{backend_id}}", patch_backend, methods=["PATCH"]),
        Route(
            f"{prefix}/pools/{{pool}}/backends/{{backend_id}}", remove_backend, methods=["DELETE"]
        ),
        Route(f"{prefix}/reload", reload, methods=["POST"]),
    ]
