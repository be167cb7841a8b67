"""Reset strategies and scopes on a declared service (see pyproject.toml)."""

import pytest

pytestmark = pytest.mark.lxd("web")  # strategy auto: a fresh clone per test on btrfs, in place on dir


def page(lxd) -> str:
    return lxd["web"].exec(["wget", "-qO-", "http://127.0.0.1:8080/"]).stdout


def test_the_service_is_up_before_the_test_starts(lxd):
    assert page(lxd) == "<h1>ready</h1>\n"


def test_break_the_service(lxd):
    lxd["web"].exec(["killall", "httpd"], check=True)
    lxd["web"].write_text("/var/www/index.html", "broken")
    assert page(lxd) == ""


def test_the_next_test_gets_it_back(lxd):
    assert page(lxd) == "<h1>ready</h1>\n"


@pytest.mark.lxd("web", strategy="readonly")
def test_only_looks(lxd):
    """readonly: no reset after this test, it promises to change nothing."""
    assert "httpd" in lxd["web"].exec(["ps"]).stdout


@pytest.mark.lxd("web", scope="class", strategy="inplace")
class TestAStoryInSteps:
    """scope="class": the steps share one state, restored in place after the class."""

    def test_step_one(self, lxd):
        lxd["web"].write_text("/var/www/step", "one")

    def test_step_two_sees_step_one(self, lxd):
        assert lxd["web"].read_text("/var/www/step") == "one"


def test_after_the_story_it_is_clean(lxd):
    assert not lxd["web"].exists("/var/www/step")
