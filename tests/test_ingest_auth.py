"""Ingest keys: who may send what (issue #11 §3).

The scope rules are pure logic, tested in memory; the rest against the real gateway, the
real broker and the session's TimescaleDB (the keys live there), with the `ioc` command
as an operator runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from events.envelope import new_event
from events.errors import ConfigurationError
from events.topics import events_topic
from ingest import keystore
from ingest.gateway import BATCH, out_of_scope, parse_request
from ingest.keys import (
    IngestKey,
    bearer_secret,
    check_name,
    check_patterns,
    find_key,
    hash_secret,
    matches,
    new_secret,
)
from ingest.publisher import Backpressure, InflightBound
from ingest.service import serve
from ingest.settings import IngestSettings
from ioc.commands.ingest import provision_demo_key
from ioc.services import timescale
from ioc.settings import ServiceSettings
from tests.db_helpers import migrated
from tests.ingest_keys import AIR_SECRET, AUTH, MqttLogins, ensure_test_keys, wait_login
from tests.test_ingest import (
    _district,
    _free_port,
    air_event,
    gateway,  # noqa: F401  (the real HTTP/MQTT gateway fixture)
)
from tests.waiting import until


def water_event(station: str = "HD-WL-001") -> dict[str, Any]:
    return new_event(
        "vn.ioc.water.observed",
        f"/sensors/water/{station}",
        {"station_id": station, "district": _district(), "level_m": 1.5},
        time=datetime.now(UTC),
    )


# --- scopes, in memory ----------------------------------------------------------------


def test_a_pattern_is_exact_or_a_prefix_ending_in_a_star() -> None:
    assert matches(["vn.ioc.air.*"], "vn.ioc.air.observed")
    assert not matches(["vn.ioc.air.*"], "vn.ioc.traffic.observed")
    assert matches(["vn.ioc.air.observed"], "vn.ioc.air.observed")
    assert not matches(["vn.ioc.air.observed"], "vn.ioc.air.observed.v2")
    assert matches(["/sensors/air/*"], "/sensors/air/HD-AQ-001")
    assert not matches(["/sensors/air/*"], "/sensors/airport/X")
    assert matches(["*"], "anything")
    assert matches(["/a/*", "/b/*"], "/b/1")
    assert not matches([], "x")


def test_patterns_and_names_are_checked_when_a_key_is_made() -> None:
    assert check_patterns("type", ["vn.ioc.air.*,vn.ioc.water.*", " * "]) == [
        "vn.ioc.air.*",
        "vn.ioc.water.*",
        "*",
    ]
    with pytest.raises(ConfigurationError, match="may only end a pattern"):
        check_patterns("type", ["vn.*.air"])
    with pytest.raises(ConfigurationError, match="at least one source pattern"):
        check_patterns("source", [" , "])
    assert check_name("air-gw_1") == "air-gw_1"
    for bad in ("", "Air", "a/b", "-x", "x" * 64, "a+b", "a#", "ab\n", "ioc-ingest"):
        with pytest.raises(ConfigurationError):
            check_name(bad)


def test_a_key_refuses_events_outside_its_scope_by_index() -> None:
    key = IngestKey("air", hash_secret("s"), ("vn.ioc.air.*",), ("/sensors/air/*",))
    water = {**water_event(), "source": "/sensors/air/ODD"}  # a type the key may not send
    elsewhere = {**air_event(), "source": "/sensors/water/HD-AQ-001"}
    body = orjson.dumps([air_event(), water, air_event(), elsewhere])
    records = parse_request(body, BATCH, 10)
    refused = [(r.index, r.reason) for r in out_of_scope(key, records)]
    assert refused == [(1, "type_not_allowed"), (3, "source_not_allowed")]
    assert out_of_scope(key, records[:1]) == []


def test_secrets_are_found_by_their_hash_and_only_bearer_is_read() -> None:
    secret = new_secret()
    assert len(secret) >= 43 and new_secret() != secret  # 256 random bits each
    keys = [
        IngestKey("a", hash_secret("other"), ("*",), ("*",)),
        IngestKey("b", hash_secret(secret), ("*",), ("*",)),
    ]
    assert find_key(keys, secret) == keys[1]
    assert find_key(keys, secret + "x") is None
    assert hash_secret(secret) != secret.encode()
    assert bearer_secret(f"Bearer {secret}") == secret
    assert bearer_secret(f"bearer   {secret} ") == secret
    for header in (None, "", "Bearer", "Bearer  ", f"Basic {secret}", secret):
        assert bearer_secret(header) is None


def test_the_in_flight_bound_admits_a_batch_when_nothing_waits_and_refuses_beyond() -> None:
    """The admission rule alone (tests/test_ingest.py sees 429 from a gateway whose broker
    is away)."""
    bound = InflightBound(100)
    bound.admit(250)  # nothing in flight: admitted, however large
    assert bound.saturated
    with pytest.raises(Backpressure, match="250 bytes await"):
        bound.admit(1)
    bound.release(250)
    bound.admit(60)
    with pytest.raises(Backpressure):
        bound.admit(41)
    bound.admit(40)  # up to the limit
    assert (bound.bytes, bound.saturated) == (100, True)


# --- against the real gateway ---------------------------------------------------------------


def _url(settings: IngestSettings) -> str:
    return f"http://127.0.0.1:{settings.ingest_http_port}/events"


async def _post(
    settings: IngestSettings, events: list[dict[str, Any]], headers: dict[str, str]
) -> tuple[int, dict[str, Any], Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            _url(settings), data=orjson.dumps(events), headers={"Content-Type": BATCH, **headers}
        ) as r,
    ):
        return r.status, await r.json(), r.headers


async def test_no_key_or_an_unknown_key_is_401_with_a_reason(
    gateway: IngestSettings,  # noqa: F811
) -> None:
    events = [air_event("NOKEY")]
    status, body, headers = await _post(gateway, events, {})
    assert (status, body["error"]) == (401, "missing_key")
    assert headers["WWW-Authenticate"] == 'Bearer realm="ioc-ingest"'
    for bad in ({"Authorization": "Bearer nope-not-a-key"}, {"Authorization": "Basic eDp5"}):
        status, body, headers = await _post(gateway, events, bad)
        assert status == 401, bad
        assert body["error"] in ("unknown_key", "missing_key")
    status, body, headers = await _post(gateway, events, {"Authorization": "Bearer nope"})
    assert body == {"error": "unknown_key", "detail": "this key is unknown or revoked"}
    assert "invalid_token" in str(headers["WWW-Authenticate"])
    # even a body that is not JSON is refused for its missing key first
    async with aiohttp.ClientSession() as http, http.post(_url(gateway), data=b"{") as r:
        assert r.status == 401


async def test_an_event_outside_the_keys_scope_refuses_the_request_with_its_index(
    gateway: IngestSettings,  # noqa: F811
) -> None:
    inside = air_event("SCOPE-OK")
    foreign = {**air_event("SCOPE-NO"), "source": "/sensors/water/SCOPE-NO"}
    air_key = {"Authorization": f"Bearer {AIR_SECRET}"}
    status, body, _ = await _post(gateway, [inside, foreign], air_key)
    assert status == 403
    assert body["error"] == "out_of_scope"
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "source_not_allowed")]
    # an invalid event is named first (400), whether or not the key could send it
    status, body, _ = await _post(gateway, [foreign, air_event(pm25=-1)], air_key)
    assert (status, body["error"]) == (400, "invalid_events")
    # the same key within its scope is accepted; the refused request left nothing behind:
    # `late` has the source of `inside`, so it follows it on the same partition
    late = air_event("SCOPE-OK")
    assert (await _post(gateway, [late], air_key))[:2] == (202, {"accepted": 1})
    ids = await _ids_until(gateway.bootstrap_servers, events_topic("air"), str(late["id"]))
    assert str(inside["id"]) not in ids


async def _ids_until(bootstrap: str, topic: str, until: str, within_s: float = 30) -> set[str]:
    """Event ids on ``topic`` from its start until ``until`` is read (other tests' records,
    some deliberately malformed, are on the topic too)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    ids: set[str] = set()
    try:
        deadline = time.monotonic() + within_s
        while until not in ids:
            assert time.monotonic() < deadline, f"{until} never reached {topic}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                        ids.add(str(orjson.loads(r.value).get("id")))
    finally:
        await consumer.stop()
    return ids


