"""User-space instructions per request of lb's upstream transport alone (`Transport.send_raw`, the
proxy's path), counted by callgrind: issue 19's "the transport's instructions per request not
higher than today's".

    python bench/transport_instructions.py                      # this checkout's src
    python bench/transport_instructions.py --src OTHER/src      # another commit's (git archive)

A client in one process sends GET / through `Transport.send_raw` at 50 concurrent requests to a
raw backend in a child process (bench/transport_bench.py's, not traced), reading each body to
its end. The client runs under callgrind twice, for N and 3N requests; the difference divided by
2N is the instructions one request costs, without the start-up (imports, the first
connections), which is the same in both runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def client(port: int, requests: int) -> None:
    """The traced process: `requests` requests through send_raw, 50 at a time."""
    import uvloop

    from lb.transport import Timeouts, Transport, origin_of

    async def main() -> None:
        transport = Transport()
        origin = origin_of(f"http://127.0.0.1:{port}")
        headers = [(b"host", b"127.0.0.1:%d" % port)]
        timeouts = Timeouts.of({"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0})
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                response = await transport.send_raw(origin, b"GET", b"/", headers, b"", timeouts)
                async for _ in response:
                    pass
                await response.aclose()

        await asyncio.gather(*(worker() for _ in range(50)))
        await transport.aclose()

    uvloop.run(main())


def instructions(src: Path, port: int, requests: int) -> int:
    # Here, not at the top: the traced client (this file run with --client) need not load it.
    from callgrind_per_request import instructions_in

    out = tempfile.mkdtemp(prefix="lb-transport-ir-")
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONHASHSEED="0")
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}/callgrind.out",
            sys.executable,
            __file__,
            "--client",
            str(port),
            str(requests),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return instructions_in(out)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        client(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="lb's sources to measure")
    parser.add_argument("--requests", type=int, default=2000, help="N (the runs send N and 3N)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import free_port, wait_for_port

    port = free_port()
    backend = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "transport_bench.py"), "--serve", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        small = instructions(args.src, port, args.requests)
        large = instructions(args.src, port, 3 * args.requests)
    finally:
        backend.terminate()
        backend.wait(10)
    per = (large - small) / (2 * args.requests)
    print(f"{args.src}: {round(per):,} instructions per request (send_raw, 50 concurrent)")


if __name__ == "__main__":
    main()
