"""The realism suite now lives in the package: `hrtemnet evaluate --condition experiments/realism/conditions ...`
(condition files in `conditions/`, docs/realism.md). This wrapper keeps the old command line working; without
--condition it runs every condition of that folder:

    python experiments/realism/conditions.py --model msd --model unet --n 4 --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from hrtemnet.cli import app

CONDITIONS = Path(__file__).resolve().with_name("conditions")

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--condition" not in arguments:
        arguments = ["--condition", str(CONDITIONS), *arguments]
    app(["evaluate", *arguments], prog_name="hrtemnet")
