"""Node configuration: a TOML file, overridden by ``CREDEX_*`` environment variables.

Environment variables win over the file so that one file can serve every replica
and a deployment injects secrets and addresses (``CREDEX_DATABASE__URL``,
``CREDEX_BUS__BOOTSTRAP_SERVERS``). Relative paths in the file are taken
relative to the file's folder, so a node folder can be moved as a whole.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from credex.crypto.pseudonym import is_pseudonym
from credex.domain import uscc as uscc_codes
from credex.domain.persons import looks_like_ric
from credex.domain.publicity import PublicityRules
from credex.domain.regions import is_origin_code, is_plausible_division
from credex.errors import CredexError

Role = Literal["public", "government", "peer", "operator", "financing", "supervision"]


class ConfigError(CredexError):
    """The config file is missing, unreadable or invalid."""


class KeysConfig(BaseModel):
    signing_key: Path = Path("keys/signing.key")
    pseudonym_key: Path | None = None
    # The key this node cosigns its peers' checkpoints with as a witness (the bundle lists its public half
    # as the member's witness_key); none: this node witnesses nothing.
    witness_key: Path | None = None


class TrustConfig(BaseModel):
    bundle: Path = Path("trust/bundle.json")
    federation_public_key: Path = Path("trust/federation.pub")
    # The lowest bundle version this node accepts, even when its database remembers none
    # (first start, a new or restored database): set it to the federation's newest version.
    min_version: int = Field(default=1, ge=1)


class DatabaseConfig(BaseModel):
    # Empty: start embedded PostgreSQL under data_dir/postgres.
    url: str = ""
    create_if_missing: bool = True
    pool_min: int = 2
    pool_max: int = 10


class BusConfig(BaseModel):
    # Empty: start the embedded Kafka-protocol broker under data_dir/broker.
    bootstrap_servers: str = ""
    embedded_port: int = 0  # 0: any free port
    partitions: int = 4
    replication_factor: int = 1
    create_topics: bool = True
    # "static": assign every partition of each peer topic and keep offsets under the
    # node's group id, without group membership (no rebalance pauses; one replica).
    # "group": join a consumer group so that several replicas share the partitions.
    membership: Literal["static", "group"] = "static"
    group_id: str = ""  # default credex-intake-<origin>
    # PLAINTEXT is for the embedded broker on loopback only; production uses SASL_SSL:
    # TLS to the brokers and one SCRAM principal per node, so topic ACLs can say which
    # node writes which topic (see deploy/). Only public records cross the bus either way.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None  # the brokers' CA; empty: the system's trusted CAs
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    sasl_username: str = ""  # default credex-<origin>: one principal per node
    # The password: from CREDEX_BUS__SASL_PASSWORD, or a file (a mounted secret, read at each connect).
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None

    @model_validator(mode="after")
    def _sasl_password(self) -> BusConfig:
        if self.security_protocol == "SASL_SSL" and (self.sasl_password is None) == (self.sasl_password_file is None):
            raise ValueError(
                "bus.security_protocol = SASL_SSL needs exactly one password source: set the environment variable"
                " CREDEX_BUS__SASL_PASSWORD or bus.sasl_password_file (a file holding only the password)"
            )
        return self


class TLSConfig(BaseModel):
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None  # the federation CA; when set, client certificates are required


class GrpcConfig(BaseModel):
    listen: str = "127.0.0.1:50051"
    tls: TLSConfig = TLSConfig()
    # Overload (see node/edge.py): calls over these limits are refused at once, with
    # RESOURCE_EXHAUSTED (one caller's share) or UNAVAILABLE (the node's), so the
    # calls admitted keep their latency.
    max_concurrent_calls: int = Field(default=256, ge=1)
    max_concurrent_calls_per_caller: int = Field(default=16, ge=1)
    # Public callers together may hold at most this share of max_concurrent_calls: the
    # rest stays free for government callers and peers however many public callers come.
    public_share: float = Field(default=0.5, gt=0, le=1)


class AccessConfig(BaseModel):
    # speaks_for may be given a person's ID number by mistake: errors must not repeat what was given.
    model_config = ConfigDict(hide_input_in_errors=True)

    # Caller identity (client certificate CN) -> role. Members of the trust bundle
    # are peers by their origin code unless listed here otherwise.
    callers: dict[str, Role] = {}
    # Role of a caller without a client certificate (only possible without TLS).
    anonymous_role: Role = "public"
    # Government callers must say why they ask (the purpose goes to the audit log).
    purpose_required_for_government: bool = True
    # Caller identity -> SHA-256 of its certificate's public key (SPKI, 64 hex digits:
    # `openssl x509 -in caller.crt -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`).
    # A caller bound here gets its role only with that key: another certificate the CA
    # issued with the same name is served as public. Bind every government and operator caller.
    caller_keys: dict[str, str] = {}
    # Caller identity -> the USCCs it speaks for (a company's own desk): it may list who checked
    # those subjects, and nothing more. Each name must be bound in caller_keys, so that no other
    # certificate with that name reads who checked the company. A natural person's own caller
    # speaks for the person's pseudonym (psn:…, `credex checks pseudonym`), never the ID number.
    speaks_for: dict[str, list[str]] = {}
    # Caller identity -> the USCC of the providing unit (数据提供单位) it decides for: it decides the
    # objections the platform passed to that unit (部门审核) about records the unit provided, and
    # nothing more. Each name must be bound in caller_keys, like speaks_for.
    provider_units: dict[str, str] = {}
    # Supervision caller (certificate name) -> the GB/T 2260 code of the region it supervises: the
    # risk classes it sees, in lookups, proofs and streams alike, are that region's only. A supervision
    # caller without one is refused every call until an operator names its region here.
    regions: dict[str, str] = {}

    @model_validator(mode="after")
    def _regions(self) -> AccessConfig:
        for name, code in self.regions.items():
            if self.callers.get(name) != "supervision":
                raise ValueError(
                    f"access.regions names {name!r}, which access.callers does not make a supervision caller:"
                    " a region is what a supervisor supervises; give the caller that role or drop the region"
                )
            if not is_plausible_division(code):
                raise ValueError(
                    f"access.regions[{name!r}] is {code[:12]!r}: give the six-digit GB/T 2260 code of the region"
                    " the caller supervises (e.g. 320500 for 苏州市)"
                )
        return self

    @model_validator(mode="after")
    def _speaks_for(self) -> AccessConfig:
        for name, codes in self.speaks_for.items():
            if name not in self.caller_keys:
                raise ValueError(
                    f"access.speaks_for names {name!r}, which access.caller_keys does not bind to a key: bind it there"
                )
            for code in codes:
                if is_pseudonym(code):
                    continue
                if looks_like_ric(code):
                    raise ValueError(
                        f"access.speaks_for[{name!r}] holds a resident ID number: give the person's pseudonym"
                        " (psn:…, `credex checks pseudonym`), never the number"
                    )
                try:
                    uscc_codes.validate(code)
                except uscc_codes.InvalidSubjectCode as exc:
                    raise ValueError(
                        f"access.speaks_for[{name!r}]: {exc.message}; give a USCC, or a person's pseudonym (psn:…),"
                        " never an ID number"
                    ) from None
        return self

    @model_validator(mode="after")
    def _provider_units(self) -> AccessConfig:
        for name, code in self.provider_units.items():
            if name not in self.caller_keys:
                raise ValueError(
                    f"access.provider_units names {name!r}, which access.caller_keys does not bind to a key:"
                    " bind it there"
                )
            try:
                uscc_codes.validate(code)
            except uscc_codes.InvalidSubjectCode as exc:
                raise ValueError(f"access.provider_units[{name!r}]: {exc.message}") from None
        return self

    @model_validator(mode="after")
    def _caller_keys(self) -> AccessConfig:
        for name, spki in self.caller_keys.items():
            if name not in self.callers:
                raise ValueError(
                    f"access.caller_keys binds {name!r}, which access.callers does not list: give it a role there"
                    " or remove the binding"
                )
            if not re.fullmatch(r"[0-9a-f]{64}", spki):
                raise ValueError(
                    f"access.caller_keys[{name!r}] must be the SPKI SHA-256 of its certificate: 64 lowercase hex digits"
                )
        return self


class AuditConfig(BaseModel):
    # Audit rows older than this many days are deleted by a background task; 0: keep forever.
    # Ten years by default (credit-use.md Check rule 8, Zhejiang Art. 20): the table is partitioned
    # by month, and months wholly older are dropped whole.
    retention_days: int = Field(default=3653, ge=0)
    trim_every_seconds: float = Field(default=3600.0, gt=0)
    # How often the monthly partitions of the audit trail and the checks are made ahead and dropped.
    partitions_every_seconds: float = Field(default=86_400.0, gt=0)


class RelayConfig(BaseModel):
    batch_size: int = 2000
    idle_poll_seconds: float = 0.5
    # How often to check that the broker still holds what was published (it may have lost its log).
    broker_check_seconds: float = 5.0


class IntakeConfig(BaseModel):
    batch_size: int = 2000
    fetch_wait_ms: int = 200
    # A Kafka offset commit that has not finished by then restarts the consumer, so a stuck broker or group
    # coordinator cannot hang intake; what was read again is applied idempotently (counted as replays).
    commit_timeout_seconds: float = Field(default=30.0, gt=0)
    # Evidence of a rejected message: its first bytes, with the size and SHA-256 of the whole.
    evidence_bytes: int = Field(default=4096, ge=0, le=65536)
    # Evidence kept per origin; beyond either bound the oldest rows are trimmed (the counts stay).
    evidence_max_rows: int = Field(default=10_000, ge=1)
    evidence_max_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    # Identical rejections (same origin, reason and key) within this window share one row and a count.
    evidence_window_seconds: float = Field(default=3600.0, ge=0)
    # Evidence rows last seen longer ago than this are deleted (the counts stay); 0 keeps them for ever.
    evidence_max_age_days: float = Field(default=90.0, ge=0)


class SyncConfig(BaseModel):
    probe_seconds: float = 5.0
    # Events asked for in one FetchEvents call; a member serves at most 5,000 (services.edge.MAX_FETCH).
    fetch_limit: int = Field(default=2000, ge=1, le=5000)
    rpc_timeout_seconds: float = 10.0
    # A peer's signed checkpoint that no member can serve the events of raises an alarm after this long;
    # asking the members again for it backs off up to unreachable_backoff_max_seconds.
    unreachable_alarm_seconds: float = Field(default=300.0, gt=0)
    unreachable_backoff_max_seconds: float = Field(default=300.0, gt=0)


class FeedConfig(BaseModel):
    """One platform this node reads by itself: a file inbox, an HTTP API, or 前置库 tables."""

    name: str
    transport: Literal["file_drop", "http", "table_poll"]
    profile: str = "national"
    poll_seconds: float = 5.0
    # file_drop
    inbox: Path | None = None
    settle_seconds: float = 2.0
    # http
    url: str = ""
    page_size: int = 500
    timeout_seconds: float = 10.0
    attempts: int = 5
    headers: dict[str, str] = {}
    # table_poll
    dsn: str = ""
    tables: list[str] = []
    batch_size: int = 1000
    update_column: str = "update_time"
    id_column: str = "id"


class QualityConfig(BaseModel):
    # 双公示 records are due on the platform within this many working days of the decision.
    deadline_working_days: int = 7


class ChecksConfig(BaseModel):
    # 应用情况反馈 is overdue once this many working days (official calendar) pass after a check without it.
    feedback_due_working_days: int = Field(default=5, ge=1)
    # How often a serving node recounts the overdue feedback for its gauge.
    overdue_every_seconds: float = Field(default=3600.0, gt=0)
    # Checks, their answers and feedback are kept this many days (0: forever), dropped by whole months.
    retention_days: int = Field(default=3653, ge=0)


class ExpiryConfig(BaseModel):
    # The origin signs EXPIRE for its records whose publicity window has ended, once a day at this
    # hour (China Standard Time), and once at start so a node that was down catches up.
    enabled: bool = True
    hour: int = Field(default=1, ge=0, le=23)
    batch_size: int = Field(default=500, ge=1, le=10_000)  # records per transaction


class ReportsConfig(BaseModel):
    # Per origin region (GB/T 2260): credit-use.md, Report rules 2 and 3 make these regional settings.
    # Origins whose repaired records a report shows labelled 已修复; the default leaves them out.
    show_repaired: list[str] = []
    # Origins whose 简易程序 penalties the special report leaves out (Zhejiang's 2023 plan); the 2025
    # national minimum includes them, so the default is none.
    simple_procedure_excluded: list[str] = []
    # The most years a report may cover (565号 commentary: 5), and the default period.
    max_period_years: int = Field(default=5, ge=1, le=5)
    # Reports one caller may have issued in 24 hours: each is signed and kept whole in the register,
    # so a caller asking in a loop must not grow it without bound.
    max_per_caller_per_day: int = Field(default=50, ge=1)
    # The most records one report may show, each with its proof; more: narrow the period or fields.
    max_records: int = Field(default=2000, ge=1)
    # Where a verification code is checked; the QR code holds this URL with the number and code.
    verify_url: str = "credex:report-verify"
    # An edited copy of the report fields list (node/reports/fields.toml); empty: the shipped list.
    fields: Path | None = None


class CasesConfig(BaseModel):
    # Objection and repair deadlines and repair rules per region (domain/case_rules.toml's format);
    # unset: the shipped file. Validated at start: a broken file stops the node with every problem named.
    rules: Path | None = None


class SubscriptionsConfig(BaseModel):
    """Subscription streams (node/streams): limits, pacing, and whom financing callers stand for."""

    # Open streams one caller may hold, and the node in all; one more is refused RESOURCE_EXHAUSTED.
    max_streams_per_caller: int = Field(default=4, ge=1)
    max_streams: int = Field(default=256, ge=1)
    # A heartbeat (with the cursor to save) when nothing was sent for this long.
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Events read from the store per round and stream: with one write awaited at a time, this bounds
    # what a stream holds for a subscriber that does not read.
    batch_size: int = Field(default=200, ge=1, le=10_000)
    # Events sent before a checkpoint covered them, per stream, whose proofs are still owed; at the bound
    # the stream waits for a checkpoint before it reads more.
    max_pending_proofs: int = Field(default=10_000, ge=1)
    # Financing caller (certificate name) -> its unit's USCC, the grantee its authorizations name.
    grantees: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _regions_moved(cls, given: Any) -> Any:
        """A supervisor's region is one fact for lookups and streams alike, kept in access.regions."""
        if isinstance(given, dict) and "regions" in given:
            raise ValueError(
                "subscriptions.regions has moved to access.regions (lookups limit a supervisor to its region too):"
                " move each caller's region there"
            )
        return given