def services_at(database_url: str, state_dir: Path | None = None) -> ServiceSettings:
    """The services' settings with this database (and, for a database of its own whose keys
    must not become the accounts of the session's Mosquitto, a state directory without
    one: the MQTT accounts are then left alone)."""
    settings = ServiceSettings(database_url=database_url)
    return settings if state_dir is None else settings.model_copy(update={"state_dir": state_dir})


def _ioc(
    *args: str, database_url: str, state_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IOC_DATABASE_URL": database_url}
    if state_dir is not None:
        env["IOC_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "-m", "ioc", *args], capture_output=True, text=True, env=env, timeout=60
    )


async def _status_until(
    settings: IngestSettings, headers: dict[str, str], wanted: int, within_s: float
) -> float:
    """Post until the answer is ``wanted`` (the port may still be opening); returns how
    long that took."""
    begin = time.monotonic()
    seen: list[int] = []

    async def answered() -> bool:
        try:
            status, _, _ = await _post(settings, [air_event("WAIT")], headers)
        except aiohttp.ClientConnectionError:
            status = 0
        seen.append(status)
        return status == wanted

    await until(answered, lambda: f"{wanted}, still {seen[-1:]}", within=within_s)
    return time.monotonic() - begin


async def test_keys_made_and_revoked_with_the_cli_work_and_stop_within_the_refresh(
    gateway: IngestSettings,  # noqa: F811
    mqtt_logins: MqttLogins,
) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    url = gateway.database_url
    made = _ioc(
        "ingest", "keys", "add", name, "--types", "vn.ioc.air.*", "--sources", "/sensors/air/*",
        database_url=url,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()  # stdout is the secret alone
    assert len(secret) >= 43 and "shown only now" in made.stderr
    listed = _ioc("ingest", "keys", "list", "--json", database_url=url)
    assert listed.returncode == 0, listed.stderr
    [mine] = [k for k in orjson.loads(listed.stdout) if k["name"] == name]
    assert (mine["types"], mine["sources"], mine["revoked_at"]) == (
        ["vn.ioc.air.*"],
        ["/sensors/air/*"],
        None,
    )
    assert secret not in listed.stdout
    # a second active key of that name is refused
    twice = _ioc("ingest", "keys", "add", name, "--types", "*", "--sources", "*", database_url=url)
    assert twice.returncode == 2 and "revoke it first" in twice.stderr
    # only its hash is stored
    conn = await asyncpg.connect(url)
    try:
        stored = await conn.fetchval(
            "SELECT secret_hash FROM ingest_keys WHERE name = $1 AND revoked_at IS NULL", name
        )
    finally:
        await conn.close()
    assert bytes(stored) == hash_secret(secret) and secret.encode() not in bytes(stored)

    bearer = {"Authorization": f"Bearer {secret}"}
    within = gateway.ingest_keys_refresh_s + 5  # the reload period plus a request's time
    await _status_until(gateway, bearer, 202, within)
    # ...and its MQTT account: our Mosquitto (IOC_STATE_DIR) reloaded the accounts
    await asyncio.to_thread(wait_login, mqtt_logins.address, (name, secret))
    revoked = _ioc("ingest", "keys", "revoke", name, database_url=url)
    assert revoked.returncode == 0, revoked.stderr
    await _status_until(gateway, bearer, 401, within)
    await asyncio.to_thread(wait_login, mqtt_logins.address, (name, secret), accepted=False)
    assert _ioc("ingest", "keys", "revoke", name, database_url=url).returncode == 2
    # the name is free again; --types repeated and comma-separated
    again = _ioc(
        "ingest", "keys", "add", name, "--types", "vn.ioc.air.*",
        "--types", "vn.ioc.water.*,vn.ioc.energy.*", "--sources", "*", database_url=url,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    listed = _ioc("ingest", "keys", "list", "--json", database_url=url)
    [mine] = [k for k in orjson.loads(listed.stdout) if k["name"] == name]
    assert mine["types"] == ["vn.ioc.air.*", "vn.ioc.water.*", "vn.ioc.energy.*"]
    listed = _ioc("ingest", "keys", "list", "--json", "--revoked", database_url=url)
    states = [k["revoked_at"] is not None for k in orjson.loads(listed.stdout) if k["name"] == name]
    assert states == [True, False]  # the revoked key, then the new one


async def test_the_demo_key_is_the_setting_and_publishes_anything(
    gateway: IngestSettings,  # noqa: F811
    mqtt_logins: MqttLogins,
) -> None:
    url = gateway.database_url
    default = IngestSettings().ingest_demo_key
    assert default == "demo-ingest-key"  # as the README says
    await asyncio.to_thread(provision_demo_key, services_at(url), default)
    assert (
        await asyncio.to_thread(provision_demo_key, services_at(url), default) is False
    )  # already there: unchanged
    demo = {"Authorization": f"Bearer {default}"}
    within = gateway.ingest_keys_refresh_s + 5
    await _status_until(gateway, demo, 202, within)
    await asyncio.to_thread(wait_login, mqtt_logins.address, ("demo", default))  # its device
    assert (await _post(gateway, [water_event("DEMO")], demo))[0] == 202
    # another IOC_INGEST_DEMO_KEY replaces the key: the old secret stops working
    assert (
        await asyncio.to_thread(provision_demo_key, services_at(url), "another-demo-secret") is True
    )
    await _status_until(gateway, demo, 401, within)
    await _status_until(gateway, {"Authorization": "Bearer another-demo-secret"}, 202, within)
    assert await asyncio.to_thread(provision_demo_key, services_at(url), default) is True


async def test_keys_that_cannot_be_read_answer_503_not_a_guess(bootstrap_servers: str) -> None:
    settings = IngestSettings(
        bootstrap_servers=bootstrap_servers,
        ingest_http_port=_free_port(),
        database_url=f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, mqtt=False, stop=stop))
    try:

        async def answer() -> tuple[int, Any] | None:
            try:
                status, body, _ = await _post(settings, [air_event()], AUTH)
            except aiohttp.ClientConnectionError:
                return None  # the port is not open yet
            return status, body

        status, body = await until(answer, "the gateway's port to open", every=0.1)
        assert (status, body["error"]) == (503, "auth_unavailable")
        # no key at all is still a 401: that needs no database
        assert (await _post(settings, [air_event()], {}))[0] == 401
    finally:
        stop.set()
        await task


async def test_the_key_list_is_trusted_only_for_a_bounded_time(database_url: str) -> None:
    """A cache that cannot reload keeps answering for IOC_INGEST_KEYS_MAX_STALE_S, then
    refuses (a revocation may be missing from it)."""
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    name = f"ioc_test_stale_{uuid.uuid4().hex[:6]}"
    timescale.ensure_database(admin, name)
    own = await ensure_test_keys(database_url.rsplit("/", 1)[0] + f"/{name}")
    cache = keystore.KeyCache(own, refresh_s=0.1, max_stale_s=1.0)
    assert await cache.reload()  # the first load, as the gateway makes it before run()
    reloads = asyncio.create_task(cache.run())
    try:
        assert cache.lookup(AIR_SECRET) is not None
        timescale.drop_database(admin, name)  # its connections are ended with it
        begin = time.monotonic()

        def refused() -> bool:
            try:
                cache.lookup(AIR_SECRET)
            except keystore.KeysUnavailable:
                return True
            return False

        await until(refused, "the stale list to stop being trusted", within=10)
        assert time.monotonic() - begin >= 0.5  # served a while from the last good list
    finally:
        reloads.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reloads


def _serve_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ioc", "ingest", "serve", "--no-mqtt"]
    full = {**os.environ, "IOC_INGEST_HTTP_PORT": str(_free_port()), **env}
    return subprocess.run(argv, capture_output=True, text=True, env=full, timeout=60)


async def test_a_deployment_gateway_needs_its_own_key_and_never_takes_the_demo_one(
    database_url: str, bootstrap_servers: str, tmp_path: Path
) -> None:
    """IOC_INGEST_REFUSE_DEMO_KEY (docker-compose.yml): no start without a key of its own
    or while the demo's secret is active, and a demo-secret key is never accepted."""
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    name = f"ioc_test_deploy_{uuid.uuid4().hex[:6]}"
    timescale.ensure_database(admin, name)
    url = await migrated(database_url.rsplit("/", 1)[0] + f"/{name}")
    env = {"IOC_DATABASE_URL": url, "IOC_INGEST_REFUSE_DEMO_KEY": "true"}
    try:
        empty = _serve_cli(env)
        assert empty.returncode == 2
        assert "no ingest key: create one with `ioc ingest keys add" in " ".join(
            empty.stderr.split()
        )
        await asyncio.to_thread(provision_demo_key, services_at(url, tmp_path), "demo-ingest-key")
        demo = _serve_cli(env)
        assert demo.returncode == 2
        assert "['demo'] have the demo's published secret" in " ".join(demo.stderr.split())
        assert (
            _ioc(
                "ingest", "keys", "revoke", "demo", database_url=url, state_dir=tmp_path
            ).returncode
            == 0
        )
        made = _ioc("ingest", "keys", "add", "own", "--types", "*", "--sources", "*",
                    database_url=url, state_dir=tmp_path)  # fmt: skip
        own = {"Authorization": f"Bearer {made.stdout.strip()}"}
        settings = IngestSettings(
            bootstrap_servers=bootstrap_servers,
            ingest_http_port=_free_port(),
            database_url=url,
            ingest_keys_refresh_s=0.2,
            ingest_refuse_demo_key=True,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, mqtt=False, stop=stop))
        try:
            await _status_until(settings, own, 202, 30)
            # a demo-secret key made while it runs is refused like an unknown one
            await asyncio.to_thread(
                provision_demo_key, services_at(url, tmp_path), "demo-ingest-key"
            )
            # a key made after it works once the gateway has reloaded both
            later = _ioc("ingest", "keys", "add", "later", "--types", "*", "--sources", "*",
                         database_url=url, state_dir=tmp_path)  # fmt: skip
            await _status_until(
                settings, {"Authorization": f"Bearer {later.stdout.strip()}"}, 202, 30
            )
            status, body, _ = await _post(
                settings, [air_event()], {"Authorization": "Bearer demo-ingest-key"}
            )
            assert (status, body["error"]) == (401, "unknown_key")
        finally:
            stop.set()
            await task
    finally:
        timescale.drop_database(admin, name)
