"""The `smartunit` command speaks to a person: its version, listings that say what they
read, configuration errors that point at a file's line and the key meant, rule errors in
the rule file's words, and help for every option."""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

import pytest

from collector.cli import build_parser, main
from fieldtools.simulate import simulate_parser

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "config" / "registry.example.toml"
EXAMPLE = ROOT / "config" / "smartunit.example.toml"


@pytest.fixture(autouse=True)
def no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTUNIT_CONFIG", raising=False)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"smartunit {version('smartunit-monitor')}"


def test_devices_without_a_configuration_says_what_it_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["devices"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["device\tfamily\tunit\thierarchy"]
    assert "no configuration file (give --config or set SMARTUNIT_CONFIG)" in err
    assert "registry: none, so no device is registered" in err


def test_devices_lists_the_registry_under_a_header(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTUNIT_CONFIG", str(EXAMPLE))
    assert main(["devices"]) == 0
    out, err = capsys.readouterr()
    header, *rows = out.splitlines()
    assert header == "device\tfamily\tunit\thierarchy"
    assert len(rows) == 11 and rows[0].startswith("cam-gq-01\tcamera\tguanqian-square\t")
    assert f"configuration {EXAMPLE}" in err and f"registry: {REGISTRY}" in err


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["check-config", str(path)]) == 2
    return capsys.readouterr().err


def test_an_unknown_key_names_its_file_and_line_and_the_key_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "smartunit.toml"
    config.write_text(
        "# a comment\n[mqtt]\nurll = 'mqtt://h'\n\n"
        "[[alerts.receivers]]\nname = 'a'\nurl = 'http://a.example'\n"
        "[[alerts.receivers]]\nname = 'b'\nurl = 'http://b.example'\nformatt = 'native'\n"
        "[detection.silence]\nminimun_s = 1\n"
    )
    err = check_config(config, capsys)
    assert f"{config}:3: mqtt.urll: unknown key; did you mean 'url'?" in err
    assert f"{config}:11: alerts.receivers.1.formatt: unknown key; did you mean 'format'?" in err
    assert (
        f"{config}:13: detection.silence.minimun_s: unknown key; did you mean 'minimum_s'?" in err
    )


def test_a_value_from_the_environment_names_its_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "smartunit.toml"
    config.write_text("")
    monkeypatch.setenv("SMARTUNIT_HTTP_PORT", "eighty")
    err = check_config(config, capsys)
    assert "http.port:" in err and "(set by SMARTUNIT_HTTP_PORT)" in err


def test_an_unknown_unit_in_the_registry_names_the_line_and_the_unit_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = REGISTRY.read_text()
    misspelt = text.replace(
        '[devices.chem-dh-gas-01]\nunit = "donghai-gas"',
        '[devices.chem-dh-gas-01]\nunit = "donghai-gass"',
    )
    assert misspelt != text
    registry = tmp_path / "registry.toml"
    registry.write_text(misspelt)
    config = tmp_path / "smartunit.toml"
    config.write_text(f"[registry]\npath = '{registry}'\n")
    line = misspelt.splitlines().index('unit = "donghai-gass"') + 1
    err = check_config(config, capsys)
    assert (
        f"{registry}:{line}: devices.chem-dh-gas-01.unit: unknown unit 'donghai-gass'; "
        "did you mean 'donghai-gas'?"
    ) in err


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "detector = 'threshold'\nparams = { level = { red = 5.0 } }",
            "7: rules.0.params: detector 'threshold' has no parameter 'level'; "
            "did you mean 'levels'? (it has: levels, clear, for_s, direction)",
        ),
        (
            "detector = 'treshold'",
            "6: rules.0.detector: unknown detector 'treshold'; did you mean 'threshold'?",
        ),
    ],
)
def test_rule_errors_speak_of_the_rule_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str, message: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "# my rules\n[[rules]]\nname = 'gas'\nfamily = 'chem'\nquantity = 'lel_pct'\n" + rule + "\n"
    )
    config = tmp_path / "smartunit.toml"
    config.write_text(f"[detection]\nrules = ['{rules}']\n")
    err = check_config(config, capsys)
    assert f"{rules}:{message}" in err
    assert "__init__" not in err and "Value error" not in err


def options_without_help(parser: argparse.ArgumentParser, where: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest for choice in action._choices_actions if choice.help}
            for name, sub in action.choices.items():
                if name not in listed:
                    missing.append(f"{where} {name}")
                missing += options_without_help(sub, f"{where} {name}")
        elif not action.help:
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_has_help() -> None:
    missing = options_without_help(build_parser(), "smartunit")
    missing += options_without_help(simulate_parser("smartunit simulate"), "smartunit simulate")
    assert missing == []


def test_a_rule_for_a_unit_the_registry_does_not_hold_is_pointed_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[[rules]]\nname = 'gas'\nfamily = 'chem'\nquantity = 'lel_pct'\n"
        "detector = 'threshold'\nunits = ['donghai-gas', 'xinghua-chen']\n"
    )
    config = tmp_path / "smartunit.toml"
    config.write_text(f"[registry]\npath = '{REGISTRY}'\n[detection]\nrules = ['{rules}']\n")
    assert main(["check-config", str(config)]) == 0  # the collector runs on it
    err = capsys.readouterr().err
    assert (
        f"{rules}:6: rules.0.units: rule 'gas' names unknown unit 'xinghua-chen'; "
        "did you mean 'xinghua-chem'?"
    ) in err
    assert "'donghai-gas'" not in err