class CheckpointConfig(BaseModel):
    every_events: int = 1000
    every_seconds: float = 5.0


class IngestConfig(BaseModel):
    batch_size: int = 2000
    # Files at least this big are mapped in a worker process, overlapping with signing; 0: never.
    parallel_from_bytes: int = 8 * 1024 * 1024


class NodeConfig(BaseSettings):
    # hide_input_in_errors: a config may hold a person's ID number by mistake (access.speaks_for);
    # an error names the field and what is wrong, and never repeats what the file says.
    model_config = SettingsConfigDict(
        env_prefix="CREDEX_", env_nested_delimiter="__", extra="forbid", hide_input_in_errors=True
    )

    origin: str
    name: str = ""
    data_dir: Path = Path("data")
    keys: KeysConfig = KeysConfig()
    trust: TrustConfig = TrustConfig()
    database: DatabaseConfig = DatabaseConfig()
    bus: BusConfig = BusConfig()
    grpc: GrpcConfig = GrpcConfig()
    access: AccessConfig = AccessConfig()
    audit: AuditConfig = AuditConfig()
    relay: RelayConfig = RelayConfig()
    intake: IntakeConfig = IntakeConfig()
    sync: SyncConfig = SyncConfig()
    ingest: IngestConfig = IngestConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    feeds: list[FeedConfig] = []
    quality: QualityConfig = QualityConfig()
    checks: ChecksConfig = ChecksConfig()
    expiry: ExpiryConfig = ExpiryConfig()
    reports: ReportsConfig = ReportsConfig()
    cases: CasesConfig = CasesConfig()
    subscriptions: SubscriptionsConfig = SubscriptionsConfig()
    publicity: PublicityRules = Field(default_factory=PublicityRules)
    metrics_listen: str = ""  # host:port for Prometheus; empty: off
    # host:port of the tile server (every origin's log as C2SP tlog-tiles over HTTP, HTTPS with
    # grpc.tls); port 0: any free port; empty: off.
    tiles_listen: str = "127.0.0.1:0"
    log_level: str = "INFO"

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        if not is_origin_code(value):
            raise ValueError(f"origin {value!r} is not a GB/T 2260 division code such as 310000")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @property
    def topic(self) -> str:
        return events_topic(self.origin)

    @property
    def group_id(self) -> str:
        return self.bus.group_id or f"credex-intake-{self.origin}"


