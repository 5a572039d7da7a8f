"""Deployment files, checked statically (no Docker engine or cluster runs here)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from credex.node.config import NodeConfig, load_config

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
    assert config.bus.membership == "group"
    assert config.grpc.tls.client_ca is not None
    _on_sasl_ssl_as_itself(config)


def _on_sasl_ssl_as_itself(config: NodeConfig) -> None:
    """A production node talks to Kafka over TLS as its own principal, password kept out of the file."""
    assert config.bus.security_protocol == "SASL_SSL", config.origin
    assert config.bus.sasl_mechanism == "SCRAM-SHA-512"
    assert config.bus.sasl_username in ("", f"credex-{config.origin}")
    assert config.bus.sasl_password is None and config.bus.sasl_password_file is not None
    assert config.bus.ssl_cafile is not None
    assert not config.bus.create_topics, "topics come with the ACLs; a node may not create its peers' topics"


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
        _on_sasl_ssl_as_itself(config)
        assert "kafka-setup" in service["depends_on"]
        mounts = {m.split(":")[1] for m in service["volumes"]}
        needed_files = (config.keys.signing_key, config.trust.bundle, config.grpc.tls.cert)
        for needed in (*needed_files, config.bus.sasl_password_file, config.bus.ssl_cafile):
            assert any(str(needed).startswith(m) for m in mounts), needed
    assert (DEPLOY / "compose" / "init.sh").stat().st_mode & 0o111


def test_the_compose_broker_takes_clients_only_over_sasl_ssl_with_acls_enforced() -> None:
    kafka = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]["kafka"]["environment"]
    protocols = dict(pair.split(":") for pair in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","):
        assert protocols[listener.split("://")[0]] == "SASL_SSL", listener
    for listener in kafka["KAFKA_LISTENERS"].split(","):
        name, address = listener.split("://")
        if protocols[name] != "SASL_SSL":  # the controller: reachable inside the container only
            assert address.startswith("localhost:") and name not in kafka["KAFKA_ADVERTISED_LISTENERS"], listener
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


ACL_SCRIPT = DEPLOY / "helm" / "credex" / "files" / "kafka-acls.sh"
KAFKA_TOOLS = ("kafka-acls.sh", "kafka-configs.sh", "kafka-topics.sh")


@dataclass(frozen=True)
class Grant:
    principal: str
    operations: frozenset[str]
    resource: str  # "topic" or "group"
    name: str
    pattern: str


@dataclass
class Granted:
    """What the ACL script asked of the Kafka tools, recorded by stand-ins for them."""

    grants: list[Grant] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)


def run_acl_script(tmp_path: Path, origin: str, peers: list[str]) -> Granted:
    """Run kafka-acls.sh for one node with the Kafka tools replaced by scripts that record their arguments."""
    tools, calls = tmp_path / "tools", tmp_path / "calls"
    tools.mkdir(parents=True, exist_ok=True)
    for tool in KAFKA_TOOLS:
        stand_in = tools / tool
        stand_in.write_text('#!/bin/sh\nprintf "%s\\037" "$(basename "$0")" "$@" >> "$CALLS"\necho >> "$CALLS"\n')
        stand_in.chmod(0o755)
    password = tmp_path / f"{origin}.password"
    password.write_text("pw")
    calls.write_text("")
    env = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_BIN": str(tools),
        "CALLS": str(calls),
        "KAFKA_SERVER": "kafka:9094",
        "ADMIN_CONFIG": "/admin.properties",
        "PASSWORD_FILE": str(password),
    }
    subprocess.run(["sh", str(ACL_SCRIPT), origin, *peers], env=env, check=True, capture_output=True)
    granted = Granted()
    for line in calls.read_text().splitlines():
        tool, *args = line.rstrip("\037").split("\037")
        options = _options(args)
        if tool == "kafka-acls.sh":
            resource = "topic" if "--topic" in options else "group"
            granted.grants.append(
                Grant(
                    options["--allow-principal"][0],
                    frozenset(options["--operation"]),
                    resource,
                    options[f"--{resource}"][0],
                    options.get("--resource-pattern-type", ["literal"])[0],
                )
            )
            assert set(options) <= {
                "--bootstrap-server",
                "--command-config",
                "--add",
                "--allow-principal",
                "--operation",
                "--topic",
                "--group",
                "--resource-pattern-type",
            }, options  # no hosts, no cluster rights, no deny rules to reason about
        elif tool == "kafka-topics.sh":
            granted.topics += options["--topic"]
        else:
            granted.users += options["--entity-name"]
    return granted


def _options(args: list[str]) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
            options.setdefault(arg, []).append(value)
    return options


def assert_writes_own_topics_and_reads_peers_only(granted: Granted, origin: str, peers: list[str]) -> None:
    principal = f"User:credex-{origin}"
    own = f"credex.{origin}."
    assert granted.users == [f"credex-{origin}"]
    assert sorted(granted.topics) == [f"{own}checkpoints", f"{own}events"]
    assert {g.principal for g in granted.grants} == {principal}
    for grant in granted.grants:
        assert "*" not in grant.name and grant.name, grant
        if grant.resource == "group":
            assert (grant.name, grant.pattern) == (f"credex-intake-{origin}", "literal"), grant
        elif grant.name == own:
            assert grant.pattern == "prefixed" and "Write" in grant.operations, grant
        else:
            assert grant.operations <= {"Read", "Describe"}, f"{principal} may do more than read {grant.name}"
    writes = {g.name for g in granted.grants if g.operations - {"Read", "Describe"}}
    assert writes == {own}, writes
    reads = {g.name for g in granted.grants if g.resource == "topic" and "Read" in g.operations}
    assert reads == {own} | {f"credex.{p}." for p in peers if p != origin}, reads


def test_compose_gives_each_node_its_own_principal_writing_only_its_topics(tmp_path: Path) -> None:
    services = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]
    setup = services["kafka-setup"]
    assert any(v.startswith("../helm/credex/files/kafka-acls.sh:") for v in setup["volumes"])
    origins = str(setup["environment"]["ORIGINS"]).split()
    assert sorted(origins) == sorted(n.removeprefix("node-") for n in services if n.startswith("node-"))
    for origin in origins:
        assert any(v.startswith(f"./secrets/{origin}/kafka.password:") for v in setup["volumes"])
        granted = run_acl_script(tmp_path / origin, origin, origins)
        assert_writes_own_topics_and_reads_peers_only(granted, origin, origins)


def test_the_helm_chart_runs_the_same_acl_script_for_its_node_and_peers(tmp_path: Path) -> None:
    chart = DEPLOY / "helm" / "credex"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    documents = list(yaml.safe_load_all(render(chart / "templates" / "kafka-setup.yaml", values)))
    [job] = [d for d in documents if d and d["kind"] == "Job"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["sh", "/setup/kafka-acls.sh"]
    origin, *peers = container["command"][2:]
    assert (origin, peers) == (values["origin"], values["kafka"]["peers"])
    assert_writes_own_topics_and_reads_peers_only(run_acl_script(tmp_path, origin, peers), origin, peers)


def test_the_helm_node_config_is_on_sasl_ssl_with_its_password_mounted(tmp_path: Path) -> None:
    chart = DEPLOY / "helm" / "credex"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    configmap = yaml.safe_load(render(chart / "templates" / "configmap.yaml", values))
    (tmp_path / "node.toml").write_text(configmap["data"]["node.toml"])
    config = load_config(tmp_path / "node.toml")
    _on_sasl_ssl_as_itself(config)
    deployment = (chart / "templates" / "deployment.yaml").read_text()
    for needed in (config.bus.sasl_password_file, config.bus.ssl_cafile):
        assert needed is not None and f"mountPath: {needed.parent}," in deployment, needed


def render(template: Path, values: dict[str, Any]) -> str:
    """Enough of Helm for these templates: ``.Values`` paths and one-line ``range``; other actions drop out."""

    def value(path: str) -> Any:
        node: Any = values
        for part in path.split("."):
            node = node[part]
        return node

    text = template.read_text()
    text = re.sub(
        r"\{\{ range \.Values\.([\w.]+) \}\}(.*?)\{\{ end \}\}",
        lambda m: "".join(m.group(2).replace("{{ . }}", str(item)) for item in value(m.group(1))),
        text,
    )
    text = re.sub(r"\{\{ \.Values\.([\w.]+) \}\}", lambda m: str(value(m.group(1))), text)
    return "\n".join(line for line in text.splitlines() if "{{" not in line)


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
