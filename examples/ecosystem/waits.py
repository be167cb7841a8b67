"""Readiness for the web container: any testcontainers wait strategy works on an LXD container."""

from testcontainers.core.wait_strategies import HttpWaitStrategy


def http_ready() -> HttpWaitStrategy:
    return HttpWaitStrategy(8080).for_status_code(200)
