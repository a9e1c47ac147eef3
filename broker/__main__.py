"""``python -m broker`` and the ``dns01-broker`` script."""

from __future__ import annotations

import contextlib

from broker.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
