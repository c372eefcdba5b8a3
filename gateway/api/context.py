"""What every route handler reaches through ``request.app[CTX]``.

One instance of each flow object lives here (built by the service with everything it
needs, e.g. the absence flows with the escalator); handlers call these, never build
their own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.absence import Absences
from gateway.clock import Clock
from gateway.settings import Settings
from gateway.store import Store

if TYPE_CHECKING:
    from gateway.attachments import Attachments
    from gateway.audience_handoff import AudienceHandoff
    from gateway.channel_health import ChannelHealth
    from gateway.render import Renderer


@dataclass
class AppContext:
    settings: Settings
    store: Store
    clock: Clock
    # signs guardian tokens and read links (settings.secret_key, or a generated local one)
    secret: bytes = b""
    renderer: Renderer | None = None
    # set whenever new work is queued, so idle workers wake at once (absence latency)
    work_available: asyncio.Event = field(default_factory=asyncio.Event)
    # each channel's state (ok, degraded, stopped) from the workers' circuit breaker; None
    # in an API-only process (it sends nothing, so it knows nothing about the providers)
    channel_health: ChannelHealth | None = None
    # uploads, downloads and their storage (gateway/attachments.py); None: not offered
    attachments: Attachments | None = None
    # The absence flows (gateway/absence.py). The service passes its own, wired with the
    # escalator; without one (an app built in a test) one is made here, once per app.
    absences: Absences | None = None
    # message.created's audience snapshot, handed from the intake to this process's
    # planner (gateway/audience_handoff.py); None where this process plans nothing.
    audiences: AudienceHandoff | None = None

    def __post_init__(self) -> None:
        if self.absences is None:
            self.absences = Absences(
                self.store,
                self.clock,
                self.settings,
                renderer=self.renderer,
                work_available=self.work_available,
            )


CTX = web.AppKey("ctx", AppContext)
