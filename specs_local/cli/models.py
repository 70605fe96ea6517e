"""`specs-local models`: see, fetch, locate and check the preset model files."""

from __future__ import annotations

import functools

import click

from ..errors import SpecsError
from ..presets import (
    DEFAULT_PRESET,
    ROLES,
    is_offline,
    list_presets,
    load_preset,
    resolve_role,
    role_status,
    verify_cache,
)


def _one_line_errors(command):
    """Turn project errors into click's `Error: ...` and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SpecsError as err:
            raise click.ClickException(str(err)) from None

    return wrapper


@click.group("models")
def models() -> None:
    """Model presets: list them, pull their files, print paths, verify the cache."""


@models.command("list")
@_one_line_errors
def list_command() -> None:
    """Presets, and where each role's file is or would come from."""
    for name in list_presets():
        preset = load_preset(name)
        default = " (default)" if name == DEFAULT_PRESET else ""
        click.echo(f"{name}{default}: {preset.description}; method {preset.method}")
        for role in ROLES:
            status = role_status(preset, role)
            if status.source == "uses":
                click.echo(f"  {role:<7} same file as {status.detail} ({preset.reward_kind})")
                continue
            kind = f" ({preset.reward_kind})" if role == "reward" else ""
            off = " [downloads off: HF_HUB_OFFLINE]" if status.source == "download" and is_offline() else ""
            click.echo(f"  {role:<7} {status.source:<9}{status.detail}{kind}{off}")


@models.command("pull")
@click.argument("preset")
@_one_line_errors
def pull_command(preset: str) -> None:
    """Fetch or assemble every file of PRESET into the cache."""
    chosen = load_preset(preset)
    for role in filter(chosen.has_role, ROLES):
        click.echo(f"{role}: {resolve_role(preset, role, progress=True)}")


@models.command("path")
@click.argument("preset")
@click.argument("role", type=click.Choice(ROLES))
@_one_line_errors
def path_command(preset: str, role: str) -> None:
    """Print the local file of ROLE in PRESET (fetching it if need be)."""
    click.echo(resolve_role(preset, role, progress=True))


@models.command("verify")
@_one_line_errors
def verify_command() -> None:
    """Re-hash the cached model files; remove any that fail."""
    results = verify_cache(progress=True)
    if not results:
        click.echo("no model files in the cache")
        return
    for result in results:
        click.echo(f"{result.state:<8} {result.path}")
    failed = [result for result in results if result.state == "mismatch"]
    if failed:
        raise click.ClickException(
            f"{len(failed)} file(s) did not match their sha256 and were removed; "
            "`specs-local models pull PRESET` fetches them again"
        )
