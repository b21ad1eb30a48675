"""The chaos suite: faults under load, measured (``make chaos``; a short run in ``make test``)."""
