"""Ansible against the test's containers (no pytest here): the inventory, ``ansible-playbook`` runs and their
results, and the content a converged build is keyed by. ``connection/`` and ``callback/`` are Ansible plugins
(loaded by Ansible from these folders, see :func:`pytest_lxdsnap.ansible.runner.ansible_env`)."""
