"""The benchmark of convmem (``make bench``): a project of the repository, not of the wheel.

It measures convmem against the seed's flows, its peers and the raw drivers, side by
side on the same PostgreSQL and Redis. Its proxies, PgBouncer launcher and PostgREST
stand-in are shared with the test suite (``tests/``), which imports them from here.
"""
