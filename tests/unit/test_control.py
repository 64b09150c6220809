"""Runtime control without sockets: PATCH bodies, overrides, the control file, reload reports."""

from __future__ import annotations

import json
import threading
import time

import pytest

from lb.app import LoadBalancer
from lb.config import load_config
from lb.control.bus import bus_url
from lb.control.overrides import Override, PatchError, apply, parse_patch
from lb.control.reload import ReloadError, describe
from lb.control.shared import ControlFile, add_event, put_override, replay_from


def _config(*backends: object, **pool: object) -> dict[str, object]:
    pools = {"web": {"backends": list(backends), **pool}}
    return {"pools": pools, "logging": {"access_log": False}}


A = {"url": "http://127.0.0.1:9001", "id": "a"}
B = {"url": "http://127.0.0.1:9002", "id": "b", "weight": 2}
C = {"url": "http://127.0.0.1:9003", "id": "c"}


# -- PATCH bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"state": "draining"}', ("draining", None)),
        (b'{"state": "active"}', ("active", None)),
        (b'{"state": "disabled", "weight": 0}', ("disabled", 0)),
        (b'{"weight": 7}', (None, 7)),
    ],
)
def test_parse_patch_accepts(body: bytes, expected: tuple[object, object]) -> None:
    assert parse_patch(body) == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "body: not JSON"),
        (b"{bad", "body: not JSON"),
        (b"\xff", "body: not JSON"),
        (b"[1]", "body: expected a JSON object, got list"),
        (b"{}", 'body: expected "state" and/or "weight"'),
        (b'{"state": "drain"}', "state: expected one of active, draining, disabled"),
        (b'{"state": null}', "state: expected one of"),
        (b'{"weight": -1}', "weight: expected a whole number"),
        (b'{"weight": 1.5}', "weight: expected a whole number"),
        (b'{"weight": true}', "weight: expected a whole number"),
        (b'{"weight": "3"}', "weight: expected a whole number"),
        (b'{"weight": 1000001}', "weight: expected a whole number"),
        (b'{"state": "active", "colour": 1}', "colour: unknown key"),
    ],
)
def test_parse_patch_rejects_with_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(PatchError) as caught:
        parse_patch(body)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_parse_patch_reports_every_problem() -> None:
    with pytest.raises(PatchError) as caught:
        parse_patch(b'{"state": "x", "weight": -2, "extra": 1}')
    assert len(caught.value.problems) == 3


# -- overrides ------------------------------------------------------------------------------------


def test_override_json_round_trip_and_rejects_garbage() -> None:
    override = Override("web", "a", "http://h:1", "draining", 3, 1, 12.5)
    assert Override.from_json(json.loads(json.dumps(override.to_json()))) == override
    for bad in (
        None,
        [],
        {"pool": "web", "id": "a"},
        {**override.to_json(), "state": "gone"},
        {**override.to_json(), "weight": -1},
        {**override.to_json(), "at": "now"},
        {**override.to_json(), "at": float("nan")},
    ):
        assert Override.from_json(bad) is None


def test_merged_lays_only_the_given_fields_over() -> None:
    base = Override("web", "a", "http://h:1", "draining", 5, 1, 1.0)
    assert base.merged(None, 7, 2, 2.0) == Override("web", "a", "http://h:1", "draining", 7, 2, 2.0)
    assert base.merged("active", None, 2, 3.0) == Override(
        "web", "a", "http://h:1", "active", 5, 1, 3.0
    )


def test_apply_sets_state_and_weight_on_the_live_backend() -> None:
    app = LoadBalancer(_config(A, B))
    pool = app.generation.pools["web"]
    assert apply(Override("web", "b", B["url"], "draining", 5, 2, 1.0), app.generation)
    backend = pool.backends["b"]
    assert (backend.state, backend.weight, backend.config_weight) == ("draining", 5, 5)
    assert pool.usable() == (pool.backends["a"],)
    assert apply(Override("web", "b", B["url"], "active"), app.generation)
    assert backend.state == "healthy" and len(pool.usable()) == 2


