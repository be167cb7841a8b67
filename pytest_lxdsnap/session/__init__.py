"""Orchestration, no pytest: one session's containers from first use to cleanup (internal).

:mod:`~pytest_lxdsnap.session.core` holds :class:`LxdSession`; the other modules are its jobs: checking
declarations against the server, launching, resetting, keeping failed states, cleanup, the heartbeat, clones,
reuse between runs, and strategy resolution. Nothing here is public API: use the ``lxd`` fixture.
"""
