"""Deployment files, checked statically (no Docker engine or cluster runs here)."""

from __future__ import annotations

import re
import subprocess
import tempfile
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


NODE_UID = 10001
COPY_PRIVATE = re.compile(rf"install -m 0600 -o {NODE_UID} -g {NODE_UID} (\S+) /private/\$\$o/(\S+)")


def compose_private_copies() -> dict[str, str]:
    """What compose's private-keys step copies for node ``$o``: name in the node's volume -> source in the step."""
    step = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]["private-keys"]
    return {name: source for source, name in COPY_PRIVATE.findall(step["command"][0])}


def compose_host_file(service: dict[str, Any], path: str) -> str | None:
    """The host path (relative to deploy/compose) that ``path`` inside ``service`` comes from, if bind-mounted."""
    for volume in service["volumes"]:
        host, inside = volume.split(":")[:2]
        if host.startswith("./") and (path == inside or path.startswith(inside + "/")):
            return str(host) + path.removeprefix(inside)
    return None


def test_compose_hands_each_node_its_private_files_owned_by_it_and_readable_by_it_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """init.sh writes secrets 0600 for whoever runs it; the node (uid 10001) refuses anything others can read."""
    assert f"--uid {NODE_UID} " in (DEPLOY / "Dockerfile").read_text()
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    step = services["private-keys"]
    assert step["network_mode"] == "none" and step["restart"] == "no"
    copies = compose_private_copies()
    for name in ("node-310000", "node-320000"):
        origin = name.removeprefix("node-")
        service = services[name]
        assert service["depends_on"]["private-keys"]["condition"] == "service_completed_successfully"
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, str(value))
        config = load_config(DEPLOY / "compose" / "node.toml")
        volume = f"private-{origin}"
        assert f"{volume}:/run/credex/private:ro" in service["volumes"] and volume in compose["volumes"]
        assert f"{volume}:/private/{origin}" in step["volumes"]
        private = (
            config.keys.signing_key,
            config.keys.pseudonym_key,
            config.grpc.tls.key,
            config.bus.sasl_password_file,
        )
        for path in private:
            assert path is not None and path.parent == Path("/run/credex/private"), path
            assert path.name in copies, f"private-keys does not copy {path.name}"
            source = copies[path.name].replace("$$o", origin)
            assert compose_host_file(step, source) is not None, source
        mounted = [v.split(":")[0] for v in service["volumes"] if v.startswith("./")]
        assert not [m for m in mounted if m.endswith((".key", ".password")) or m == f"./secrets/{origin}"], mounted


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


@dataclass(frozen=True)
class ConfigFile:
    """A file handed to a Kafka tool with --add-config-file, as the tool saw it."""

    path: Path
    mode: int
    text: str


@dataclass
class Granted:
    """What the ACL script asked of the Kafka tools, recorded by stand-ins for them."""

    grants: list[Grant] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)  # every argument of every call: what /proc/*/cmdline shows
    config_files: list[ConfigFile] = field(default_factory=list)


# A stand-in for a Kafka tool: records its arguments, and a copy of any --add-config-file (with its mode).
STAND_IN = r"""#!/bin/sh
printf "%s\037" "$(basename "$0")" "$@" >> "$CALLS"
echo >> "$CALLS"
previous=
for arg in "$@"; do
  if [ "$previous" = --add-config-file ]; then
    printf "%s\037%s\037" "$arg" "$(stat -c %a "$arg")" >> "$CALLS.files"
    cat "$arg" >> "$CALLS.files"
    printf "\036" >> "$CALLS.files"
  fi
  previous=$arg
done
"""


def run_acl_script(tmp_path: Path, origin: str, peers: list[str], password: str = "pw") -> Granted:
    """Run kafka-acls.sh for one node with the Kafka tools replaced by scripts that record their arguments."""
    result = _acl_script(tmp_path, origin, peers, password)
    assert result.returncode == 0, result.stderr
    calls = tmp_path / "calls"
    granted = Granted()
    for record in (tmp_path / "calls.files").read_text().split("\036")[:-1]:
        path, mode, text = record.split("\037", 2)
        granted.config_files.append(ConfigFile(Path(path), int(mode, 8), text))
    for line in calls.read_text().splitlines():
        tool, *args = line.rstrip("\037").split("\037")
        granted.arguments += args
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
            assert set(options) <= {
                "--bootstrap-server",
                "--command-config",
                "--alter",
                "--entity-type",
                "--entity-name",
                "--add-config-file",
            }, options  # the password only ever in the file
    return granted


def _acl_script(tmp_path: Path, origin: str, peers: list[str], password: str) -> subprocess.CompletedProcess[str]:
    tools, calls = tmp_path / "tools", tmp_path / "calls"
    tools.mkdir(parents=True, exist_ok=True)
    for tool in KAFKA_TOOLS:
        stand_in = tools / tool
        stand_in.write_text(STAND_IN)
        stand_in.chmod(0o755)
    password_file = tmp_path / f"{origin}.password"
    password_file.write_text(password, encoding="utf-8")
    calls.write_text("")
    (tmp_path / "calls.files").write_text("")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_BIN": str(tools),
        "CALLS": str(calls),
        "KAFKA_SERVER": "kafka:9094",
        "ADMIN_CONFIG": "/admin.properties",
        "PASSWORD_FILE": str(password_file),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    return subprocess.run(["sh", str(ACL_SCRIPT), origin, *peers], env=env, capture_output=True, text=True, check=False)


