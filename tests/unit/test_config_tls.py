"""`server.tls`, `server.proxy_protocol` and a pool's `tls` in the config: files are loaded at
validation, so `lb check` names the key and the file that is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lb.config import ConfigError, PoolTLSConfig, ServerTLSConfig, load_config
from pki import CA


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(data)
    return info.value.problems


def with_server(**server: Any) -> dict[str, Any]:
    return {"pools": {"web": {"backends": ["http://127.0.0.1:1"]}}, "server": server}


def with_pool_tls(tls: Any, url: str = "https://127.0.0.1:1") -> dict[str, Any]:
    return {"pools": {"web": {"backends": [url], "tls": tls}}}


def test_server_tls_loads(ca: CA) -> None:
    cert, key = ca.issue()
    tls = {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(ca.cert_file)}
    config = load_config(with_server(tls=tls, proxy_protocol=True))
    assert config.server.tls == ServerTLSConfig(str(cert), str(key), str(ca.cert_file))
    assert config.server.proxy_protocol is True
    assert load_config(with_server()).server.tls is None


def test_server_tls_problems_name_the_file(ca: CA, tmp_path: Path) -> None:
    cert, key = ca.issue()
    other_cert, other_key = ca.issue()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    cases = {
        "missing": ({"cert_file": str(cert), "key_file": str(tmp_path / "nope.key")}, "nope.key"),
        "mismatch": ({"cert_file": str(cert), "key_file": str(other_key)}, "does not match"),
        "not pem": ({"cert_file": str(junk), "key_file": str(key)}, "not a PEM"),
        "no cert": ({"key_file": str(key)}, "cert_file: required"),
        "bad ca": ({"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(junk)},
                   "client_ca_file"),
        "unknown key": ({"cert_file": str(cert), "key_file": str(key), "ciphers": "x"}, "ciphers"),
    }  # fmt: skip
    for name, (tls, expected) in cases.items():
        lines = problems(with_server(tls=tls))
        assert len(lines) == 1, (name, lines)
        assert lines[0].startswith("server.tls"), (name, lines)
        assert expected in lines[0], (name, lines)


def test_pool_tls(ca: CA, tmp_path: Path) -> None:
    cert, key = ca.issue("lb", client=True)
    tls = {
        "ca_file": str(ca.cert_file),
        "cert_file": str(cert),
        "key_file": str(key),
        "server_name": "backend.internal",
    }
    config = load_config(with_pool_tls(tls))
    assert config.pools["web"].tls == PoolTLSConfig(
        str(ca.cert_file), True, str(cert), str(key), "backend.internal"
    )
    assert load_config(with_pool_tls({"verify": False})).pools["web"].tls == PoolTLSConfig(
        verify=False
    )
    assert "pools.web.tls.key_file" in problems(with_pool_tls({"key_file": str(key)}))[0]
    assert "ca_file" in problems(with_pool_tls({"ca_file": str(tmp_path / "none.pem")}))[0]
    assert "pools.web.tls.verify" in problems(with_pool_tls({"verify": "maybe"}))[0]


def test_pools_sharing_a_backend_must_agree_on_tls(ca: CA) -> None:
    url = "https://127.0.0.1:8443"
    data = {
        "pools": {
            "a": {"backends": [url], "tls": {"ca_file": str(ca.cert_file)}},
            "b": {"backends": ["https://127.0.0.1:8443/"]},
        }
    }
    assert "pools.b.tls: differs from pools.a.tls" in problems(data)[0]
    data["pools"]["c"] = {"backends": ["https://127.0.0.1"]}  # another port: another origin
    assert len(problems(data)) == 1
    data["pools"]["b"]["tls"] = {"ca_file": str(ca.cert_file)}
    load_config(data)