def test_apply_ignores_another_url_an_unknown_backend_and_a_changed_config_weight() -> None:
    app = LoadBalancer(_config(A, B))
    gen = app.generation
    assert not apply(Override("web", "a", "http://elsewhere:1", "draining"), gen)
    assert not apply(Override("web", "zz", A["url"], "draining"), gen)
    assert not apply(Override("nope", "a", A["url"], "draining"), gen)
    assert gen.pools["web"].backends["a"].state == "healthy"
    # Overridden when the config said 1; the config now says 2: the file wins.
    assert apply(Override("web", "b", B["url"], None, 9, 1, 1.0), gen)
    assert gen.pools["web"].backends["b"].weight == 2


def test_active_returns_a_backend_to_what_its_health_says() -> None:
    app = LoadBalancer(_config(A, B))
    backend = app.generation.pools["web"].backends["a"]
    backend.set_healthy(False)
    apply(Override("web", "a", A["url"], "draining"), app.generation)
    assert backend.state == "draining"
    apply(Override("web", "a", A["url"], "active"), app.generation)
    assert backend.state == "unhealthy"


# -- the control file -----------------------------------------------------------------------------


def test_control_file_update_read_and_signature(tmp_path) -> None:  # type: ignore[no-untyped-def]
    file = ControlFile(str(tmp_path))
    assert file.signature() is None
    assert file.read() == {"seq": 0, "overrides": [], "backends": [], "events": []}

    def event(document: dict[str, object], seq: int) -> bool:
        add_event(document, seq, "me", "reload", {})
        return True

    assert file.update(event) == 1
    first = file.signature()
    assert first is not None
    (written,) = file.read()["events"]
    assert written.pop("at") == pytest.approx(time.time(), abs=5)
    assert written == {"seq": 1, "origin": "me", "kind": "reload", "data": {}}
    assert file.update(lambda document, seq: False) is None  # nothing to change: nothing written
    assert file.signature() == first and file.read()["seq"] == 1
    assert file.update(event) == 2
    assert file.signature() != first and file.read()["seq"] == 2
    # The shared counter follows, for every process that maps it.
    other = ControlFile(str(tmp_path))
    assert other.counter.view[0] == 2
    file.close()
    other.close()


def test_replay_from_reruns_only_reloads_made_since_the_config_was_read() -> None:
    events = [
        {"seq": 1, "kind": "reload", "at": 10.0},
        {"seq": 2, "kind": "cache_purge", "at": 30.0},
        {"seq": 3, "kind": "reload", "at": 25.0},
        {"seq": 4, "kind": "reload", "at": 40.0},
    ]
    document = {"seq": 4, "overrides": [], "events": events}
    assert replay_from(document, 50.0) == 4  # everything is history
    assert replay_from(document, 35.0) == 3  # the reload at 40 is run again
    assert replay_from(document, 20.0) == 2
    assert replay_from({"seq": 2, "events": [{"seq": 2, "kind": "reload"}]}, 0.0) == 2


def test_control_file_keeps_a_bounded_event_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    file = ControlFile(str(tmp_path))
    for _ in range(100):
        file.update(lambda d, seq: add_event(d, seq, "me", "x", {}) or True)
    events = file.read()["events"]
    assert len(events) == 64 and events[-1]["seq"] == 100


def test_control_file_tolerates_a_corrupt_document(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "control.json").write_text("{not json")
    file = ControlFile(str(tmp_path))
    assert file.read()["seq"] == 0
    (tmp_path / "control.json").write_text('{"seq": 3, "overrides": 5}')
    assert file.read() == {"seq": 3, "overrides": [], "backends": [], "events": []}


def test_put_override_keeps_the_later_change() -> None:
    document: dict[str, object] = {"seq": 0, "overrides": [], "backends": [], "events": []}
    newer = Override("web", "a", "u", "draining", at=2.0).to_json()
    older = Override("web", "a", "u", "disabled", at=1.0).to_json()
    other = Override("web", "b", "u", "disabled", at=1.0).to_json()
    assert put_override(document, newer)
    assert not put_override(document, older)
    assert put_override(document, other)
    assert document["overrides"] == [newer, other]


def test_concurrent_updates_lose_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    file = ControlFile(str(tmp_path))

    def writer(name: str) -> None:
        for _ in range(25):
            file.update(lambda d, seq: add_event(d, seq, name, "x", {}) or True)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    document = file.read()
    assert document["seq"] == 100
    assert [e["seq"] for e in document["events"]] == list(range(37, 101))


