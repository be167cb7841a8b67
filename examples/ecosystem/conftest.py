"""A hook: every declared container gets a marker file when it is provisioned (see the hooks reference)."""


def pytest_lxdsnap_provision(container, spec):
    container.write_text("/etc/provisioned-by", "pytest_lxdsnap_provision\n")
