"""The ``credex`` Typer application: its command groups, the options they share, and the one error boundary.

Every command is registered through :class:`CredexTyper`, which wraps it in
:func:`error_boundary`: an error credex raised on purpose (a
:class:`~credex.errors.CredexError`) is printed as one line ``error: …`` and exits 1, so an operator never
reads a traceback for a mistake they can fix. Anything else is a bug and keeps
its traceback. The command modules (``node``, ``ingest``, ``lookup`` …) only
add commands to the app defined here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import asyncpg
import grpc
import typer
from rich.console import Console
from rich.markup import escape
from typer.models import CommandFunctionType

from credex.crypto.keys import load_public
from credex.crypto.trust import TrustBundle
from credex.errors import CredexError
from credex.node.channels import call_failed
from credex.node.config import NodeConfig, load_config

if TYPE_CHECKING:
    from credex.node.runtime import Node

P = ParamSpec("P")
R = TypeVar("R")

# A pipe or CI log has no width; tables of Chinese text need more than rich's fallback of 80.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` as one line whatever the terminal's width, so scripts and logs can match on it.

    The message is text, never markup: it often quotes what a file or a peer sent.
    """
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, markup=True, highlight=False)
    return typer.Exit(code)


def explain(exc: BaseException) -> str | None:
    """The operator's message for an error raised on purpose, or None for a bug."""
    if isinstance(exc, CredexError):
        return str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):  # a call made without the channel's context to explain it
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot use {exc.filename}: {exc.strerror}"
    return None


def error_boundary(command: Callable[P, R]) -> Callable[P, R]:
    """Run ``command``; turn errors raised on purpose into one ``error:`` line and exit 1."""

    @functools.wraps(command)
    def bounded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            message = explain(exc)
            if message is None:
                raise
            raise fail(message) from None

    return bounded


class CredexTyper(typer.Typer):
    """A Typer whose every command runs inside :func:`error_boundary`."""

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[CommandFunctionType], CommandFunctionType]:
        register = super().command(name, **kwargs)

        def decorator(function: CommandFunctionType) -> CommandFunctionType:
            register(error_boundary(function))
            return function

        return decorator


app = CredexTyper(help="credex: cross-region public-credit data exchange node", no_args_is_help=True)
node_app = CredexTyper(help="run a node", no_args_is_help=True)
tls_app = CredexTyper(help="TLS material: the federation CA and the certificates it issues", no_args_is_help=True)
alarm_app = CredexTyper(help="equivocation alarms: evidence, and clearing it", no_args_is_help=True)
profile_app = CredexTyper(help="platform profiles: how rows map to records", no_args_is_help=True)
quality_app = CredexTyper(help="data quality per source unit", no_args_is_help=True)
keys_app = CredexTyper(help="signing keys", no_args_is_help=True)
trust_app = CredexTyper(help="the federation's trust bundle", no_args_is_help=True)
measures_app = CredexTyper(
    help="the measures catalogue (联合奖惩措施清单): list it, check an edited copy", no_args_is_help=True
)
for _group, _name in (
    (node_app, "node"),
    (tls_app, "tls"),
    (alarm_app, "alarm"),
    (profile_app, "profile"),
    (quality_app, "quality"),
    (keys_app, "keys"),
    (trust_app, "trust"),
    (measures_app, "measures"),
):
    app.add_typer(_group, name=_name)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)


def load_settings(path: Path) -> NodeConfig:
    """The node's settings; a bad file is a :class:`ConfigError`, which the boundary prints."""
    return load_config(path)


# Options shared by every command that talks to a node or checks signatures.
NodeConfigOption = Annotated[Path, typer.Option("--config", "-c", help="the node's node.toml")]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="a node.toml: trust bundle and TLS")]
BundleOption = Annotated[Path | None, typer.Option(help="signed trust bundle (if no --config)")]
FederationKeyOption = Annotated[Path | None, typer.Option(help="federation public key (if no --config)")]
CaOption = Annotated[Path | None, typer.Option(help="federation CA for TLS")]
CertOption = Annotated[Path | None, typer.Option(help="client certificate")]
KeyOption = Annotated[Path | None, typer.Option(help="client key")]

TlsFiles = tuple[Path | None, Path | None, Path | None]


def trust_and_tls(
    config: Path | None,
    bundle: Path | None,
    federation_key: Path | None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> tuple[TrustBundle, TlsFiles]:
    """The verified trust bundle and the client TLS files (each None when not given), from a config or flags.

    The TLS files are handed on as given, even incomplete, so that a refused
    handshake can be explained by what is missing.
    """
    if config is not None:
        settings = load_settings(config)
        bundle, federation_key = bundle or settings.trust.bundle, federation_key or settings.trust.federation_public_key
        tls = settings.grpc.tls
        ca, cert, key = ca or tls.client_ca, cert or tls.cert, key or tls.key
    if bundle is None or federation_key is None:
        raise fail("give --config, or --bundle and --federation-key, to check signatures")
    return TrustBundle.load_signed(bundle, load_public(federation_key)), (ca, cert, key)


def call_node(node: str, tls: TlsFiles, method: str, asked: Coroutine[Any, Any, R]) -> R:
    """Run one call to a node; a refusal becomes the CLI's explanation of what went wrong and how to fix it."""
    ca, cert, key = tls
    try:
        return asyncio.run(asked)
    except grpc.aio.AioRpcError as exc:
        raise call_failed(exc, node, method, ca=ca, cert=cert, key=key) from None


def run_on_store(config: Path, work: Callable[[asyncpg.Pool], Awaitable[R]]) -> R:
    """Run ``work(pool)`` against the node's database (embedded or not), with nothing served."""

    async def on_pool(node: Node) -> R:
        assert node.pool is not None
        return await work(node.pool)

    return run_on_node(config, on_pool)


def run_on_node(config: Path, work: Callable[[Node], Awaitable[R]]) -> R:
    """Run ``work(node)`` with the node's database and ledger (its key, as the bundle allows); nothing served."""
    from credex.node.runtime import Node

    async def run() -> R:
        node = Node(load_settings(config))
        await node.start(serve=False, exchange=False)
        try:
            return await work(node)
        finally:
            await node.stop()

    return asyncio.run(run())
