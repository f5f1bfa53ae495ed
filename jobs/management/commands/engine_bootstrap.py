"""`manage.py engine_bootstrap`: create the sweep Schedule and start the sweep chain.

Idempotent; run it after `migrate` (``make run`` does). Workers keep the chain alive afterwards.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from jobs.engine.sweep import engine_bootstrap


class Command(BaseCommand):
    help = "Create the engine's sweep schedule and start the sweep (idempotent)"

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(engine_bootstrap(), sort_keys=True))
