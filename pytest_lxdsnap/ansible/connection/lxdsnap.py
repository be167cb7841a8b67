"""Ansible connection plugin ``lxdsnap``: runs tasks in an LXD or Incus container through pytest-lxdsnap's REST
exec and file API, over the same endpoint, TLS, pin and project as the plugin (no ``lxc`` CLI, no SSH).

Ansible loads this file from the folder :func:`pytest_lxdsnap.ansible.runner.ansible_env` puts on
``ANSIBLE_CONNECTION_PLUGINS``; the host variables come from :mod:`pytest_lxdsnap.ansible.inventory`.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleConnectionFailure, AnsibleFileNotFound
from ansible.plugins.connection import ConnectionBase

from pytest_lxdsnap.errors import ExecError, LxdSnapError
from pytest_lxdsnap.lxd import execution
from pytest_lxdsnap.lxd.connection import Endpoint, connect

DOCUMENTATION = """
    name: lxdsnap
    short_description: run tasks in LXD/Incus containers through pytest-lxdsnap's REST exec
    description:
        - Runs commands and moves files through the LXD (or Incus) REST API, as pytest-lxdsnap does itself.
    author: pytest-lxdsnap
    options:
        instance:
            description: The LXD instance to run in.
            required: true
            vars:
                - name: lxdsnap_instance
        endpoint:
            description: A unix socket path or an https:// URL.
            vars:
                - name: lxdsnap_endpoint
        project:
            description: The LXD project of the instance.
            vars:
                - name: lxdsnap_project
        cert:
            description: Client certificate (PEM) for an https endpoint.
            vars:
                - name: lxdsnap_cert
        key:
            description: Its private key.
            vars:
                - name: lxdsnap_key
        server_cert:
            description: The server certificate to pin.
            vars:
                - name: lxdsnap_server_cert
        fingerprint:
            description: SHA-256 of the server certificate trusted on first use (--lxd-insecure).
            vars:
                - name: lxdsnap_fingerprint
        timeout:
            description: Seconds for each request to the daemon.
            type: float
            default: 30
            vars:
                - name: lxdsnap_timeout
        disposable:
            description: The instance is deleted by pytest-lxdsnap, exec logs with it.
            type: bool
            default: false
            vars:
                - name: lxdsnap_disposable
    extends_documentation_fragment:
        - connection_pipelining
"""


class Connection(ConnectionBase):  # type: ignore[misc]  # ansible-core ships no type information
    """Commands as REST execs (stdin through a file for pipelining), files by the REST file API, as root."""

    transport = "lxdsnap"
    has_pipelining = True
    has_tty = False
    default_user = "root"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Any = None

    def _endpoint(self) -> Endpoint:
        url = self.get_option("endpoint") or None
        fingerprint = self.get_option("fingerprint") or None
        return Endpoint(url=url, project=self.get_option("project") or None, timeout=float(self.get_option("timeout")),
                        cert=self.get_option("cert") or None, key=self.get_option("key") or None,
                        server_cert=self.get_option("server_cert") or None, insecure=fingerprint is not None,
                        fingerprint=fingerprint)

    @property
    def _instance(self) -> str:
        return str(self.get_option("instance"))

    def _connect(self) -> Connection:
        if self._client is None:
            try:
                self._client = connect(self._endpoint())
            except LxdSnapError as exc:
                raise AnsibleConnectionFailure(f"lxdsnap: {exc}") from None
            self._connected = True
        return self

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        try:
            result = execution.exec_command(self._client, self._instance, ["/bin/sh", "-c", cmd], stdin=in_data,
                                            keep_logs=bool(self.get_option("disposable")))
        except ExecError as exc:  # LXD refused (a stopped instance) or stopped answering
            raise AnsibleConnectionFailure(f"lxdsnap: {exc}") from None
        return result.exit_code, result.stdout_bytes, result.stderr_bytes

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        self._connect()
        if not os.path.exists(in_path):
            raise AnsibleFileNotFound(f"lxdsnap: file to copy {in_path} does not exist")
        with open(in_path, "rb") as fh:
            data = fh.read()
        try:
            execution.write_file(self._client, self._instance, out_path, data, mode=os.stat(in_path).st_mode & 0o777)
        except OSError as exc:
            raise AnsibleConnectionFailure(f"lxdsnap: {exc}") from None

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        self._connect()
        try:
            data = execution.read_file(self._client, self._instance, in_path)
        except FileNotFoundError as exc:
            raise AnsibleFileNotFound(f"lxdsnap: {exc}") from None
        except OSError as exc:
            raise AnsibleConnectionFailure(f"lxdsnap: {exc}") from None
        with open(out_path, "wb") as fh:
            fh.write(data)

    def close(self) -> None:
        if self._client is not None:
            self._client.api.session.close()
        self._client = None
        self._connected = False
