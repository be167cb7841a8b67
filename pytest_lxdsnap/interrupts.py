"""Ctrl-C, SIGTERM and SIGHUP during a run: reset and clean up on the first, exit with the commands on the second."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imports pylxd, which a suite without marked tests never loads
    from pytest_lxdsnap.session.core import LxdSession


class InterruptGuard:
    """Ctrl-C, SIGTERM (a cancelled CI job) and SIGHUP (a dropped SSH session) all stop the run the same way:
    the plugin still resets and cleans up, and pytest exits non-zero. A second signal, however soon it comes,
    exits at once with the exact commands that finish the job. Handlers the user installed stay theirs."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, config: pytest.Config, session: Callable[[], LxdSession | None]) -> None:
        self.config = config
        self.session = session  # the run's LxdSession once it has one: the second signal names what to finish
        self.cleaning = False  # the session's cleanup runs: a first signal no longer interrupts it
        self.received = ""
        self.previous: dict[int, Any] = {}
        for signum in self.SIGNALS:
            if signal.getsignal(signum) not in (signal.SIG_DFL, signal.default_int_handler):
                continue
            try:
                self.previous[signum] = signal.signal(signum, self._first)
            except ValueError:  # not the main thread: leave signals to whoever runs us
                break

    def pytest_unconfigure(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _first(self, signum: int, frame: object) -> None:
        for other in self.previous:
            signal.signal(other, self._second)
        self.received = signal.Signals(signum).name
        if self.cleaning:  # cleaning up already: let it finish unless asked again
            self._say_now(f"\nlxdsnap: {self.received}: cleaning up; send it again to stop at once\n")
            return
        raise KeyboardInterrupt(self.received)

    def pytest_keyboard_interrupt(self) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.received not in ("", "SIGINT"):
            reporter.write_line(f"lxdsnap: {self.received}: stopping; resetting the containers and cleaning up "
                                "(send it again to stop at once)")

    def _second(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP and self.received == "SIGHUP":
            return  # a lost terminal often sends two (the kernel's, and the shell's): one is not a second ask
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        lxd = self.session()
        lines = ["", f"lxdsnap: second {what}: cleanup stopped. To finish it, run:", "  lxdsnap gc"]
        if lxd is not None:
            lines.append("(it restores these from their baselines and deletes this session's clones; by hand:")
            cmd = lxd.commands
            lines += [f"  {cmd.restore(t.instance, t.snapshot)} && {cmd.delete_snapshot(t.instance, t.snapshot)}"
                      for t in list(lxd.tracked.values()) if not t.declared]
            lines += [f"  {cmd(f'delete --force {t.instance}')}" for t in list(lxd.tracked.values())
                      if t.declared and (t.shared is None or t.instance != t.shared.instance)]  # not one others use
            lines.append(")")
        self._say_now("\n".join(lines) + "\n")
        os._exit(pytest.ExitCode.INTERRUPTED)

    def _say_now(self, text: str) -> None:
        """Write to the terminal from a signal handler, even while a test's output is captured."""
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        try:
            if capture is not None:
                capture.suspend_global_capture(in_=False)
        except Exception:  # noqa: BLE001 - capture half torn down: write anyway
            pass
        _say(text)


def _say(text: str) -> None:
    """Write to stderr from a signal handler (the terminal may be gone: SIGHUP)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