# -- reload ---------------------------------------------------------------------------------------


def test_describe_names_added_removed_kept_and_restart_only_changes() -> None:
    old = load_config(_config(A, B))
    new_b = {**B, "url": "http://127.0.0.1:9999"}
    new = load_config(
        {
            **_config(A, new_b, C),
            "server": {"max_header_bytes": 4096, "watch_config": True},
            "logging": {"access_log": True},
        }
    )
    report = describe(old, new)
    assert report["pools"] == {"web": {"added": ["b", "c"], "removed": ["b"], "kept": ["a"]}}
    assert report["restart_required"] == ["server.max_header_bytes", "logging"]
    two = load_config({"pools": {"web": {"backends": [A]}, "api": {"backends": [C]}}})
    assert describe(old, two)["pools_added"] == ["api"]
    assert describe(two, old)["pools_removed"] == ["api"]


def test_build_keeps_backend_objects_and_marks_added_ones_for_checks() -> None:
    app = LoadBalancer(_config(A, B))
    old = app.generation
    kept = old.pools["web"].backends["a"]
    kept.requests_total = 41
    check = {"path": "/health", "interval": "1s", "timeout": "500ms"}
    new = app.runtime.build(load_config(_config(A, C, health_check=check)))
    new_pool = new.pools["web"]
    assert new_pool.backends["a"] is kept and kept.requests_total == 41
    assert new_pool.backends["c"].state == "unhealthy"  # no traffic before its checks pass
    app.runtime.swap(new)
    assert new_pool.usable() == (kept,)


def test_swap_releases_kept_backends_from_checks_that_are_gone() -> None:
    check = {"path": "/health", "interval": "1s", "timeout": "500ms"}
    app = LoadBalancer(_config(A, B, health_check=check))
    backend = app.generation.pools["web"].backends["a"]
    backend.set_healthy(False)
    new = app.runtime.build(load_config(_config(A, B)))
    assert backend.state == "unhealthy"  # building changes nothing live
    app.runtime.swap(new)
    assert new.pools["web"].backends["a"].state == "healthy"


def test_building_a_generation_changes_nothing_the_live_one_serves() -> None:
    app = LoadBalancer(_config(A, B))
    old_pool = app.generation.pools["web"]
    backend = old_pool.backends["b"]
    new = app.runtime.build(load_config(_config(A, {**B, "weight": 9})))
    assert new.pools["web"].backends["b"] is backend
    assert backend.weight == 2 and backend.config_weight == 2
    assert old_pool.owns(backend) and app.generation is not new
    backend.set_admin_state("draining")  # the old pool still hears about it
    assert old_pool.usable() == (old_pool.backends["a"],)
    backend.set_admin_state("active")
    app.runtime.swap(new)
    assert backend.weight == 9 and backend.config_weight == 9
    assert new.pools["web"].owns(backend) and not old_pool.owns(backend)


async def test_a_reload_that_cannot_build_changes_nothing(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = LoadBalancer(_config(A, B))
    live = app.generation
    old_pool = live.pools["web"]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no proxy today")

    # Fails after the new pools were built around the kept backends.
    monkeypatch.setattr("lb.generation.Proxy", broken)
    with pytest.raises(ReloadError) as caught:
        await app.reload(_config(A, {**B, "weight": 5}))
    assert caught.value.problems == ["config: cannot build it: RuntimeError: no proxy today"]
    assert app.generation is live
    backend = old_pool.backends["b"]
    assert backend.weight == 2 and backend.config_weight == 2 and old_pool.owns(backend)
    backend.set_admin_state("draining")
    assert old_pool.usable() == (old_pool.backends["a"],)


def test_bus_url_prefers_rate_limit_then_cache() -> None:
    assert bus_url(load_config(_config(A))) is None
    limited = {**_config(A), "rate_limit": {"rate": 1, "burst": 1, "store": "redis"}}
    limited["rate_limit"]["redis_url"] = "redis://h:1/0"  # type: ignore[index]
    assert bus_url(load_config(limited)) == "redis://h:1/0"
    cached = {**_config(A), "cache": {"store": "redis", "redis_url": "redis://c:2/1"}}
    assert bus_url(load_config(cached)) == "redis://c:2/1"
    assert bus_url(load_config({**_config(A), "cache": {"store": "memory"}})) is None
