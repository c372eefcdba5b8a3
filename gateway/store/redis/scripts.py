"""Lua scripts of the Redis backend: every multi-key write that must be atomic.

Each script touches keys of ONE hash tag only (a tenant's ``{tenant}``, the
queue's ``{q}`` or the tenants' ``{tenants}``), so the layout works on Redis
Cluster. ``KEYS[1]`` is always a key of that tag (it routes the call); the
other keys are built from the tag's prefix passed as ``ARGV[1]``.

Optional string arguments are encoded as ``""`` for None and ``"+" .. value``
otherwise (``opt()`` below), so an empty string stays distinguishable.

The Lua itself is in ``lua/<name>.lua`` beside this module (package data, so an
installed wheel has it), read once when this module is imported; this module only
composes the files (the shared blocks ``each_chunk``, ``common``, ``queue_common``,
``device_common``) and says which script reports change-feed entries
(:func:`tenant_script`). The forward-only status rule is not written in Lua at all:
:func:`status_rule` generates its table from :func:`gateway.models.can_transition`.
Nor are the key names: every script starts with the table ``K`` that
:func:`gateway.store.redis.keys.lua_table` generates (``tp .. K.DELIVERY .. id``).
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

from gateway.models import DeliveryStatus, can_transition
from gateway.store.redis.keys import lua_table

# A key name in a script: ``tp .. K.DELIVERY .. id`` (redis/keys.py).
_KEY_NAME = re.compile(r"\bK\.([A-Z_]+)\b")


class Lua:
    """A script loaded once per connection pool and run by its SHA1; its source starts
    with the key names it uses from :mod:`gateway.store.redis.keys` (``local K = {...}``:
    only those, as the table is built on every call)."""

    def __init__(self, source: str) -> None:
        wanted = _KEY_NAME.findall(source)
        self.source = (lua_table(wanted) if wanted else "") + source
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


def read(name: str) -> str:
    """The source of ``lua/<name>.lua``."""
    return files(__package__ or __name__).joinpath("lua", f"{name}.lua").read_text("utf-8")


def status_rule() -> str:
    """Lua's ``can_move(old, new)``: the table of every allowed move, generated from
    :func:`gateway.models.can_transition` (tests/contract/test_status_rule.py checks
    every pair on every backend)."""
    rows = []
    for old in DeliveryStatus:
        allowed = ", ".join(
            f"{new.value}=true" for new in DeliveryStatus if can_transition(old, new)
        )
        rows.append(f"  {old.value}={{{allowed}}},")
    return (
        "local ALLOWED = {\n"
        + "\n".join(rows)
        + "\n}\nlocal function can_move(old, new)\n"
        + "  local to = ALLOWED[old]\n  return to ~= nil and to[new] == true\nend\n"
    )


# A tenant script that fed the change feed returns {FED, tenant, earliest change time,
# its own result}; the client's EVALSHA response callback unwraps that (redis/feed.py).
FED = "\0fed"


def tenant_script(body: str) -> str:
    """A script on ``_COMMON`` that reports whether it fed the tenant's change feed.
    The counters its moves summed (``count``) are written when its body returns."""
    return (
        "local FED_TP, FED_AT\nlocal function main()\n"
        + _COMMON
        + "local function body()\n"
        + body
        + "\nend\nlocal out = body()\nflush_counts()\nreturn out\n"
        + "end\nlocal out = main()\nif FED_TP then\n"
        + "  return {'\\0fed', string.match(FED_TP, '^.-:{(.*)}:$'), FED_AT, out}\n"
        + "end\nreturn out\n"
    )


# Shared Lua: the forward-only rule (generated) and one status move, the change feed.
_COMMON = status_rule() + read("each_chunk") + read("common")

# KEYS[1] tenant anchor. ARGV: tp, then 7 per move: id status at detail reason pid segs.
TRANSITION = tenant_script(read("transition"))

# KEYS[1] the message hash. ARGV: tp ttl message_id json created_us
ACCEPT_MESSAGE = read("accept_message")

# KEYS[1] tenant anchor. ARGV: tp ttl, then 2 per delivery: meta json. meta fields (\31):
# id message recipient channel status created20 updated not_before reason pid segs addrkey
ADD_DELIVERIES = tenant_script(read("add_deliveries"))

# KEYS[1] tenant anchor. ARGV: tp ttl message recipient at via
MARK_READ = tenant_script(read("mark_read"))

# KEYS[1] the reply key. ARGV: tp ttl reply_id json message_id(opt) received_us person(opt)
# channel body
ADD_REPLY = tenant_script(read("add_reply"))

# KEYS[1] the recipient's inbox (message ids by the message's time). ARGV: tp recipient
# max_score now limit [message_id]. Returns status, delivery json, message json, read
# ("at\31via" or "") per item, newest first.
INBOX = read("inbox")

# KEYS[1] tenant anchor. ARGV: tp cutoff_us budget. Deletes messages created before the
# cutoff with their deliveries, history, reads and replies, and replies received before it.
# Returns {deliveries removed, 1 if there is more to do, removed delivery ids...}.
PURGE = read("purge")

# KEYS[1] tenants hash, KEYS[2] key-hash index. ARGV: id key_hash json
CREATE_TENANT = read("create_tenant")

# ----------------------------------------------------------------------------- work queue
#
# Per job kind a stream ``s:<kind>`` with the consumer group ``workers`` and a sorted set
# ``z:<kind>`` of waiting jobs by due time (``u:<kind>`` for the urgent lane, see
# gateway/store/lanes.py); per job a hash ``j:<id>``: k kind, t tenant, r ref, d due (µs),
# a attempts, e last error, x stream entry id while leased, l lease end (µs), c claim time
# (µs), p '1' in the urgent lane (absent: normal, as every job of older versions).
# Times are on the CALLER's clock (the Protocol passes ``now``).
#
# Leases and XAUTOCLAIM: a pending entry's delivery time is set (XCLAIM ... TIME) to the
# claim time on the caller's clock minus a per-keyspace offset (``clock``; 0 for real
# clocks), so XAUTOCLAIM's "idle >= min-idle-time", measured on Redis's clock, becomes
# "lease ended on the caller's clock" with min-idle-time = lease + offset + (redis now - now).
# The lease end kept in the job hash has the last word, so a clock far off can make a
# claim later, never earlier.

QUEUE_COMMON = read("each_chunk") + read("queue_common")

# KEYS[1] the kinds set. ARGV: qp, then 8 per job: id tenant kind ref due_us attempts error
# urgent(1/0)
ADD_JOBS = QUEUE_COMMON + read("add_jobs")

# KEYS[1] the clock key. ARGV: qp now_ms now_us lease_ms limit consumer normal_reserved
# scan(1: look for ended leases, 0: not) kind... Returns 9 per job (id tenant kind ref due
# attempts error urgent entry), then the clamp warning flag.
CLAIM = QUEUE_COMMON + read("claim")

# KEYS[1] the kinds set. ARGV: qp, then 4 per job: id kind entry urgent (kind '': unknown,
# read from the job hash).
FINISH_JOBS = QUEUE_COMMON + read("finish_jobs")

# KEYS[1] the kinds set. ARGV: qp job_id due_us error give_back(1: attempts - 1, not below 0)
# lease (the caller's claim stamp, '' unknown). 1: done; 0: no such job; -1: the job was
# taken over since that claim (its lease ended): nothing done.
RETRY_JOB = QUEUE_COMMON + read("retry_job")

# KEYS[1] the kinds set. ARGV: qp now_us. Returns kind waiting oldest_due_us|'' per kind.
QUEUE_STATS = QUEUE_COMMON + read("queue_stats")

# KEYS[1] the kinds set. ARGV: qp consumer. Removes this consumer (if it holds nothing)
# and consumers that hold nothing and were idle a day (killed processes) from the groups.
FORGET_CONSUMERS = read("forget_consumers")


# KEYS[1] tenant anchor. ARGV: tp kind data_json at_us. The change's seq, or nil.
APPEND_CHANGE = tenant_script(
    r"""
return feed(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

_DEVICE_COMMON = read("device_common")

# KEYS[1] the devices version. ARGV: tp person device_id doc token(opt) fid(opt)
# A token or fid belongs to one device: another device holding it is removed.
UPSERT_DEVICE = tenant_script(_DEVICE_COMMON + read("upsert_device"))

# KEYS[1] the devices version. ARGV: tp person device_id
REMOVE_DEVICE = _DEVICE_COMMON + read("remove_device")
