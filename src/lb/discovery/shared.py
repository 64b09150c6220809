"""The answers of the instance's one resolver, shared with the other workers.

With several workers only the leader (`lb.instance.Leader`) looks names up; every answer it takes
is also written here, to `discovery.json` in the control directory, replaced atomically:

    {"answers": [{"pool": "web", "kind": "dns", "name": "web.internal",
                  "endpoints": [["10.0.0.7", 8000], ...]}, ...]}

Only the leader writes (a whole document: it holds every current answer), so no lock is needed.
The other workers read it when it was replaced (`refresh()`: one `stat`, a read only then), from a
periodic task of the runtime, and make their pools match as the leader's do. A worker that starts
late (or after a crash) reads it at start, before it serves; a new leader starts from it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable

from lb.config import Config, DiscoverConfig
from lb.discovery.resolver import Endpoint
from lb.instance import Signature, file_signature, write_atomically

logger = logging.getLogger("lb.discovery")

FILE_NAME = "discovery.json"
POLL_INTERVAL = 0.25  # how often a follower looks for new answers: how late it learns them

AnswerKey = tuple[str, str, str]  # (pool, kind, name)
OnAnswer = Callable[[str, DiscoverConfig, frozenset[Endpoint]], None]


class SharedAnswers:
    """`publish` the leader's answers; `refresh` hands the leader's answers to `on_answer` in a
    follower, for the targets the live config (`config()`) still discovers. A `Service`; `tick`
    is its periodic task's (a no-op while `leading()`)."""

    def __init__(
        self,
        directory: str,
        on_answer: OnAnswer,
        config: Callable[[], Config],
        leading: Callable[[], bool],
    ) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILE_NAME)
        self.on_answer = on_answer
        self.config = config
        self.leading = leading
        self.answers: dict[AnswerKey, frozenset[Endpoint]] = {}
        self._signature: Signature | None = None
        self._writer: asyncio.Task[None] | None = None
        self._dirty = False

    def __repr__(self) -> str:
        return f"<SharedAnswers {self.path} [{len(self.answers)} names]>"

    # -- the leader ----------------------------------------------------------------------------

    def publish(self, pool: str, target: DiscoverConfig, endpoints: frozenset[Endpoint]) -> None:
        """Record the leader's answer for `target`; written soon, off the event loop, and only
        when it changed (the resolver hands on every good answer, changed or not)."""
        key = (pool, target.kind, target.name)
        if self.answers.get(key) == endpoints:
            return
        self.answers[key] = endpoints
        self._dirty = True
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_pending(), name="lb shared discovery"
            )

    async def _write_pending(self) -> None:
        try:
            while self._dirty:  # answers taken while one write is under way go in the next
                self._dirty = False
                document = {
                    "answers": [
                        {"pool": p, "kind": k, "name": n, "endpoints": sorted(map(list, e))}
                        for (p, k, n), e in self.answers.items()
                    ]
                }
                try:
                    await asyncio.to_thread(write_atomically, self.directory, self.path, document)
                except OSError as exc:
                    logger.error("cannot write the shared discovery file %s: %s", self.path, exc)
        finally:
            self._writer = None

    # -- the followers -------------------------------------------------------------------------

    async def start(self) -> None:
        self.refresh()

    async def stop(self) -> None:
        writer = self._writer
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)

    async def tick(self) -> None:
        # The leader has its answers first-hand: read back, a file written before its latest
        # answer would put an older set back for a moment.
        if not self.leading():
            self.refresh()

    def refresh(self) -> bool:
        """Read the document if it was replaced since the last read, and apply what it says for
        every name the live config discovers; True when it was read."""
        signature = file_signature(self.path)
        if signature is None or signature == self._signature:
            return False
        self._signature = signature
        answers = self._read()
        if answers is None:
            return False
        self.answers = answers
        config = self.config()
        for name, pool in config.pools.items():
            for target in pool.discover:
                endpoints = answers.get((name, target.kind, target.name))
                if endpoints:
                    self.on_answer(name, target, endpoints)
        return True

    def _read(self) -> dict[AnswerKey, frozenset[Endpoint]] | None:
        try:
            with open(self.path, encoding="utf-8") as file:
                document = json.load(file)
            answers: dict[AnswerKey, frozenset[Endpoint]] = {}
            for entry in document["answers"]:
                key = (str(entry["pool"]), str(entry["kind"]), str(entry["name"]))
                answers[key] = frozenset((str(a), int(p)) for a, p in entry["endpoints"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.error("cannot read the shared discovery file %s: %s", self.path, exc)
            return None
        return answers
