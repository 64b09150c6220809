"""`lb healthcheck`: the container HEALTHCHECK. It asks the running lb's `healthz` where the config
puts it: on `admin.listen` when set (plain HTTP), else on the traffic port (HTTPS with
`server.tls`), under `admin.path_prefix`."""

from __future__ import annotations

import http.client
import ssl

from lb.config import Config

# A wildcard listen address is reached on the loopback of the same family.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def healthz_target(config: Config, port: int) -> tuple[str, int, str, bool]:
    """(host, port, path, over TLS) of the process's healthz for `config`, served on `port`."""
    path = f"{config.admin.path_prefix}/healthz"
    if config.admin.listen is None:
        return "127.0.0.1", port, path, config.server.tls is not None
    host, admin_port = config.admin.listen
    return _LOOPBACK.get(host, host), admin_port, path, False


def healthcheck(config: Config, port: int, timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, what was seen): 200 from healthz is healthy, anything else is not."""
    host, target_port, path, tls = healthz_target(config, port)
    where = f"{'[' + host + ']' if ':' in host else host}:{target_port}{path}"
    connection: http.client.HTTPConnection
    if tls:
        # The certificate names the public host, not the loopback address asked here: this
        # checks that lb answers, not who it is.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            host, target_port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, target_port, timeout=timeout)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    except OSError as exc:
        return False, f"{where}: {exc}"
    finally:
        connection.close()
    return status == 200, f"{where}: {status}"
