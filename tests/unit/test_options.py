"""The options table (pytest_lxdsnap.options): every row is a command-line option with an ini twin, booleans have
a --no- switch, defaults show in --help, bad values are usage errors naming the option, the command line beats the
ini file, and the report header shows the effective settings. In-process pytest runs; no daemon."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from pytest_lxdsnap import options as options_module
from pytest_lxdsnap import plugin
from pytest_lxdsnap.errors import ConfigError
from pytest_lxdsnap.options import BY_NAME, OPTIONS, Option, Options

from ..helpers import PYPROJECT

ROWS = [pytest.param(option, id=option.name) for option in OPTIONS]
BOOLEANS = [pytest.param(option, id=option.name) for option in OPTIONS if option.type == "bool"]

# One good value other than the default, and one bad value, per type (text and path take anything).
GOOD = {"seconds": "7.5", "count": "5", "bool": "true", "text": "something", "path": "/some/where"}
BAD = {"seconds": "soon", "count": "-1", "choice": "fastest", "bool": "maybe"}


def good(option: Option) -> str:
    if option.type == "choice":
        assert option.choices is not None
        return next(c for c in option.choices if c != option.default)
    if option.type == "bool":
        return "false" if option.default else "true"
    return GOOD[option.type]


def entries(text: str, start: str) -> dict[str, str]:
    """The entries of one --help section (``start`` begins its title line), whitespace collapsed: by the first
    word of each entry (a flag, or an ini key)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    found: dict[str, str] = {}
    key = ""
    for line in lines[first + 1:]:
        if line and not line.startswith(" "):
            break  # the next section
        stripped = line.strip()
        if re.match(r"^ {2}\S", line):  # an entry starts two spaces in; its help may wrap onto deeper lines
            key = re.split(r"[ ,=]", stripped, maxsplit=1)[0]
            found[key] = stripped
        elif key and stripped:
            found[key] += " " + stripped
    return found


@pytest.fixture
def help_text(pytester: pytest.Pytester) -> str:
    result = pytester.runpytest_inprocess("--help")
    assert result.ret == 0, result.stderr.str()
    return result.stdout.str()


# -- the table itself ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ROWS)
def test_every_row_is_a_flag_with_an_ini_twin(option):
    assert option.name.startswith("lxd_") and option.name.islower()
    assert option.flag == "--" + option.name.replace("_", "-")
    assert option.ini, f"{option.name} has no ini key"
    assert option.type in ("text", "path", "seconds", "count", "choice", "bool")
    assert (option.choices is not None) == (option.type == "choice")
    assert option.help and option.help[0].isupper() and not option.help.endswith("."), option.help
    assert option.parse(None) == option.default and option.parse("") == option.default  # unset: the default
    if option.type == "bool":
        assert option.off_flag == "--no-" + option.flag[2:]
    if option.default is not None:
        assert option.parse(str(option.default).lower()) == option.default  # the default is a valid value


def test_the_options_dataclass_and_the_table_match():
    fields = dataclasses.fields(Options)
    assert [f.name for f in fields] == [o.name for o in OPTIONS]  # same names, same order
    hints = typing.get_type_hints(Options, vars(options_module))
    expected = {"text": str | None, "path": str | None, "seconds": float, "count": int, "choice": str, "bool": bool}
    for f in fields:
        row = BY_NAME[f.name]
        assert f.default == row.default, f"{f.name}: the dataclass says {f.default!r}, the table {row.default!r}"
        assert hints[f.name] == expected[row.type], f"{f.name}: {hints[f.name]} for a {row.type} option"
    assert Options() == Options.parse({})


def test_options_parse_names_the_first_bad_value_and_refuses_unknown_keys():
    with pytest.raises(ConfigError, match=r"^lxd_timeout \(--lxd-timeout\): expected a positive number of seconds, "
                                          r"got '0'$"):
        Options.parse({"lxd_timeout": "0", "lxd_strategy": "fastest"})
    with pytest.raises(ConfigError, match=r"^unknown lxdsnap option 'lxd_speed'; valid options: lxd_endpoint, "):
        Options.parse({"lxd_speed": "1"})


