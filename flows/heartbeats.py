"""Flow-run heartbeats that stop the moment the build's work does.

Heartbeats let a Prefect server mark a flow run whose process died as crashed (Prefect's
zombie-flow automation watches for missing ``prefect.flow-run.heartbeat`` events).
Prefect's own heartbeat thread (``prefect.flow_engine._send_heartbeats``, 3.8) sleeps in
1 s steps and the engine joins it when the flow run ends, so every build ended on a whole
second after its start: ~0.5 s per build on average, up to 1 s — 10-16 % of the
10,000-image build of ``bench/scale.py``. The step is not a setting. Our thread waits on
an event instead, so it stops at once, and emits the same event (same resource, related
flow, deployment and tags) at the configured ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
(Prefect's settings hold it at ≥ 30 s), so whatever watches heartbeats sees no difference.

On a temporary Prefect server (no ``PREFECT_API_URL``, or the one
:func:`flows.settings.ensure_prefect_api` started) there are no heartbeats at all: that
server dies with the build's process, so nothing is left to watch them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flows.settings import on_temporary_prefect_server

THREAD_NAME = "medcurate-flow-heartbeat"
logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from prefect.context import FlowRunContext
    from prefect.events.related import RelatedResource


def watched_heartbeat_seconds() -> float | None:
    """Seconds between this process's flow-run heartbeats: Prefect's configured frequency
    where a server outlives the build, ``None`` (no heartbeats) on a temporary server or
    when heartbeats are switched off."""
    from prefect.settings import get_current_settings

    configured = get_current_settings().flows.heartbeat_frequency
    if configured is None or on_temporary_prefect_server():
        return None
    return float(configured)


@contextlib.contextmanager
def without_prefect_heartbeat_thread() -> Iterator[None]:
    """Flow runs started inside emit no heartbeats of Prefect's own (see the module's
    docstring); :func:`flow_run_heartbeats` inside the flow replaces them."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextlib.contextmanager
def flow_run_heartbeats(seconds: float | None) -> Iterator[None]:
    """Emit ``prefect.flow-run.heartbeat`` for the current flow run every ``seconds``
    (the first at once) until the block ends; nothing when ``seconds`` is ``None`` or
    outside a flow run. Call inside the flow function."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if seconds is None or context is None or context.flow_run is None:
        yield
        return
    resource, related = _heartbeat_event_template(context)
    stop = threading.Event()

    def beat() -> None:
        from prefect.events import emit_event

        while True:
            try:
                emit_event(event="prefect.flow-run.heartbeat", resource=resource, related=related)
            except Exception:  # a missed beat must not fail the build; the next one retries
                logger.debug("failed to emit a flow-run heartbeat", exc_info=True)
            if stop.wait(seconds):
                return

    # the thread runs in a copy of this context so that it reports to the same API
    # (Prefect's settings context), as Prefect's own heartbeat thread does
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _heartbeat_event_template(context: FlowRunContext) -> tuple[dict[str, str], list[RelatedResource]]:
    """The resource and related resources Prefect puts on a flow run's heartbeat
    (``FlowRunEngine._build_heartbeat_event_template``): the run, its flow, its
    deployment and its tags."""
    from prefect import __version__
    from prefect.events.related import RelatedResource, tags_as_related_resources

    flow_run, flow = context.flow_run, context.flow
    assert flow_run is not None
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
        "prefect.resource.name": flow_run.name or "",
        "prefect.version": __version__,
    }
    related: list[RelatedResource] = []
    if flow_run.flow_id:
        related.append(
            RelatedResource.model_validate(
                {
                    "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": flow.name if flow else "",
                }
            )
        )
    if flow_run.deployment_id:
        related.append(
            RelatedResource.model_validate(
                {"prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}", "prefect.resource.role": "deployment"}
            )
        )
    related += tags_as_related_resources(set(flow_run.tags or []))
    return resource, related
