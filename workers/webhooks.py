"""Webhook delivery for the approval service (`approval.notify_url`, a call's `callback_url`):
each POST runs as its own task, off the call path, retried with backoff, given up loudly."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

ATTEMPTS = 4


class Webhooks:
    def __init__(self) -> None:
        self.http: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[None]] = set()

    def post(self, url: str, payload: dict[str, Any]) -> None:
        task = asyncio.create_task(self._deliver(url, payload))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        import httpx  # here: only webhooks need it, and it costs the process ~15 MB

        if self.http is None:
            self.http = httpx.AsyncClient(timeout=5.0)
        for attempt in range(ATTEMPTS):
            try:
                response = await self.http.post(url, json=payload)
                if response.status_code < 500:
                    return
            except httpx.HTTPError as exc:
                log.info("webhook %s attempt %d failed: %s", url, attempt + 1, exc)
            await asyncio.sleep(0.25 * 2**attempt)
        log.warning("webhook %s: giving up after %d attempts", url, ATTEMPTS)
