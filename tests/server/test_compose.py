"""The compose file and Dockerfile agree with the CLI and the settings (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sedmon_server.cli import build_parser
from sedmon_server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def server_services() -> dict[str, Any]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if list(svc.get("command", []))[:2] == ["sedmon-server", "serve"]
    }


def test_postgres_16_two_server_replicas_and_a_proxy() -> None:
    services = compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert len(server_services()) >= 2
    proxy = services["proxy"]["image"]
    assert proxy.startswith(("nginx", "caddy"))


def test_server_command_parses_with_the_cli_and_binds_all_interfaces() -> None:
    for svc in server_services().values():
        args = build_parser().parse_args(list(svc["command"])[1:])
        assert args.command == "serve"
        assert args.database_url.startswith("postgresql+psycopg://")
        assert (args.host, args.port) == ("0.0.0.0", 8000)
        assert args.database_url.split("@", 1)[1].startswith("postgres:5432/")


def test_server_environment_names_only_real_settings() -> None:
    fields = {f"SEDMON_{name.upper()}" for name in Settings.model_fields}
    for svc in server_services().values():
        env = svc["environment"]
        assert "SEDMON_ADMIN_TOKEN" in env
        assert set(env) <= fields, set(env) - fields


def test_proxy_config_reaches_every_server_replica_on_its_port() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    upstreams = set(re.findall(r"server\s+([\w-]+):(\d+)", conf))
    assert upstreams == {(name, "8000") for name in server_services()}
    mounts = compose()["services"]["proxy"]["volumes"]
    assert any(m.startswith("./deploy/nginx.conf:") for m in mounts)


def test_dockerfile_installs_the_server_and_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "./server" in text and "COPY migrations/" in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    argv = yaml.safe_load(cmd.group(1))
    assert argv[:2] == ["sedmon-server", "serve"]
    build_parser().parse_args(argv[1:])
