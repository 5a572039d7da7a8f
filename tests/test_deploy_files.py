"""Deployment files, checked statically (no Docker engine or cluster runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from credex.node.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_the_dockerfile_copies_only_what_exists_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    root = DEPLOY.parent
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        assert (root / source).exists(), source
    assert "USER credex" in text
    assert 'ENTRYPOINT ["credex"]' in text


def test_the_example_node_config_is_a_valid_config() -> None:
    config = load_config(DEPLOY / "examples" / "node.toml")
    assert config.origin == "310000"
    assert config.bus.membership == "group" and config.bus.security_protocol == "SSL"
    assert config.grpc.tls.client_ca is not None


def test_the_compose_federation_is_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "kafka", "node-310000", "node-320000"} <= services.keys()
    for name in ("node-310000", "node-320000"):
        service = services[name]
        assert {"postgres", "kafka"} <= service["depends_on"].keys()
        environment = service["environment"]
        for key, value in environment.items():
            monkeypatch.setenv(key, str(value))
        config = load_config(DEPLOY / "compose" / "node.toml")
        assert config.origin == name.removeprefix("node-")
        assert config.database.url.endswith(f"credex_{config.origin}")
        mounts = {m.split(":")[1] for m in service["volumes"]}
        for needed in (config.keys.signing_key, config.trust.bundle, config.grpc.tls.cert):
            assert any(str(needed).startswith(m) for m in mounts), needed
    assert (DEPLOY / "compose" / "init.sh").stat().st_mode & 0o111


def test_every_helm_value_a_template_uses_is_defined() -> None:
    chart = DEPLOY / "helm" / "credex"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["name"] == "credex"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    used = set()
    for template in (chart / "templates").glob("*.yaml"):
        used |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert used
    for path in used:
        node = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"templates use .Values.{path}, values.yaml lacks it"
            node = node[part]


def test_the_compose_init_script_builds_a_bundle_with_the_cli_alone(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    from credex.crypto.keys import load_public
    from credex.crypto.trust import TrustBundle

    folder = tmp_path / "compose"
    shutil.copytree(DEPLOY / "compose", folder)
    subprocess.run(
        ["sh", str(folder / "init.sh")],
        env={"CREDEX": f"{sys.executable} -m credex.node.cli", "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    secrets = folder / "secrets"
    bundle = TrustBundle.load_signed(secrets / "bundle.json", load_public(secrets / "federation" / "signing.pub"))
    assert [m.endpoint for m in bundle.members] == ["node-310000:50051", "node-320000:50051"]
    assert (secrets / "310000" / "tls" / "node.crt").exists() and (secrets / "pseudonym.key").exists()
