"""LXD (and Incus) access, no pytest: connecting, typed REST wrappers, exec and files, proxy devices,
projects, readiness checks, and the ``lxc``/``incus`` command lines messages show (internal)."""
