"""``python -m convmem.integrations.pal``: the same as ``convmem pal`` (without its
``--store``/``--cache`` options: the settings come from the environment)."""

import sys

from convmem.errors import ConvMemError
from convmem.integrations.pal.run import run_pal
from convmem.settings import Settings

if __name__ == "__main__":
    try:
        run_pal(Settings.load())
    except ConvMemError as exc:  # as the CLI says it: one line, no traceback
        sys.exit(f"error: {exc}")
