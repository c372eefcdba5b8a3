"""Magic strings and defaults kept in one place."""

from __future__ import annotations

DEFAULT_LANGUAGE = "nb"
# Languages of our own texts (templates/locale/<lang>.po); anything else gets Bokmål.
SUPPORTED_LANGUAGES = ("nb", "nn", "se", "en", "pl", "lt", "so", "ar", "ti", "uk", "ur", "fa")
# The staff pages (templates/pages/staff.toml) are in these.
STAFF_LANGUAGES = ("nb", "nn", "en")
DEFAULT_TIME_ZONE = "Europe/Oslo"
DEFAULT_PHONE_REGION = "NO"
ADULT_AGE = 18

# Job kinds in the durable work queue.
JOB_PLAN = "plan"
JOB_SEND = "send"
JOB_ESCALATE = "escalate"  # a message unread too long goes out on the next channel
JOB_CONTACT_FAILING = "contact_failing"  # prune a dead device / mark a dead address
JOB_SMS_STATUS = "sms_status"  # a Twilio status callback waiting for its SID to be known
JOB_TRANSLATE_REPLY = "translate_reply"  # a guardian's reply, translated for staff
JOB_TRANSLATE_EXPLANATION = "translate_explanation"  # an absence explanation, for staff
JOB_PURGE = "purge"  # daily: remove what is older than the retention
JOB_DIGEST = "digest"  # a guardian's daily digest of the day's messages (gateway/digest.py)

# Channel used on a delivery row that records a suppression (nobody was contacted).
SUPPRESSED_CHANNEL = "none"
# The reason of a delivery whose channel this process has not configured.
NO_SUCH_CHANNEL = "no_such_channel"
# The reason of a delivery whose message is gone (a crash between the two writes).
MESSAGE_MISSING = "message_missing"
# Channels whose providers call back by provider id (Twilio status callbacks) or whose
# recipients answer (inbound SMS): ``ProviderLookup`` answers for these alone, so the
# stores index no other channel's provider ids and addresses (on Redis two to three
# commands per delivery saved: docs/redis.md).
LOOKUP_CHANNELS = frozenset({"sms"})

API_KEY_PREFIX = "bbk_"
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_TOLERANCE_SECONDS = 5 * 60

# Everyday categories that a relation with daily care (daglig omsorg) receives.
EVERYDAY_CATEGORIES = frozenset({"general", "reminder", "absence", "emergency"})
# Categories that may be moved between channels but never switched off.
MANDATORY_CATEGORIES = frozenset({"absence", "emergency"})
# Categories that ignore quiet hours.
URGENT_CATEGORIES = frozenset({"absence", "emergency"})
# Categories reached per child (gateway/tracker.py); the others per recipient.
PER_CHILD = frozenset({"absence", "emergency"})
# Marks a delivery planned by escalation (its value says which step) in Delivery.context.
ESCALATION_KEY = "escalation"

# Outbound webhooks to the platform: job kinds and event types.
JOB_WEBHOOK_FANOUT = "webhook_fanout"
JOB_WEBHOOK_SEND = "webhook_send"
WEBHOOK_DELIVERY_UPDATED = "delivery.updated"
WEBHOOK_MESSAGE_READ = "message.read"
WEBHOOK_MESSAGE_REACHED = "message.reached"
WEBHOOK_REPLY_RECEIVED = "reply.received"
WEBHOOK_ABSENCE_EXPLAINED = "absence.explained"
# A guardian's absence report that no staff member is there to receive (issue 10).
WEBHOOK_ABSENCE_UNROUTED = "absence.unrouted"
WEBHOOK_EVENT_TYPES = (
    WEBHOOK_DELIVERY_UPDATED,
    WEBHOOK_MESSAGE_READ,
    WEBHOOK_MESSAGE_REACHED,
    WEBHOOK_REPLY_RECEIVED,
    WEBHOOK_ABSENCE_EXPLAINED,
    WEBHOOK_ABSENCE_UNROUTED,
)

# Scopes of a tenant's API key. Without "protected", the status API shows persons with a
# protected address (fortrolig / strengt fortrolig) only by an opaque pseudonym.
SCOPE_STAFF = "staff"
SCOPE_PROTECTED = "protected"
DEFAULT_SCOPES = (SCOPE_STAFF,)

# Absence (gateway/absence.py): job kinds, the message types its messages carry (event
# types the platform sends, and the ones absence makes itself), and the delivery context
# key of the absence facts the templates render.
JOB_ABSENCE_PLAN = "absence_plan"
JOB_ABSENCE_UNREACHED = "absence_unreached"
ABSENCE_RECORDED = "absence.recorded"
ABSENCE_REPORTED = "absence.reported"
ABSENCE_CANCELLED = "absence.cancelled"
ABSENCE_CONFIRMATION = "absence.confirmation"
ABSENCE_INFORMED = "absence.informed"
ABSENCE_UNREACHED = "absence.unreached"
ABSENCE_MESSAGE_TYPES = (
    ABSENCE_RECORDED,
    ABSENCE_REPORTED,
    ABSENCE_CANCELLED,
    ABSENCE_CONFIRMATION,
    ABSENCE_INFORMED,
    ABSENCE_UNREACHED,
)
ABSENCE_CONTEXT_KEY = "absence"
# Delivery.context flag: a protected child or co-guardian, so the wording names no unit,
# group, sender or staff (gateway/protection.py: hides_places).
NEUTRAL_KEY = "neutral"