@pytest.mark.parametrize(("option", "raw", "expected"), [
    ("lxd_timeout", "2", 2.0), ("lxd_timeout", " 0.5", 0.5), ("lxd_prepare_ahead", "0", 0),
    ("lxd_max_clones", "1", 1), ("lxd_reuse", "on", True), ("lxd_reuse", "No", False), ("lxd_reuse", True, True),
    ("lxd_strategy", "clone", "clone"), ("lxd_endpoint", "https://x:8443", "https://x:8443"),
])
def test_values_are_typed(option, raw, expected):
    assert BY_NAME[option].parse(raw) == expected


@pytest.mark.parametrize(("option", "raw", "what"), [
    ("lxd_timeout", "0", "a positive number of seconds"), ("lxd_timeout", "-3", "a positive number of seconds"),
    ("lxd_timeout", "inf", "a positive number of seconds"), ("lxd_lease_wait", "nan", "a positive number of seconds"),
    ("lxd_prepare_ahead", "1.5", "a whole number of at least 0"),
    ("lxd_prepare_ahead", "-1", "a whole number of at least 0"),
    ("lxd_max_clones", "0", "a whole number of at least 1"), ("lxd_reuse", "maybe", "true or false"),
])
def test_bad_values_name_the_option_and_what_it_takes(option, raw, what):
    row = BY_NAME[option]
    with pytest.raises(ConfigError, match=re.escape(f"{option} ({row.flag}): expected {what}")):
        row.parse(raw)


def test_an_unknown_choice_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"lxd_strategy \(--lxd-strategy\): unknown value 'fastest'; valid values: "
                                          r"auto, inplace, recipe, clone, readonly$"):
        BY_NAME["lxd_strategy"].parse("fastest")


def test_the_header_part_labels_each_setting_and_shows_switches_only_when_on():
    assert Options().header() == ("timeout 120 s, strategy auto, snapshot ttl 86400 s, prepare ahead 3, "
                                  "max clones 12, lease wait 60 s")
    on = Options(lxd_timeout=2.5, lxd_strategy="clone", lxd_reuse=True, lxd_keep_failed=True)
    assert on.header() == ("timeout 2.5 s, strategy clone, snapshot ttl 86400 s, prepare ahead 3, max clones 12, "
                           "lease wait 60 s, reuse, keep failed")
    assert "insecure" not in Options(lxd_insecure=True).header()  # no label: the warning line says it
    labelled = {o.name for o in OPTIONS if o.header}
    assert labelled >= {"lxd_timeout", "lxd_strategy", "lxd_reuse", "lxd_keep_failed"}


# -- what pytest --help shows -------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ROWS)
def test_help_shows_each_option_with_its_default(help_text, option):
    shown = entries(help_text, "LXD container snapshots (pytest-lxdsnap)")
    assert option.flag in shown, f"{option.flag} is not in --help"
    text = shown[option.flag]
    if option.type == "bool":
        assert f"(default: {'on' if option.default else 'off'})" in text, text
        assert option.off_flag in shown and "whatever the ini file says" in shown[option.off_flag]
    elif option.default is not None:
        default = f"{option.default:g}" if isinstance(option.default, float) else str(option.default)
        assert f"(default: {default})" in text, text
    if option.metavar:
        assert text.startswith(f"{option.flag}={option.metavar}") or text.startswith(f"{option.flag} {option.metavar}")
    ini = entries(help_text, "[pytest] configuration options")
    assert option.name in ini, f"ini key {option.name} is not in --help"
    assert " ".join(option.help_with_default.split()) in ini[option.name]


# -- command line, ini file, and the run's options ----------------------------------------------------------------

