"""The Celery app, configured for jobs that run for hours and must survive a lost worker.

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only when the
  search ends, so a worker that dies mid-search leaves it to be delivered again.
- ``worker_prefetch_multiplier = 1``: a worker holds only the search it runs, never a backlog.
- Redis ``visibility_timeout`` longer than any search: Redis must not hand a message still being
  worked on to a second worker.  Recovery of a dead worker's search is the reaper's job
  (`worker.reaper`), which notices the stale heartbeat long before any visibility timeout.
- One queue per device kind (``cpu``, ``gpu``); a worker consumes the queue of its hardware.
- No result backend: results live in the database, written by the task itself.

Building the app connects to nothing; the API uses it only to send (`enqueue`).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Queue
from kombu.exceptions import OperationalError

from store.settings import QUEUES, Settings

TASK_NAME = "autoslim.run_search"
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
"""A send to a broker that is down fails within about a second (the caller gets a 503 and the
search is sent later by `worker.dispatch`), instead of holding the request."""


class BrokerUnavailable(RuntimeError):
    """The message could not be sent: the broker is down or unreachable."""


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker options: message folders for the embedded filesystem queue, timeouts for Redis."""
    if settings.broker.startswith("filesystem"):
        folder = settings.broker_folder
        for sub in ("messages", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        messages = str(folder / "messages")
        return {
            "data_folder_in": messages,
            "data_folder_out": messages,
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.broker_prefix:
        options["global_keyprefix"] = settings.broker_prefix
    return options


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the configured broker; the settings ride along for the task to read."""
    app = Celery("autoslim", broker=settings.broker, include=["worker.tasks"])
    embedded = settings.broker.startswith("filesystem")
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.default_queue,
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_create_missing_queues=False,
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_publish_retry_policy=PUBLISH_RETRY,
        # The filesystem transport emulates broadcast by polling files; the embedded worker does
        # without remote control rather than pay for it.
        worker_enable_remote_control=not embedded,
        worker_hijack_root_logger=False,
    )
    app.autoslim_settings = settings  # type: ignore[attr-defined]
    return app


def enqueue(celery: Celery, search_id: str, queue: str) -> str:
    """Send the search's id (and nothing else: the spec is read from the database) to ``queue``;
    `BrokerUnavailable` when the broker cannot take it."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; choose from {', '.join(QUEUES)}")
    try:
        result = celery.send_task(TASK_NAME, args=[search_id], queue=queue, routing_key=queue)
    except (OperationalError, OSError, ConnectionError) as err:
        raise BrokerUnavailable(f"{type(err).__name__}: {err}") from err
    return result.id


def broker_ok(celery: Celery, timeout_s: float = 3.0) -> str | None:
    """None when the broker answers, else the reason (for /health)."""
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
            channel = conn.default_channel
            if hasattr(channel, "client"):  # Redis: a connection object alone proves nothing
                channel.client.ping()
            folder = getattr(channel, "data_folder_out", None)
            if folder is not None and not os.access(folder, os.W_OK):  # the filesystem queue
                return f"message folder {folder} is not writable"
    except Exception as err:  # noqa: BLE001 - any broker failure is reported, not raised
        return f"{type(err).__name__}: {err}"
    return None
