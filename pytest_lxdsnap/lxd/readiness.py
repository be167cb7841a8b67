"""Readiness checks: wait until a container answers before a test (or the baseline snapshot) sees it."""

from __future__ import annotations

import importlib
import shlex
import time

import pylxd

from pytest_lxdsnap.declarations import ReadyCheck
from pytest_lxdsnap.errors import ExecTimeout, ReadinessError
from pytest_lxdsnap.lxd import ports
from pytest_lxdsnap.lxd.execution import ExecResult, exec_command


def wait_ready(client: pylxd.Client, instance: str, check: ReadyCheck, container: str) -> float:
    """Run ``check.command`` until it exits 0 (or the wait strategy until it passes); the seconds it
    took, or ReadinessError after the timeout."""
    if check.wait_strategy is not None:
        return _wait_strategy(client, instance, check, container)
    assert check.command is not None
    start = time.monotonic()
    deadline = start + check.timeout
    last: ExecResult | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            last = exec_command(client, instance, check.command, timeout=max(remaining, 1.0), keep_logs=True)
        except ExecTimeout:
            last = None
        if last is not None and last.exit_code == 0:
            return time.monotonic() - start
        if time.monotonic() + check.interval >= deadline:
            break
        time.sleep(check.interval)
    shown = check.command if isinstance(check.command, str) else shlex.join(check.command)
    detail = (f"last exit {last.exit_code}, stdout: {last.stdout[-500:]!r}, stderr: {last.stderr[-500:]!r}"
              if last is not None else "the last attempt timed out")
    raise ReadinessError(
        f"container {container!r} (instance {instance}) was not ready within {check.timeout:g} s: `{shown}` never "
        f"exited 0 ({detail}). Fix `ready` in [tool.lxdsnap.containers.{container}] or raise its timeout"
    )


def _wait_strategy(client: pylxd.Client, instance: str, check: ReadyCheck, container: str) -> float:
    from pytest_lxdsnap.handle import Container

    assert check.wait_strategy is not None
    module, _, attribute = check.wait_strategy.partition(":")
    where = f"[tool.lxdsnap.containers.{container}] ready.wait_strategy {check.wait_strategy!r}"
    try:
        strategy = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ReadinessError(f"{where}: cannot import it ({exc}); it must be importable from the test run") from None
    if not hasattr(strategy, "wait_until_ready") and callable(strategy):
        strategy = strategy()  # a factory: a fresh strategy per container
    if not hasattr(strategy, "wait_until_ready"):
        raise ReadinessError(f"{where}: expected a testcontainers wait strategy (or a callable returning one), "
                             f"got {type(strategy).__name__}")
    if hasattr(strategy, "with_startup_timeout"):
        strategy.with_startup_timeout(check.timeout)
    start = time.monotonic()
    try:
        strategy.wait_until_ready(Container(client, container, instance, disposable=True))
        ports.remove_all(client, instance)  # a port it exposed must not reach a snapshot or a test
    except Exception as exc:  # testcontainers raises TimeoutError and friends: one clear error
        raise ReadinessError(f"container {container!r} (instance {instance}) was not ready: "
                             f"{type(strategy).__name__} failed within {check.timeout:g} s: {exc}. Fix {where} or "
                             "raise its timeout") from exc
    return time.monotonic() - start
