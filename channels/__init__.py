"""Channel adapters, registered in one explicit dict.

Adding a channel = one module, one entry in ``build_channels``, one test file.
Channels import only ``gateway.models``, ``gateway.errors`` and ``gateway.settings``.
A provider that is not configured is replaced by the development outbox, so the
demo runs with no credentials at all.
"""

from __future__ import annotations

from channels.base import Channel
from gateway.settings import Settings

__all__ = ["Channel", "build_channels"]


def build_channels(settings: Settings) -> dict[str, Channel]:
    from channels.email import EmailChannel
    from channels.inapp import InAppChannel
    from channels.outbox import OutboxChannel
    from channels.push import PushChannel
    from channels.sms import SmsChannel

    outbox = settings.outbox_dir
    url = settings.public_url
    built: dict[str, Channel] = {
        "inapp": InAppChannel(),
        "email": (
            EmailChannel(settings.smtp, url)
            if settings.smtp
            else OutboxChannel("email", outbox, url)
        ),
        "sms": SmsChannel(settings.twilio, url)
        if settings.twilio
        else OutboxChannel("sms", outbox, url),
        "push": PushChannel(settings.fcm, url)
        if settings.fcm
        else OutboxChannel("push", outbox, url),
    }
    if settings.voice.enabled:
        from channels.voice import VoiceChannel

        built["voice"] = (
            VoiceChannel(settings.twilio, settings.voice, url)
            if settings.twilio
            else OutboxChannel("voice", outbox, url)
        )
    # A channel the deployment does not use is not built: its deliveries fail with
    # ``no_such_channel`` instead of landing in the outbox. Voice: voice.enabled says.
    return {
        name: channel
        for name, channel in built.items()
        if name in settings.channels or name == "voice"
    }
