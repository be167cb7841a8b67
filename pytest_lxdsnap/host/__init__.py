"""The host and the ``lxdsnap`` command: setup (daemons, pools, images, apt sources) and its undo, doctor,
gc, and the lxcfs stop hook (internal; the CLI is the public interface)."""
