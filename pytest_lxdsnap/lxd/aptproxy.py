"""The instance side of the host's package cache (``package_cache = true``): a proxy device listening on
127.0.0.1:3142 inside the container that connects to the cache on the LXD host, and apt's proxy setting.

The device binds in the instance (``bind=instance``): each container and each clone has its own listener in its
own network namespace and none takes a host port. It is part of the instance from its creation, so clones copy
it; the apt setting is written after the start and before the provision commands, so they and every test
install real packages through the cache.
"""

from __future__ import annotations

import pylxd

from pytest_lxdsnap.errors import ProvisionError
from pytest_lxdsnap.lxd.execution import path_exists, write_file

DEVICE = "lxdsnap-package-cache"
LISTEN = "127.0.0.1:3142"
APT_CONF_DIR = "/etc/apt/apt.conf.d"
APT_CONF = f"{APT_CONF_DIR}/01lxdsnap-package-cache"
APT_SETTING = f'// Written by pytest-lxdsnap (package_cache): apt fetches through the host\'s package cache.\n' \
              f'Acquire::http::Proxy "http://{LISTEN}";\n'


def device(address: str) -> dict[str, str]:
    """The proxy device: ``LISTEN`` in the container, connecting to ``address`` ("host:port") on the LXD host."""
    return {"type": "proxy", "listen": f"tcp:{LISTEN}", "connect": f"tcp:{address}", "bind": "instance"}


def configure_apt(client: pylxd.Client, instance: str, container: str, where: str) -> None:
    """Point apt in the running ``instance`` at the proxy device; ProvisionError when the image has no apt."""
    if not path_exists(client, instance, APT_CONF_DIR):
        raise ProvisionError(f"package_cache in {where}: container {container!r} (instance {instance}) has no "
                             f"{APT_CONF_DIR}, so its image has no apt to use the package cache. Use a Debian or "
                             "Ubuntu image, or remove package_cache")
    write_file(client, instance, APT_CONF, APT_SETTING.encode())