def events_topic(origin: str) -> str:
    return f"credex.{origin}.events"


def checkpoints_topic(origin: str) -> str:
    return f"credex.{origin}.checkpoints"


_PATH_FIELDS = (
    ("keys", "signing_key"),
    ("keys", "pseudonym_key"),
    ("keys", "witness_key"),
    ("trust", "bundle"),
    ("trust", "federation_public_key"),
    ("grpc", "tls", "cert"),
    ("grpc", "tls", "key"),
    ("grpc", "tls", "client_ca"),
    ("bus", "ssl_cafile"),
    ("bus", "ssl_certfile"),
    ("bus", "ssl_keyfile"),
    ("bus", "sasl_password_file"),
    ("reports", "fields"),
    ("cases", "rules"),
)


def load_config(path: Path, **overrides: Any) -> NodeConfig:
    """Read a node's TOML file; ``overrides`` (used by the local federation) win over the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    _merge(data, overrides)
    try:
        config = NodeConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a valid node config:\n{exc}") from exc
    return resolve_paths(config, path.parent.resolve())


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def resolve_paths(config: NodeConfig, base: Path) -> NodeConfig:
    """Anchor relative paths at ``base`` (the config file's folder)."""
    config.data_dir = _anchor(config.data_dir, base)
    for feed in config.feeds:
        if feed.inbox is not None:
            feed.inbox = _anchor(feed.inbox, base)
    for dotted in _PATH_FIELDS:
        holder: Any = config
        for part in dotted[:-1]:
            holder = getattr(holder, part)
        value = getattr(holder, dotted[-1])
        if value is not None:
            setattr(holder, dotted[-1], _anchor(value, base))
    return config


def _anchor(value: Path, base: Path) -> Path:
    return value if value.is_absolute() else base / value
