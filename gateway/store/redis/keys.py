"""The Redis key layout: every key name the backend uses is built here or from the
prefixes made here, and this docstring is the one list of them (docs/redis.md
repeats it for operators).

``P`` is the key prefix (``bb`` unless configured); ``{…}`` is the Cluster hash tag:

* ``P:{<tenant>}:...`` (:func:`tenant_prefix`) — everything a tenant owns. The hash
  tag keeps a tenant in one Cluster slot, so a tenant's multi-key scripts are legal.
* ``P:{q}:...`` (:func:`queue_prefix`) — the work queue and the global webhook feed,
  one slot.
* ``P:{tenants}:...`` — tenants, API keys, tenants with webhooks (one slot).
* ``P:<name>:<id>`` (:func:`global_key`) — single-key lookups without a tenant,
  spread over the cluster.

The keys (``{t}`` a tenant's tag):

* `P:{tenants}:all`, `P:{tenants}:keys` — tenants; the first API key's hash → tenant
* `P:{tenants}:apikeys`, `P:{tenants}:apikey-ids`, `P:{tenants}:apikey-revoked`,
  `P:{tenants}:tkeys:<tenant>` — API keys: hash → key (id, tenant, scopes, expiry; never
  the key), id → hash, id → revocation time, a tenant's key ids
* `P:aph:<hash of a phone number>` — absence alerts whose recipients have that number
  (tenant, message, person by time; two days), for SMS answers
* `P:{t}:units`, `groups`, `persons`, `roles` — directory rows (hashes of JSON)
* `P:{t}:um:<unit>`, `gm:<group>`, `ug:<unit>` — members of units and groups, groups of
  units
* `P:{t}:rc:<child>`, `rg:<guardian>` — relations both ways; `flags`,
  `fh:<child>\\x1f<guardian>` manual flags and their history
* `P:{t}:prefs`, `dev:<person>`, `tok`, `fid`, `fail` — preferences, devices and their
  token index, failing contacts
* `P:{t}:dirv`, `prefv`, `devv` — versions: directory writes are WATCHed transactions,
  `load_audience` a checked snapshot
* `P:{t}:dirlock` — the tenant's directory lock (a token with an expiry), held while a
  batch is written in chunks or a deletion runs
* `P:{t}:m:<id>`, `msgs` — messages; messages by creation time (retention)
* `P:{t}:d:<id>`, `h:<id>` — deliveries with their status history (fields `hn`, `h1` …
  `hn`; the `h:<id>` lists of older versions are read first)
* `P:{t}:mr:<msg>`, `mc:<msg>`, `rd:<msg>` — deliveries per recipient, counts per
  status, reads
* `P:{t}:ib:<guardian>`, `la:<hash>`, `stats` — inbox, latest delivery per address,
  counts per channel and status
* `P:{t}:r:<id>`, `mrep:<msg>`, `reps` — replies, replies per message, replies by time
* `P:{t}:rch:<msg>`, `rchl:<msg>`, `settings` — tracking (reached), tenant settings
  (escalation, scopes)
* `P:{t}:signin:<link id>`, `staffgen` — staff sign-in links used (until the link's
  expiry), staff members' session generations (a sign-out writes a new one)
* `P:{t}:wh:ep`, `wh:on` — webhook endpoints; "has an enabled endpoint"
* `P:{t}:abs:<msg>`, `absev:<event>`, `abskey:<key>`, `absx:<msg>`, `absxl:<msg>`,
  `absidx`, `absday:<day>`, `absdayv` — absence records, claimed event ids, latest
  record per key, explanations, records by creation time (retention), records by the
  days they are for, when the last indexing into `absday` began (at an open)
* `P:{q}:s:<kind>`, `z:<kind>`, `u:<kind>`, `j:<id>`, `kinds`, `next`, `clock`, `lease` —
  the work queue (`u:` the urgent lane; `next` a lower bound of each waiting set's
  earliest due time, which claims read to skip the sets with nothing due; `lease` the
  lease of the last claim that looked for ended leases, for the queue statistics)
* `P:{t}:wh:feed`, `wh:seq` — the tenant's change feed (relayed into the global one)
* `P:{q}:wh:feed`, `wh:seq`, `wh:cursor`, `wh:pend`, `wh:rel`, `wh:m:<id>`, `wh:a:<id>`,
  `wh:t:<tenant>`, `wh:e:…` — global webhook change feed, pending tenants, relay
  positions, and the outbox (beside their jobs)
* `P:{tenants}:wh` — tenants that ever had a webhook endpoint (the sweep for stranded
  changes)
* `P:{t}:att:<id>`, `attmsg:<msg>`; `P:att:unused`, `P:att:used` — attachments and a
  message's attachments by position; attachments by upload or use time (retention)
* `P:didb:<n>`, `P:pid:<hash>`, `P:adt:<hash>`, `P:rl:<key>`, `P:active` — lookups
  without a tenant (`didb:` delivery id -> tenant in 64 hashes by the id's CRC-32,
  `did:<id>` of older versions still read; `adt:` the tenants that sent to an address
  by their latest delivery's time, `addr:` its string form of older versions still
  read; `pid:`, `adt:` only for SMS, gateway.constants.LOOKUP_CHANNELS), rate limits,
  tenants with data

Each name is one constant below (a :class:`Family` is followed by ``:<id>``), used by
the Python features and, through the table :func:`lua_table` generates, by the Lua
scripts (``lua/*.lua`` write ``tp .. K.DELIVERY .. id``; ``tests/test_redis_keys.py``
fails on a suffix written out in a script or a name no script or feature uses). The
scripts get the prefixes as ``ARGV[1]``. Addresses and provider ids appear in key names
only hashed (:func:`gateway.store.redis.base.digest`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Final


class Family(str):
    """A key family: the name, then ``:`` and an id (``d:<delivery id>``)."""

    __slots__ = ()


# ---------------------------------------------------------------- under P:{<tenant>}:
# the directory (redis/directory.py)
UNITS: Final = "units"
GROUPS: Final = "groups"
PERSONS: Final = "persons"
ROLES: Final = "roles"
UNIT_MEMBERS: Final = Family("um")
GROUP_MEMBERS: Final = Family("gm")
UNIT_GROUPS: Final = Family("ug")
CHILD_RELATIONS: Final = Family("rc")
GUARDIAN_RELATIONS: Final = Family("rg")
FLAGS: Final = "flags"
FLAG_HISTORY: Final = Family("fh")
PROTECTION_HISTORY: Final = Family("ph")
DIRECTORY_VERSION: Final = "dirv"
DIRECTORY_LOCK: Final = "dirlock"
DIRECTORY_READERS: Final = "dirread"
# guardians' own settings (redis/guardians.py)
PREFERENCES: Final = "prefs"
DEVICES: Final = Family("dev")
TOKENS: Final = "tok"
FIDS: Final = "fid"
FAILING: Final = "fail"
PREFERENCES_VERSION: Final = "prefv"
DEVICES_VERSION: Final = "devv"


def version_step() -> int:
    """What a write adds to a directory version (``dirv``, ``prefv``, ``devv``): a random
    step, not 1, so equal versions mean the same writes even across a failover or a
    restart that lost the last writes (with +1 a lost write and a later one could give
    the same number, and a snapshot kept at it, redis/snapshots.py, would be taken for
    current). At most 2**32 a write: 2**31 writes before the 64-bit counter is full."""
    return secrets.randbits(32) + 1


# messages and deliveries (redis/messages.py, deliveries.py, inbox.py, ...)
MESSAGE: Final = Family("m")
MESSAGES: Final = "msgs"
DELIVERY: Final = Family("d")
HISTORY: Final = Family("h")
RECIPIENTS: Final = Family("mr")
COUNTS: Final = Family("mc")
READS: Final = Family("rd")
INBOX: Final = Family("ib")
LATEST: Final = Family("la")
STATS: Final = "stats"
REPLY: Final = Family("r")
MESSAGE_REPLIES: Final = Family("mrep")
REPLIES: Final = "reps"
REACHED: Final = Family("rch")
REACHED_LIST: Final = Family("rchl")
SETTINGS: Final = "settings"
SCHEDULE: Final = Family("sched")
DIGEST: Final = Family("digest")
TRANSLATIONS: Final = Family("tr")
ATTACHMENT: Final = Family("att")
MESSAGE_ATTACHMENTS: Final = Family("attmsg")
# absence (redis/absence.py)
ABSENCE: Final = Family("abs")
ABSENCE_EVENT: Final = Family("absev")
ABSENCE_KEY: Final = Family("abskey")
EXPLANATIONS: Final = Family("absx")
EXPLANATION_LIST: Final = Family("absxl")
ABSENCE_INDEX: Final = "absidx"
ABSENCE_DAY: Final = Family("absday")
ABSENCE_DAYS_INDEXED: Final = "absdayv"
# staff sign-in links used once, staff sessions ended by a sign-out (redis/staff_sessions.py)
USED_SIGNIN_LINK: Final = Family("signin")
STAFF_GENERATIONS: Final = "staffgen"
# webhooks (redis/webhooks.py): the tenant's endpoints and change feed
WEBHOOK_ENDPOINTS: Final = "wh:ep"
WEBHOOKS_ON: Final = "wh:on"
TENANT_FEED: Final = "wh:feed"
TENANT_SEQ: Final = "wh:seq"

# ---------------------------------------------------------------- under P:{q}:
STREAM: Final = Family("s")
WAITING: Final = Family("z")
URGENT: Final = Family("u")
JOB: Final = Family("j")
KINDS: Final = "kinds"
NEXT_DUE: Final = "next"
CLOCK: Final = "clock"
LEASE: Final = "lease"
FEED: Final = "wh:feed"
SEQ: Final = "wh:seq"
CURSOR: Final = "wh:cursor"
PENDING: Final = "wh:pend"
RELAYED: Final = "wh:rel"
WEBHOOK_MESSAGE: Final = Family("wh:m")
ATTEMPTS: Final = Family("wh:a")
TENANT_MESSAGES: Final = Family("wh:t")
ENDPOINT_MESSAGES: Final = Family("wh:e")

# ---------------------------------------------------------------- under P:{tenants}:
TENANTS_TAG: Final = "{tenants}"
TENANTS: Final = "all"
TENANT_BY_KEY: Final = "keys"
WEBHOOK_TENANTS: Final = "wh"
API_KEYS: Final = "apikeys"
API_KEY_IDS: Final = "apikey-ids"
API_KEY_REVOKED: Final = "apikey-revoked"
TENANT_KEYS: Final = Family("tkeys")

# ---------------------------------------------------------------- P:<name>:<id>
ALERT_PHONE: Final = Family("aph")
DELIVERY_TENANT: Final = Family("did")  # read only: a delivery's tenant, as older versions kept it
DELIVERY_TENANTS: Final = Family("didb")
PROVIDER_ID: Final = Family("pid")
ADDRESS: Final = Family("addr")  # read only: the latest delivery, as older versions kept it
ADDRESS_TENANTS: Final = Family("adt")
RATE_LIMIT: Final = Family("rl")
ACTIVE: Final = "active"
ATTACHMENTS_BY_TIME: Final = Family("att")


def names() -> dict[str, str]:
    """Every key name of this module by its constant's name."""
    return {k: v for k, v in globals().items() if k.isupper() and isinstance(v, str)}