def configured(pytester: pytest.Pytester, ini: dict[str, str], *args: str) -> Options:
    """The options the plugin reads for this ini file and command line (parsed, not configured: the TLS options'
    files and combinations are checked later, by pytest_configure)."""
    lines = "".join(f'{name} = "{value}"\n' for name, value in ini.items())
    pytester.makefile(".toml", pyproject=PYPROJECT + lines)
    return plugin.read_options(pytester.parseconfig(*args))


@pytest.mark.parametrize("option", ROWS)
def test_the_ini_key_sets_it_and_the_command_line_beats_it(pytester, option):
    value = good(option)
    assert getattr(configured(pytester, {option.name: value}), option.name) == option.parse(value)
    if option.type == "bool":
        other = "--no-" + option.flag[2:] if option.parse(value) else option.flag
        assert getattr(configured(pytester, {option.name: value}, other), option.name) == (not option.parse(value))
    else:
        other = str(option.default) if option.default is not None else "elsewhere"
        if option.type == "count":
            other = str(int(value) + 1)
        assert getattr(configured(pytester, {option.name: value}, f"{option.flag}={other}"), option.name) == (
            option.parse(other))


@pytest.mark.parametrize("option", BOOLEANS)
def test_a_no_switch_turns_off_what_the_ini_file_turns_on(pytester, option):
    assert getattr(configured(pytester, {option.name: "true"}), option.name) is True
    assert getattr(configured(pytester, {option.name: "true"}, option.off_flag), option.name) is False
    assert getattr(configured(pytester, {}, option.flag, option.off_flag), option.name) is False  # the last one wins


def test_no_lxd_reuse_turns_off_an_ini_reuse_in_the_run_itself(pytester):
    pytester.makefile(".toml", pyproject=PYPROJECT + "lxd_reuse = true\n")
    pytester.makepyfile("def test_plain(): pass")
    on = pytester.runpytest_inprocess()
    on.stdout.fnmatch_lines(["lxdsnap: unix socket *, lease wait 60 s, reuse"])
    off = pytester.runpytest_inprocess("--no-lxd-reuse")
    off.assert_outcomes(passed=1)
    header = next(line for line in off.stdout.lines if line.startswith("lxdsnap: "))
    assert header.endswith("lease wait 60 s"), header


@pytest.mark.parametrize("option", [pytest.param(o, id=o.name) for o in OPTIONS if o.type in BAD])
@pytest.mark.parametrize("where", ["command line", "ini file"])
def test_a_bad_value_is_a_usage_error_naming_the_option(pytester, option, where):
    raw = BAD[option.type]
    if where == "ini file":
        pytester.makefile(".toml", pyproject=PYPROJECT + f'{option.name} = "{raw}"\n')
        args: tuple[str, ...] = ()
    else:
        pytester.makefile(".toml", pyproject=PYPROJECT)
        args = (f"{option.flag}={raw}",)
    pytester.makepyfile("def test_plain(): pass")
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    if option.type == "bool" and where == "command line":  # a switch takes no value: argparse says so
        result.stderr.fnmatch_lines([f"*error: argument {option.flag}: ignored explicit argument {raw!r}"])
    else:
        result.stderr.fnmatch_lines([f"ERROR: {option.name} ({option.flag}): * {raw!r}*"])
    assert "Traceback" not in result.stderr.str()


def test_the_report_header_shows_the_effective_settings(pytester):
    pytester.makefile(".toml", pyproject=PYPROJECT + 'lxd_strategy = "recipe"\nlxd_timeout = "9"\n'
                                                     'lxd_keep_failed = "true"\n')
    pytester.makepyfile("def test_plain(): pass")
    result = pytester.runpytest_inprocess("--lxd-strategy=inplace", "--lxd-max-clones=4", "--lxd-lease-wait=1.5")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["lxdsnap: unix socket */no-lxd-here/unix.socket, timeout 9 s, strategy inplace, "
                                 "snapshot ttl 86400 s, prepare ahead 3, max clones 4, lease wait 1.5 s, keep failed"])
