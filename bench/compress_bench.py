"""What route `compress` costs per request, in user-space instructions (callgrind).

    python bench/compress_bench.py [--requests 1000] [--variants proxy,identity,gzip,br,zstd]

nginx serves a ~10 KB JSON document (uncompressed); `lb serve` (one worker) runs in front of it
under `valgrind --tool=callgrind`. For each variant this script sends warm-up requests, zeroes
callgrind's counters (`callgrind_control -z`), sends N requests one after another on one
keep-alive connection, dumps the counters (`callgrind_control -d`) and prints Ir / N: only those
N requests are counted, not the start or the warm-up. Instructions are deterministic where the
box's timings are not (docs/performance.md).

Variants: `proxy` (a route without compress), `identity` (compress on, the client accepts no
coding: the cost of the two layers alone), `gzip`, `br`, `zstd` (compress on, that coding);
`headers` (the route's header rules of HEADER_RULES, no compress) and `headers+gzip` (both: the
route issue 20 asks the benchmark to show next to proxy only).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def document() -> bytes:
    """~10 KB of JSON shaped like an API's list answer."""
    items = [
        {"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": i % 3 == 0,
         "score": round(i * 3.7, 1), "tags": ["alpha", "beta"][: i % 3]}
        for i in range(95)
    ]  # fmt: skip
    return json.dumps(items).encode()


def start_nginx(workdir: str, body: bytes) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    os.chmod(workdir, 0o755)  # nginx's workers may run as another user than its master
    with open(os.path.join(workdir, "data.json"), "wb") as f:
        f.write(body)
    config = textwrap.dedent(
        f"""
        worker_processes 1;
        daemon off;
        pid {workdir}/nginx.pid;
        error_log {workdir}/error.log warn;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
            client_body_temp_path {workdir}/body;
            proxy_temp_path {workdir}/proxy;
            fastcgi_temp_path {workdir}/fastcgi;
            uwsgi_temp_path {workdir}/uwsgi;
            scgi_temp_path {workdir}/scgi;
            types {{ application/json json; }}
            server {{
                listen 127.0.0.1:{port};
                keepalive_requests 10000000;
                root {workdir};
                etag on;
            }}
        }}
        """
    )
    path = os.path.join(workdir, "nginx.conf")
    with open(path, "w") as f:
        f.write(config)
    process = subprocess.Popen(["nginx", "-c", path, "-e", f"{workdir}/error.log"])
    wait_for_port(port, 10)
    return process, port


def request(port: int, accept: str | None) -> bytes:
    lines = ["GET /data.json HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if accept is not None:
        lines.append(f"Accept-Encoding: {accept}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    """One response (Content-Length or chunked), returned whole, and what followed it."""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += sock.recv(65536)
        return head, rest[length:]
    while b"\r\n0\r\n\r\n" not in rest:
        rest += sock.recv(65536)
    _, _, after = rest.partition(b"\r\n0\r\n\r\n")
    return head, after


# A route's header rules as an operator writes them in the first week (docs/traffic.md): one set
# upstream with a placeholder, one set and one removed downstream.
HEADER_RULES = {
    "request_headers": {"set": {"X-Client-IP": "{client_ip}"}},
    "response_headers": {"set": {"X-Frame-Options": "DENY"}, "remove": ["ETag"]},
}


def run(variant: str, backend: int, workdir: str, requests: int, warmup: int) -> float:
    headers = variant.startswith("headers")
    coding = variant.removeprefix("headers").lstrip("+") or "proxy"  # "headers": no compress
    route: dict[str, object] = {"pool": "web", "compress": coding != "proxy"}
    if headers:
        route.update(HEADER_RULES)
    config = {
        "pools": {"web": {"backends": [f"http://127.0.0.1:{backend}"]}},
        "routes": [route],
        "logging": {"access_log": False},
    }
    config_path = os.path.join(workdir, f"lb-{variant}.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    port = free_port()
    out = os.path.join(workdir, f"callgrind-{variant}.out")
    lb = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, "-m", "lb", "serve", "-c", config_path,
            "--host", "127.0.0.1", "--port", str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, 600)  # python and lb start slowly under valgrind on a busy box
        accept = {"proxy": "gzip", "identity": "identity"}.get(coding, coding)
        data = request(port, accept)
        with socket.create_connection(("127.0.0.1", port), 60) as sock:
            buf = b""
            for _ in range(warmup):
                sock.sendall(data)
                head, buf = read_response(sock, buf)
            expected = None if not route["compress"] or coding == "identity" else coding
            coding = next(
                (line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-encoding:")),
                None,
            )  # fmt: skip
            if coding != expected:
                raise RuntimeError(f"{variant}: the response is coded {coding!r}: {head!r}")
            subprocess.run(
                ["callgrind_control", "-z", str(lb.pid)], check=True, capture_output=True
            )
            for _ in range(requests):
                sock.sendall(data)
                _, buf = read_response(sock, buf)
            subprocess.run(
                ["callgrind_control", "-d", str(lb.pid)], check=True, capture_output=True
            )
        dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
        with open(dumps[-1]) as f:
            totals = next(line for line in f if line.startswith(("totals:", "summary:")))
        return int(totals.split()[1]) / requests
    finally:
        lb.send_signal(signal.SIGINT)
        try:
            lb.wait(60)
        except subprocess.TimeoutExpired:
            lb.kill()
            lb.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--variants", default="proxy,identity,gzip,br,zstd")
    args = parser.parse_args()
    body = document()
    with tempfile.TemporaryDirectory(prefix="lb-compress-bench-") as workdir:
        nginx, backend = start_nginx(workdir, body)
        try:
            print(f"response: {len(body)} bytes of JSON, {args.requests} requests per variant")
            base = None
            for variant in args.variants.split(","):
                per_request = run(variant, backend, workdir, args.requests, args.warmup)
                base = per_request if base is None else base
                extra = (per_request - base) / 1000
                print(f"{variant:9s} {per_request / 1000:8.1f}k Ir/request  {extra:+8.1f}k")
                sys.stdout.flush()
        finally:
            nginx.terminate()
            nginx.wait()


if __name__ == "__main__":
    main()
