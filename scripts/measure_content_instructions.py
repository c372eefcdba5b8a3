"""A fixed content workload to count instructions of, under callgrind.

    valgrind --tool=callgrind python -m scripts.measure_content_instructions 0
    valgrind --tool=callgrind python -m scripts.measure_content_instructions 1000

Renders 600 deliveries per channel (email, SMS, push: the families and languages of
``scripts/measure_content_calls.py``) and builds each channel's content, to warm every
family's stencils and names, then N more per channel. The difference of the two runs'
instruction counts divided by 3 N is the cost per delivery. The service account made for
the push channel costs an RSA key generation whose instruction count varies a lot:
subtract ``generate_private_key``'s inclusive count (``callgrind_annotate --inclusive=yes``)
from each run. Run it from two checkouts to compare them (docs/performance.md).
"""

from __future__ import annotations

import random
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from gateway.readlinks import read_link_maker
from gateway.render import Renderer
from scripts.measure_content_calls import MESSAGE, _channel_step
from scripts.measure_send_cpu import NAMES, TEMPLATES, URL, delivery

WARM = 600


def main() -> None:
    more = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    renderer = Renderer(
        TEMPLATES, URL, link_for=read_link_maker(b"s" * 32, URL, timedelta(days=30))
    )
    rng = random.Random(2)
    families = [rng.sample(NAMES, rng.choice([1, 1, 2, 3])) for _ in range(WARM)]
    languages = [rng.choice(["nb"] * 8 + ["en", "ar"]) for _ in range(WARM)]
    with tempfile.TemporaryDirectory() as tmp:
        for channel in ("email", "sms", "push"):
            step = _channel_step(channel, Path(tmp))
            for n in range(WARM + more):
                address = f"fcm-{n}" if channel == "push" else f"f{n}@example.no"
                one = delivery(n, channel, languages[n % WARM], families[n % WARM])
                one = one.model_copy(update={"address": address})
                step(one, renderer.render(MESSAGE, one))


if __name__ == "__main__":
    main()
