"""The object a test gets from ``lxd["web"]``: exec, files, status, the pylxd instance, a testinfra host; and
``lxd`` itself, which runs Ansible plays against the test's containers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pylxd
from pylxd.models import Instance

from pytest_lxdsnap.errors import MissingExtra, UndeclaredContainer
from pytest_lxdsnap.lxd import execution, ports
from pytest_lxdsnap.lxd.connection import Endpoint, pinned_fingerprint
from pytest_lxdsnap.lxd.execution import ExecResult
from pytest_lxdsnap.lxd.lxdapi import quiet_pylxd, status

if TYPE_CHECKING:
    from testinfra.host import Host

    from pytest_lxdsnap.ansible.inventory import Target
    from pytest_lxdsnap.ansible.runner import PlaybookResult


class Container:
    """A container a test declared in its ``lxd`` marker.

    ``name`` is the name the test used; ``instance_name`` the LXD instance behind it (the same for
    an existing container, ``lxdsnap-<name>-<session>`` for a declared one).
    """

    def __init__(self, client: pylxd.Client, name: str, instance_name: str, *, disposable: bool = False,
                 endpoint: Endpoint | None = None) -> None:
        self._client = client
        self.name = name
        self.instance_name = instance_name
        self._disposable = disposable  # the plugin deletes the instance (and its exec logs) itself
        self._endpoint = endpoint or Endpoint()  # where the client connects: Ansible reaches the container the same way
        self._users: dict[str, tuple[int, int]] = {}
        self.test: str | None = None  # the test's node id, for messages (set by Containers)

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

    @cached_property
    def host(self) -> Host:
        """A pytest-testinfra ``Host`` for this container (``lxd["web"].host.service("nginx").is_running``): its
        commands go through the plugin's REST exec, as :meth:`exec`'s do. Needs ``pytest-lxdsnap[testinfra]``."""
        __tracebackhide__ = True
        try:
            from pytest_lxdsnap.lxd.testinfra_backend import make_host
        except MissingExtra as exc:
            raise MissingExtra(f"{self.test or 'this test'}: lxd[{self.name!r}].host: {exc}") from None
        return make_host(self.name, lambda argv: self.exec(argv))

    def target(self) -> Target:
        """How Ansible reaches this container (the inventory's host variables)."""
        from pytest_lxdsnap.ansible.inventory import Target

        return Target(self.name, self.instance_name, self._endpoint, project=getattr(self._client, "project", None),
                      fingerprint=pinned_fingerprint(self._client), disposable=self._disposable)

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
    """What the ``lxd`` fixture returns: ``lxd["web"]`` is the container the marker declared as "web"; and the
    test's Ansible: :meth:`playbook`, :meth:`idempotent`, :meth:`inventory`."""

    def __init__(self, nodeid: str, containers: dict[str, Container], *, root: Path | None = None) -> None:
        self._nodeid = nodeid
        self._containers = containers
        self._root = root or Path.cwd()  # relative playbook paths start here (the project's root)
        self._workdir: Path | None = None
        for container in containers.values():
            container.test = nodeid

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

    # -- Ansible ---------------------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self._nodeid} (containers {', '.join(repr(n) for n in self._containers)})"

    def _files(self) -> Path:
        """This test's folder for the inventory and Ansible's local files; removed by :meth:`close`."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="lxdsnap-ansible-"))
        return self._workdir

    def inventory(self) -> Path:
        """The Ansible inventory of this test's containers (hosts named as in the marker, all in group ``lxdsnap``,
        reached through the ``lxdsnap`` connection plugin), for running Ansible yourself with the environment of
        :meth:`ansible_env`. The file lives until the test ends."""
        from pytest_lxdsnap.ansible.inventory import write_inventory

        return write_inventory([c.target() for c in self._containers.values()], self._files() / "inventory.yml")

    def ansible_env(self) -> dict[str, str]:
        """Environment variables for an Ansible you run yourself on :meth:`inventory` (the plugin folders):
        ``subprocess.run([...], env={**os.environ, **lxd.ansible_env()})``."""
        from pytest_lxdsnap.ansible.runner import ansible_env

        return ansible_env()

    def playbook(self, playbook: str | Path, *, extra_vars: Mapping[str, Any] | None = None,
                 limit: str | Sequence[str] | None = None, check: bool = False) -> PlaybookResult:
        """Run ``ansible-playbook`` against this test's containers (``playbook`` relative to the project's root);
        its result, with ``ok``/``changed``/``failed`` per container. A play that fails raises PlaybookError with
        Ansible's output. ``check=True`` is Ansible's check mode (``--check``)."""
        __tracebackhide__ = True
        from pytest_lxdsnap.ansible.runner import require_ansible, run_playbook

        require_ansible(f"{self._where()}: lxd.playbook")
        return run_playbook(self._root / playbook, self.inventory(), self._files(), where=self._where(),
                            instances={n: c.instance_name for n, c in self._containers.items()},
                            extra_vars=extra_vars, limit=limit, check=check)

    def idempotent(self, playbook: str | Path, *, extra_vars: Mapping[str, Any] | None = None,
                   limit: str | Sequence[str] | None = None, check: bool = False) -> PlaybookResult:
        """Run the play again (on containers it converged already) and raise NotIdempotent, naming each task that
        changed, unless nothing changed: Molecule's idempotence check."""
        __tracebackhide__ = True
        from pytest_lxdsnap.ansible.runner import check_idempotent

        result = self.playbook(playbook, extra_vars=extra_vars, limit=limit, check=check)
        return check_idempotent(result, self._where())

    def close(self) -> None:
        """Remove this test's Ansible files (the plugin calls it when the test ends)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