def assert_password_only_in_a_private_file(granted: Granted, password: str) -> None:
    """The node's password is on no command line; kafka-configs.sh reads it from a 0600 file gone afterwards."""
    assert not [a for a in granted.arguments if password in a], "the password is on a command line"
    [config] = granted.config_files
    assert config.mode == 0o600, oct(config.mode)
    assert not config.path.exists(), "the password file is left behind"
    assert java_properties(config.text) == {"SCRAM-SHA-512": f"password={password}"}


def java_properties(text: str) -> dict[str, str]:
    """Parse ``text`` as java.util.Properties.load does (what kafka-configs.sh --add-config-file reads).

    Enough of the format for one-line entries: comments, the key ending at the first
    unescaped ``=``, ``:`` or white space, and backslash escapes; a line continuation
    (an odd number of trailing backslashes) is refused, as the script never writes one.
    """
    assert text.isascii(), "Properties.load reads ISO-8859-1; anything else needs \\u escapes"
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.lstrip(" \t\f")
        if not line or line[0] in "#!":
            continue
        assert (len(line) - len(line.rstrip("\\"))) % 2 == 0, f"a continued line: {line!r}"
        i = 0
        while i < len(line) and line[i] not in "=: \t\f":
            i += 2 if line[i] == "\\" else 1
        key, rest = line[:i], line[i:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        found[_unescape(key)] = _unescape(rest)
    return found


def _unescape(text: str) -> str:
    escapes = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
    return re.sub(
        r"\\(u[0-9a-fA-F]{4}|.)",
        lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 5 else escapes.get(m[1], m[1]),
        text,
    )


@pytest.mark.parametrize(
    "password",
    ["pw", "s3,cr]et=[x] wi th spaces", "back\\slash#!:=,]", "[password=a],SCRAM-SHA-256=[password=b]"],
)
def test_the_acl_script_hands_kafka_the_password_in_a_private_file_never_on_a_command_line(
    tmp_path: Path, password: str
) -> None:
    granted = run_acl_script(tmp_path, "310000", ["320000"], password=f"  {password}\n")
    assert granted.users == ["credex-310000"]
    assert_password_only_in_a_private_file(granted, password)  # trimmed as the node trims it


@pytest.mark.parametrize("password", ["", " \n", "two\nlines", "密码", "tab\tinside"])
def test_the_acl_script_refuses_a_password_it_cannot_hand_on_intact_and_grants_nothing(
    tmp_path: Path, password: str
) -> None:
    result = _acl_script(tmp_path, "310000", ["320000"], password)
    assert result.returncode != 0
    assert "PASSWORD_FILE" in result.stderr or ".password" in result.stderr, result.stderr
    assert (tmp_path / "calls").read_text() == "", "a Kafka tool ran"
    assert not list((tmp_path / "tmp").iterdir()), "a file was left behind"


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
        assert_password_only_in_a_private_file(granted, "pw")


def test_the_helm_chart_runs_the_same_acl_script_for_its_node_and_peers(tmp_path: Path) -> None:
    chart = DEPLOY / "helm" / "credex"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    documents = list(yaml.safe_load_all(render(chart / "templates" / "kafka-setup.yaml", values)))
    [job] = [d for d in documents if d and d["kind"] == "Job"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["sh", "/setup/kafka-acls.sh"]
    origin, *peers = container["command"][2:]
    assert (origin, peers) == (values["origin"], values["kafka"]["peers"])
    granted = run_acl_script(tmp_path, origin, peers)
    assert_writes_own_topics_and_reads_peers_only(granted, origin, peers)
    assert_password_only_in_a_private_file(granted, "pw")


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
    step = yaml.safe_load((folder / "compose.yaml").read_text())["services"]["private-keys"]
    for origin in ("310000", "320000"):
        for source in compose_private_copies().values():
            host = compose_host_file(step, source.replace("$$o", origin))
            assert host is not None and (folder / host).is_file(), source  # what private-keys copies, init.sh made
            assert not (folder / host).stat().st_mode & 0o077, host


def test_helm_hands_the_node_its_private_keys_as_files_only_it_can_read() -> None:
    """The node refuses group- or world-readable keys; Kubernetes secrets are root's, so a step makes private copies."""
    chart = DEPLOY / "helm" / "credex"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "node.toml"
        configmap = yaml.safe_load(render(chart / "templates" / "configmap.yaml", values))
        config_path.write_text(configmap["data"]["node.toml"])
        config = load_config(config_path)
    deployment = yaml.safe_load(render(chart / "templates" / "deployment.yaml", values))
    pod = deployment["spec"]["template"]["spec"]
    (prepare,) = pod["initContainers"]
    (node,) = pod["containers"]
    private = {v["name"]: v for v in pod["volumes"]}["private"]
    assert private["emptyDir"]["medium"] == "Memory"
    node_mounts = {m["mountPath"]: m for m in node["volumeMounts"]}
    script = " ".join(prepare["command"])
    for key in (config.keys.signing_key, config.keys.pseudonym_key, config.grpc.tls.key):
        assert key is not None
        assert node_mounts[str(key.parent)]["name"] == "private", key
        assert f"/run/credex/private/{key.name}" in script and "install -m 0600 -o 10001 -g 10001" in script, key
    assert node["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
