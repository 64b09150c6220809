"""Bodies stream both ways: 200 MiB up and down through `lb serve` with its memory watched."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx

SIZE = 200 * 1024 * 1024
CHUNK = b"z" * (256 * 1024)


class PeakRss:
    """Samples the balancer's RSS in a thread while a transfer runs."""

    def __init__(self, lb) -> None:  # type: ignore[no-untyped-def]
        self.lb = lb
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.lb.rss_kib())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_200_mib_download_and_upload_stream_with_bounded_memory(start_backends, lb_process) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    lb = lb_process(
        {"pools": {"web": {"backends": [server.url]}}, "logging": {"access_log": False}}
    )
    with httpx.Client(base_url=lb.url, timeout=60) as client:
        client.get("/echo")  # warm up: imports, pools, first connection
        baseline = lb.rss_kib()
        received = 0
        with PeakRss(lb) as download:
            with client.stream("GET", f"/big?size={SIZE}") as response:
                for chunk in response.iter_raw(1024 * 1024):
                    received += len(chunk)
        assert received == SIZE

        def body() -> Iterator[bytes]:
            for _ in range(SIZE // len(CHUNK)):
                yield CHUNK

        with PeakRss(lb) as upload:
            response = client.post("/upload", content=body())
        assert response.json() == {"received": SIZE}
    # The whole body would be 200 MiB; streaming keeps the balancer within a few buffers of it.
    limit = 48 * 1024
    assert download.peak - baseline < limit, (baseline, download.peak)
    assert upload.peak - baseline < limit, (baseline, upload.peak)
