"""docker-compose.yml and the Dockerfile say what the production stage ran: no drift between them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deployment import commands

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "shoptet-addon-platform"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    pairs = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def platform_services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {name: service for name, service in compose["services"].items() if service.get("image") == IMAGE}


def test_the_dockerfile_installs_builds_and_serves_with_the_stage_commands() -> None:
    instructions = dockerfile_instructions()
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    assert commands.INSTALL in runs
    assert any(run == commands.COLLECT_STATIC or run.startswith(commands.COLLECT_STATIC + " &&") for run in runs)
    cmd = [arguments for instruction, arguments in instructions if instruction == "CMD"]
    assert [json.loads(arguments) for arguments in cmd] == [commands.WEB]


def test_the_image_installs_nothing_but_the_runtime_requirements() -> None:
    installs = [
        arguments
        for instruction, arguments in dockerfile_instructions()
        if instruction == "RUN" and re.search(r"\bpip\b", arguments)
    ]
    assert installs == [commands.INSTALL]


def test_every_compose_service_of_the_image_runs_a_command_the_stage_ran() -> None:
    services = platform_services()
    assert set(services) == set(commands.SERVICES)
    for name, service in services.items():
        command = service.get("command", commands.WEB)
        assert command == commands.SERVICES[name], f"docker-compose.yml service {name!r} drifted"


def test_compose_builds_the_image_from_this_dockerfile() -> None:
    for name, service in platform_services().items():
        assert service.get("build") == ".", name


def test_compose_restarts_the_long_running_services_and_never_the_one_off_steps() -> None:
    policies = {name: service.get("restart") for name, service in platform_services().items()}
    expected = {name: "no" if name in commands.ONE_OFF else "unless-stopped" for name in commands.SERVICES}
    assert policies == expected
