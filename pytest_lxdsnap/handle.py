"""The object a test gets from ``lxd["web"]``: exec, files, status, and the pylxd instance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property

import pylxd
from pylxd.models import Instance

from pytest_lxdsnap.errors import UndeclaredContainer
from pytest_lxdsnap.lxd import execution, ports
from pytest_lxdsnap.lxd.execution import ExecResult
from pytest_lxdsnap.lxd.lxdapi import quiet_pylxd, status


class Container:
    """A container a test declared in its ``lxd`` marker.

    ``name`` is the name the test used; ``instance_name`` the LXD instance behind it (the same for
    an existing container, ``lxdsnap-<name>-<session>`` for a declared one).
    """

    def __init__(self, client: pylxd.Client, name: str, instance_name: str, *, disposable: bool = False) -> None:
        self._client = client
        self.name = name
        self.instance_name = instance_name
        self._disposable = disposable  # the plugin deletes the instance (and its exec logs) itself
        self._users: dict[str, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"<lxdsnap.Container {self.name!r} instance={self.instance_name!r}>"

    @property
    def status(self) -> str:
        """LXD's status of the instance now: ``"Running"``, ``"Stopped"`` ..."""
        return status(self._client, self.instance_name)

    @cached_property
    def instance(self) -> Instance:
        """The pylxd ``Instance`` for power users (its ``execute`` is slow: prefer :meth:`exec`)."""
        with quiet_pylxd():
            return self._client.instances.get(self.instance_name)

    @property
    def client(self) -> pylxd.Client:
        """The pylxd client the plugin uses."""
        return self._client

    def exec(
        self,
        cmd: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: int | str | None = None,
        stdin: bytes | str | None = None,
        check: bool = False,
        timeout: float | None = None,
        max_output: int | None = None,
    ) -> ExecResult:
        """Run ``cmd`` (argv list; a plain string runs with ``sh -c``) and return its result.

        A non-zero exit is returned, not raised, unless ``check=True``. ``user`` is a uid or a user name.
        A command that outlives ``timeout`` seconds, or whose stdout or stderr passes ``max_output`` bytes
        (default :data:`pytest_lxdsnap.lxd.execution.MAX_OUTPUT`, 64 MiB), is killed and raises ExecTimeout
        or ExecOutputTooLarge.
        """
        __tracebackhide__ = True
        uid = gid = None
        if isinstance(user, str):
            uid, gid = self._resolve_user(user)
        elif user is not None:
            uid = gid = int(user)
        return execution.exec_command(self._client, self.instance_name, cmd, env=env, cwd=cwd, user=uid,
                                      group=gid, stdin=stdin, check=check, timeout=timeout,
                                      keep_logs=self._disposable, max_output=max_output)

    def _resolve_user(self, user: str) -> tuple[int, int]:
        if user in self._users:
            return self._users[user]
        ids = execution.exec_command(self._client, self.instance_name, ["sh", "-c", 'id -u "$0" && id -g "$0"', user])
        if ids.exit_code != 0:
            raise ValueError(f"user {user!r} does not exist in {self.instance_name}: {ids.stderr.strip()}")
        uid, gid = ids.stdout.split()
        self._users[user] = (int(uid), int(gid))
        return self._users[user]

    def read_bytes(self, path: str) -> bytes:
        return execution.read_file(self._client, self.instance_name, path)

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read_bytes(path).decode(encoding)

    def write_bytes(self, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        execution.write_file(self._client, self.instance_name, path, data, mode=mode, uid=uid, gid=gid)

    def write_text(self, path: str, text: str, *, encoding: str = "utf-8", mode: int = 0o644, uid: int = 0,
                   gid: int = 0) -> None:
        self.write_bytes(path, text.encode(encoding), mode=mode, uid=uid, gid=gid)

    def exists(self, path: str) -> bool:
        """True when ``path`` (a file or a directory) exists in the container."""
        return execution.path_exists(self._client, self.instance_name, path)

    # -- testcontainers' WaitStrategyTarget: any of its wait strategies works on this container -------
    def get_container_host_ip(self) -> str:
        """Where :meth:`get_exposed_port` listens: the host's loopback (LXD proxy devices, no bridge)."""
        return ports.HOST

    def get_exposed_port(self, port: int) -> int:
        """The host port that reaches ``port`` on the container's loopback, through an LXD proxy device
        added on first use (the reset removes it with everything else the test changed)."""
        return ports.expose(self._client, self.instance_name, self.name, int(port))

    def get_wrapped_container(self) -> ports.WrappedInstance:
        """A docker-like view (``status``, ``attrs``, ``reload()``) for testcontainers' wait strategies."""
        return ports.WrappedInstance(self._client, self.instance_name)

    def get_logs(self) -> tuple[bytes, bytes]:
        """The container's console log (its init's output), as (stdout, stderr)."""
        return ports.console_log(self._client, self.instance_name), b""

    def reload(self) -> None:
        """Nothing to refresh: every call asks LXD afresh."""


class Containers(Mapping[str, Container]):
    """What the ``lxd`` fixture returns: ``lxd["web"]`` is the container the marker declared as "web"."""

    def __init__(self, nodeid: str, containers: dict[str, Container]) -> None:
        self._nodeid = nodeid
        self._containers = containers

    def __getitem__(self, name: str) -> Container:
        __tracebackhide__ = True
        try:
            return self._containers[name]
        except KeyError:
            declared = ", ".join(f'"{n}"' for n in self._containers)
            wanted = ", ".join(f'"{n}"' for n in [*self._containers, name])
            raise UndeclaredContainer(
                f"container {name!r} is not declared for {self._nodeid} (declared: {declared}); "
                f"add it to the marker: @pytest.mark.lxd({wanted})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._containers)

    def __len__(self) -> int:
        return len(self._containers)
