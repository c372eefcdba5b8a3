"""Magic strings and defaults kept in one place."""

from __future__ import annotations

DEFAULT_LANGUAGE = "nb"
SUPPORTED_LANGUAGES = ("nb", "nn", "en")
DEFAULT_TIME_ZONE = "Europe/Oslo"
DEFAULT_PHONE_REGION = "NO"
ADULT_AGE = 18

# Job kinds in the durable work queue.
JOB_PLAN = "plan"
JOB_SEND = "send"

# Channel used on a delivery row that records a suppression (nobody was contacted).
SUPPRESSED_CHANNEL = "none"

API_KEY_PREFIX = "bbk_"
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_TOLERANCE_SECONDS = 5 * 60

# Everyday categories that a relation with daily care (daglig omsorg) receives.
EVERYDAY_CATEGORIES = frozenset({"general", "reminder", "absence", "emergency"})
# Categories that may be moved between channels but never switched off.
MANDATORY_CATEGORIES = frozenset({"absence", "emergency"})
# Categories that ignore quiet hours.
URGENT_CATEGORIES = frozenset({"absence", "emergency"})
