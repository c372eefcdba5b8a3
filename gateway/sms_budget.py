"""The SMS budget: what a text message says, and whether it can be answered.

An SMS costs per segment (channels/gsm.py: 160 GSM-7 characters in one). The default
texts are laid out so that a short staff text goes in ONE segment in nb, nn and en:
"<sender>: <subject>", the children it concerns, the body and the read link; the
notification-settings line is not in the SMS (it is on the linked page). Each
sent SMS records its segments on the delivery (the status API sums them per message
as ``sms_segments``) and in the ``budbringer_sms_segments`` histogram.

Keyword answers ("Svar SYK, LEGE, FRI eller ANNET") are offered only when the sender
can receive them: an alphanumeric sender id cannot, so an absence alert from one asks
for the answer through the link instead.
"""

from __future__ import annotations

from channels.sms import parse_sender
from gateway.constants import ESCALATION_KEY
from gateway.models import Delivery

STEP_MARKER = "step:"  # gateway/escalation.py: an escalation step, sent because unread


def is_reminder(delivery: Delivery) -> bool:
    """Whether this delivery is an escalation step: the message went out before and was
    not read in time (a failover to the next channel after a failure is not)."""
    marker = delivery.context.get(ESCALATION_KEY)
    return isinstance(marker, str) and marker.startswith(STEP_MARKER)


def sms_answerable(delivery: Delivery, fallback_sender: str | None) -> bool:
    """Whether an SMS of this delivery comes from a sender that can receive answers: the
    unit's own sender (``context["sms_sender"]``) if valid, else the channel's fallback;
    an alphanumeric id cannot. Without any sender known (no SMS provider configured:
    the outbox), answers are assumed possible."""
    for candidate in (delivery.context.get("sms_sender"), fallback_sender):
        if isinstance(candidate, str) and candidate:
            try:
                kind, _ = parse_sender(candidate)
            except ValueError:
                continue
            return kind != "alphanumeric"
    return True
