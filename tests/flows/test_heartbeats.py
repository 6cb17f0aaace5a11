"""Flow-run heartbeats: the events Prefect's zombie-flow automation watches, stopped at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prefect import flow, tags
from prefect.context import FlowRunContext

from flows.heartbeats import THREAD_NAME, flow_run_heartbeats, watched_heartbeat_seconds


@pytest.fixture(scope="module", autouse=True)
def _prefect_api():
    """Flows here report to a Prefect server of their own, on a temporary database, that
    stops when the module's tests end, after its logs are sent (Prefect's test harness):
    the temporary server Prefect would start itself lives until the interpreter exits,
    and its last log lines then go to an API that is gone."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


@pytest.fixture
def emitted(monkeypatch) -> list[Any]:
    """Every event the heartbeat thread emits, as Prefect's ``emit_event`` builds it
    (passed on to the real one, which sends it to the API)."""
    import prefect.events

    real = prefect.events.emit_event
    seen: list[Any] = []

    def record(**kwargs: Any) -> Any:
        event = real(**kwargs)
        seen.append(event)
        return event

    monkeypatch.setattr(prefect.events, "emit_event", record)
    return seen


def taken(events: list[Any]) -> list[Any]:
    beats = [e for e in events if e.event == "prefect.flow-run.heartbeat"]
    events.clear()
    return beats


def test_a_flow_beats_while_it_works_and_stops_when_it_ends(emitted):
    @flow(name="heartbeat-probe")
    def probe() -> tuple[str, str, int]:
        with flow_run_heartbeats(0.05):
            time.sleep(0.3)
            alive = len(heartbeat_threads())
        context = FlowRunContext.get()
        assert context is not None and context.flow_run is not None
        return str(context.flow_run.id), str(context.flow_run.flow_id), alive

    with tags("nightly"):
        run_id, flow_id, alive_inside = probe()

    assert alive_inside == 1
    assert heartbeat_threads() == []  # stopped with the block, not at its next step
    beats = taken(emitted)
    assert 2 <= len(beats) <= 8  # one at once, then every 0.05 s for 0.3 s (fewer on a busy machine)
    for beat in beats:
        assert beat.resource.id == f"prefect.flow-run.{run_id}"
        related = {r.role: r for r in beat.related}
        assert related["flow"].id == f"prefect.flow.{flow_id}"
        assert related["flow"].name == "heartbeat-probe"
        assert related["tag"].id == "prefect.tag.nightly"
    time.sleep(0.15)
    assert taken(emitted) == []  # nothing after the flow's end


def test_no_interval_or_no_flow_run_means_no_heartbeats(emitted):
    @flow(name="heartbeat-off")
    def quiet() -> int:
        with flow_run_heartbeats(None):
            return len(heartbeat_threads())

    assert quiet() == 0
    with flow_run_heartbeats(0.05):  # outside any flow run: nothing to beat for
        assert heartbeat_threads() == []
    assert taken(emitted) == []


@pytest.mark.parametrize(
    "api_url, configured, expected",
    [
        ("http://prefect:4200/api", 180, 180.0),  # a server that outlives the build
        ("http://prefect:4200/api", 45, 45.0),
        ("http://prefect:4200/api", None, None),  # switched off
        ("", 180, None),  # Prefect's temporary server dies with the build: nothing watches
    ],
)
def test_heartbeat_frequency_follows_prefects_setting(monkeypatch, api_url, configured, expected):
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", api_url)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: configured}):
        assert watched_heartbeat_seconds() == expected