def lua_table(wanted: Iterable[str]) -> str:
    """``local K = {...}`` with the ``wanted`` names for a Lua script, a family's with
    its ``:``; a name this module lacks is a KeyError (when the script is loaded)."""
    known = names()
    rows = [
        f"{name}='{value}:'," if isinstance(value, Family) else f"{name}='{value}',"
        for name, value in ((name, known[name]) for name in sorted(set(wanted)))
    ]
    return "local K = {" + "".join(rows) + "}\n"


def tenant_prefix(prefix: str, tenant_id: str) -> str:
    """The key prefix of a tenant (hash-tagged): ``P:{tenant}:``."""
    return f"{prefix}:{{{tenant_id}}}:"


def tenant_key(prefix: str, tenant_id: str, *parts: str) -> str:
    """``P:{tenant}:part:part``."""
    return tenant_prefix(prefix, tenant_id) + ":".join(parts)


def tenant_keys(prefix: str, tenant_id: str) -> Callable[..., str]:
    """``t = tenant_keys(P, tenant)``; ``t("gm", g)`` is the key ``P:{tenant}:gm:g``."""
    tp = tenant_prefix(prefix, tenant_id)

    def key(*parts: str) -> str:
        return tp + ":".join(parts)

    return key


def global_key(prefix: str, *parts: str) -> str:
    """A key without a hash tag (spread over the cluster): ``P:part:part``."""
    return f"{prefix}:" + ":".join(parts)


def queue_prefix(prefix: str) -> str:
    """The work queue's prefix (one slot): ``P:{q}:``."""
    return f"{prefix}:{{q}}:"


def queue_key(prefix: str, *parts: str) -> str:
    """``P:{q}:part:part``."""
    return queue_prefix(prefix) + ":".join(parts)
