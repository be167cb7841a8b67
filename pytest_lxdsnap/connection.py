"""Connecting to the LXD daemon, with one clear message when it cannot be reached."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pylxd

DEFAULT_TIMEOUT = 120.0


def default_socket() -> str:
    """The local socket pylxd would use: $LXD_DIR, the snap's socket, then Debian's."""
    if os.environ.get("LXD_DIR"):
        return os.path.join(os.environ["LXD_DIR"], "unix.socket")
    snap = "/var/snap/lxd/common/lxd/unix.socket"
    return snap if os.path.exists(snap) else "/var/lib/lxd/unix.socket"


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach LXD."""

    url: str | None = None
    project: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def describe(self) -> str:
        where = self.url or default_socket()
        kind = "HTTPS endpoint" if where.startswith("https://") else "unix socket"
        project = f" (project {self.project!r})" if self.project else ""
        return f"{kind} {where}{project}"


def unreachable_message(endpoint: Endpoint, reason: object) -> str:
    where = endpoint.describe()
    return (
        f"LXD is not reachable at {where}: {reason}.\n"
        "Start it, or install and start it with `lxdsnap setup` (as root), then check with `lxdsnap doctor`.\n"
        "Without systemd: `setsid lxd --group root --logfile /var/log/lxd.log </dev/null >/dev/null 2>&1 &` "
        "then `lxd waitready`. Point the plugin elsewhere with --lxd-endpoint."
    )


def connect(endpoint: Endpoint) -> pylxd.Client:
    """A pylxd client for ``endpoint``; raises LxdUnreachable with the fix when that fails."""
    import pylxd  # imported here: a suite without LXD tests never pays for it
    from pylxd.exceptions import ClientConnectionFailed, LXDAPIException

    from .errors import ConfigError, LxdUnreachable

    url = endpoint.url
    if url and not url.startswith(("https://", "/")):
        raise ConfigError(f"--lxd-endpoint {url!r}: give a unix socket path (/...) or an https:// URL")
    if url and url.startswith("/") and not os.path.exists(url):
        raise LxdUnreachable(unreachable_message(endpoint, "the socket file does not exist"))
    if not url and not os.path.exists(default_socket()):
        raise LxdUnreachable(unreachable_message(endpoint, "the socket file does not exist"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pylxd warns about server fields it does not know
            client = pylxd.Client(endpoint=url, project=endpoint.project, timeout=endpoint.timeout)
    except ClientConnectionFailed as exc:
        raise LxdUnreachable(unreachable_message(endpoint, exc)) from None
    except LXDAPIException as exc:
        raise LxdUnreachable(unreachable_message(endpoint, exc)) from None
    if endpoint.project:
        try:
            client.api.projects[endpoint.project].get()
        except LXDAPIException:
            names = sorted(p.name for p in client.projects.all())
            raise ConfigError(
                f"LXD project {endpoint.project!r} does not exist at {endpoint.describe()}; "
                f"existing projects: {', '.join(names)}. Create it with `lxc project create {endpoint.project}` "
                "or fix --lxd-project."
            ) from None
    return client
