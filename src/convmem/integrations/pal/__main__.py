"""``python -m convmem.integrations.pal``: the same as ``convmem pal``."""

from convmem.cli import main

if __name__ == "__main__":
    main(["pal"])
