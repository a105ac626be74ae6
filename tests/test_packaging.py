"""The package as it installs: the field tools stay out of the service's process, the
command loads them only when one runs, and a wheel installed outside the checkout finds
its shipped configuration and runs the demo."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.test_demo import first_readings

ROOT = Path(__file__).resolve().parent.parent

LOADED_FIELD_TOOLS = """
import json, sys
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "fieldtools")))
"""


def field_tools_loaded_by(code: str) -> list[str]:
    """The fieldtools modules a fresh interpreter holds after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", code + LOADED_FIELD_TOOLS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_the_service_loads_no_field_tool() -> None:
    # every module of the service and of the detectors, imported as the collector's
    # process may import them
    code = """
import importlib, pkgutil
import collector, detectors
for package in (collector, detectors):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
"""
    assert field_tools_loaded_by(code) == []


def test_the_command_loads_a_field_tool_only_when_it_runs() -> None:
    code = """
from collector.cli import build_parser
parser = build_parser()
for argv in (["run"], ["simulate", "--generate", "1"], ["demo", "--duration", "1"],
             ["broker-acl"], ["check-config", "x.toml"]):
    parser.parse_known_args(argv)
"""
    assert field_tools_loaded_by(code) == []


def image_build_sources() -> list[str]:
    """What the Dockerfile copies into its working directory before installing the package."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if line.startswith("RUN pip install"))
    copied = []
    for line in lines[:install]:
        if line.startswith("COPY "):
            *sources, destination = line.split()[1:]
            copied += [s for s in sources if destination in {f"./{s}", "./"}]
    return copied


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the checkout with the package installed from its wheel.

    The dependencies come from this test run's own environment through a .pth line: a
    directory named in a .pth file joins sys.path, but its own .pth files (this checkout's
    editable install among them) are not read, so the package itself comes from the wheel
    alone."""
    base = tmp_path_factory.mktemp("installed")
    # built from what the image's build copies (no stale build/ directory of the checkout
    # can slip into the wheel), symlinks kept as they are in the repository
    source = base / "source"
    for name in image_build_sources():
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("smartunit_monitor-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run_installed(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # from a directory outside the checkout, with nothing pointing back into it
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        cwd=venv.parent,
        env=env,
        check=False,
        timeout=120,
    )


def shipped_example(venv: Path) -> Path:
    done = run_installed(venv, "smartunit", "demo", "--config-dir")
    assert done.returncode == 0, done.stderr
    directory = Path(done.stdout.strip())
    assert directory.is_relative_to(venv)  # the wheel's, not the checkout's
    example = directory / "smartunit.example.toml"
    assert example.is_file() and not example.is_symlink()
    done = run_installed(venv, "python", "-c", "import collector; print(collector.__file__)")
    assert Path(done.stdout.strip()).is_relative_to(venv), done.stdout + done.stderr
    return example


@pytest.mark.slow
def test_the_installed_wheel_checks_its_shipped_configuration(installed: Path) -> None:
    for command in (["demo", "--help"], ["simulate", "--help"]):
        done = run_installed(installed, "smartunit", *command)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: smartunit {command[0]}"), done.stdout

    example = shipped_example(installed)
    done = run_installed(installed, "smartunit", "check-config", str(example))
    assert done.returncode == 0, done.stderr
    assert f"{example}: OK" in done.stdout
    units = re.search(r"registry: .*: (\d+) units, (\d+) devices", done.stdout)
    assert units and int(units[1]) > 0 and int(units[2]) > 0, done.stdout
    rules = re.search(r"rules: +(\d+) from 1 file", done.stdout)
    assert rules and int(rules[1]) > 0, done.stdout

    # the shipped ACL, package data too, heads the generated one
    done = run_installed(installed, "smartunit", "broker-acl", "--config", str(example))
    assert done.returncode == 0, done.stderr
    assert "user smartunit-collector" in done.stdout and "user unit@" in done.stdout


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo(installed: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    demo = subprocess.Popen(
        [str(installed / "bin" / "smartunit"), "demo", "--devices", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=installed.parent,
        env=env,
    )
    arrived, seen = first_readings(demo, timeout_s=120)
    if demo.poll() is None:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
    rest, _ = demo.communicate(timeout=60)
    output = "".join(seen) + rest
    assert arrived > 0, output
    assert demo.returncode == 0, output
    assert "no process left running" in rest


def test_the_shipped_configuration_is_the_documented_samples() -> None:
    # one copy: the package's files link to config/, which the wheel build dereferences
    shipped = sorted((ROOT / "fieldtools" / "config").iterdir())
    assert shipped
    for link in shipped:
        assert link.is_symlink(), f"{link} is a copy; link it to config/{link.name}"
        assert link.resolve() == ROOT / "config" / link.name


def test_the_image_builds_the_package_with_its_shipped_files() -> None:
    """Docker copies a symlink as a symlink: what the package's links point to must be in
    the build context's copy before the image installs the package."""
    copied = set(image_build_sources())
    packages = [p for p in ("collector", "detectors", "fieldtools") if (ROOT / p).is_dir()]
    assert set(packages) <= copied
    for package in packages:
        for path in (ROOT / package).rglob("*"):
            if path.is_symlink():
                target = path.resolve().relative_to(ROOT)
                assert target.parts[0] in copied, f"{path} needs {target} in the image"
