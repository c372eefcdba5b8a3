"""Where the gateway's event loop spends its time, from ``budbringer bench --profile``.

    .venv/bin/budbringer bench --profile /tmp/gateway.txt
    .venv/bin/python -m scripts.profile_shares /tmp/gateway.txt

Reads py-spy's raw collapsed stacks (one stack and a count per line), keeps the main
thread, and gives each sample to the innermost frame that belongs to a known group
(jinja2 called from the renderer counts as rendering; pydantic called from the store
counts as pydantic). Shares are of all main-thread samples, idle (``select``) included;
on uvloop idle and the loop's own work are one row (see ``UVLOOP``).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# Group -> substrings of a frame's "function (file:line)"; first match wins per frame.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle (select)", ("EpollSelector.select",)),
    (
        "render (render.py, jinja2, babel, markupsafe, gsm)",
        ("gateway/render.py", "jinja2", "babel", "markupsafe", "channels/gsm.py", "templates/"),
    ),
    ("read links (readlinks, cryptography)", ("readlinks.py", "cryptography")),
    ("email building (channels/email.py, email)", ("channels/email.py", "email/")),
    ("aiosmtplib", ("aiosmtplib", "channels/smtp_transaction.py")),
    ("push and SMS HTTP client (channels/http1.py)", ("channels/http1.py",)),
    ("push channel (push.py, firebase_admin)", ("channels/push.py", "firebase_admin")),
    ("SMS channel (sms.py, twilio_form, twilio)", ("channels/sms.py", "twilio_form.py", "twilio/")),
    ("planner, resolver", ("gateway/planner.py", "gateway/resolver.py", "gateway/protection.py")),
    ("store (gateway/store, aiosqlite, sqlite3)", ("gateway/store", "aiosqlite", "sqlite3")),
    ("pydantic", ("pydantic",)),
    ("logging", ("logging/", "gateway/logs.py")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("json", ("json/",)),
    ("aiohttp (client and server), yarl, multidict", ("aiohttp", "yarl", "multidict")),
    (
        "dispatcher, outcomes, gates",
        (
            "gateway/dispatcher.py",
            "gateway/outcomes.py",
            "gateway/channel_gate.py",
            "gateway/channel_health.py",
        ),
    ),
    ("asyncio loop, sockets", ("asyncio/", "selectors.py", "socket.py")),
)


# On uvloop the loop runs in C: py-spy (without --native) sees no Python frame above
# asyncio.Runner.run while the loop waits or does its own work, so the two share a row.
UVLOOP = "uvloop: idle or the loop's own work (C, not told apart)"


def group_of(frames: list[str]) -> str:
    if frames and "asyncio/runners.py" in frames[-1]:
        return UVLOOP
    for frame in reversed(frames):
        for name, patterns in GROUPS:
            if any(pattern in frame for pattern in patterns):
                return name
    return "other"


def shares(path: Path) -> tuple[int, Counter[str]]:
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or "MainThread" not in frames[0]:
            continue
        total += int(number)
        counts[group_of(frames[1:])] += int(number)
    return total, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy raw output of bench --profile")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    total, counts = shares(args.profile)
    print(f"{total} main-thread samples")
    for name, count in counts.most_common(args.top):
        print(f"{count / total * 100:5.1f} %  {name}")


if __name__ == "__main__":
    main()
