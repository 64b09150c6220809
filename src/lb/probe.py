"""`lb healthcheck`: the container HEALTHCHECK. It asks the running lb's `healthz` where the config
puts it: on `admin.listen` when set, else on the traffic port, under `admin.path_prefix`."""

from __future__ import annotations

import http.client

from lb.config import Config

# A wildcard listen address is reached on the loopback of the same family.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def healthz_target(config: Config, port: int) -> tuple[str, int, str]:
    """(host, port, path) of the process's healthz for `config`, served on traffic `port`."""
    path = f"{config.admin.path_prefix}/healthz"
    if config.admin.listen is None:
        return "127.0.0.1", port, path
    host, admin_port = config.admin.listen
    return _LOOPBACK.get(host, host), admin_port, path


def healthcheck(config: Config, port: int, timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, what was seen): 200 from healthz is healthy, anything else is not."""
    host, target_port, path = healthz_target(config, port)
    where = f"{'[' + host + ']' if ':' in host else host}:{target_port}{path}"
    connection = http.client.HTTPConnection(host, target_port, timeout=timeout)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    except OSError as exc:
        return False, f"{where}: {exc}"
    finally:
        connection.close()
    return status == 200, f"{where}: {status}"
