"""``specs-local serve``: the loaded models behind an OpenAI-compatible HTTP API."""
from __future__ import annotations

import ipaddress

import click

from ..solver_options import build_solver
from . import search_options


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def split_list(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    """A repeatable option whose values may also be comma-separated lists (a list in a config file)."""
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def load_solver(opts: dict, max_n: int):
    """The solver ``serve`` runs: the models reserve sequence slots at load for the largest
    n a request may ask for; the flags' n stays the default."""
    return build_solver(opts, reserve={"n": max_n})


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (others need --api-key).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--api-key", envvar="SPECS_LOCAL_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' (or set $SPECS_LOCAL_API_KEY).")
@click.option("--max-queue", type=click.IntRange(0), default=8, show_default=True,
              help="Requests that may wait while one search runs; more get 503.")
@click.option("--max-n", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Largest specs.n a request may ask for (sequence slots are reserved at load).")
@click.option("--allowed-hosts", multiple=True, callback=split_list, metavar="NAMES",
              help="Host names requests may be addressed to, besides localhost, 127.0.0.1, [::1] and --host "
                   "(comma-separated or repeated; * allows any). Others get 403: a guard against DNS rebinding.")
@click.option("--allowed-origins", multiple=True, callback=split_list, metavar="ORIGINS",
              help="Browser origins (scheme://host:port) whose pages may call the server, with CORS answers "
                   "(comma-separated or repeated; * allows any). Requests with any other Origin get 403.")
@search_options
def serve(host, port, api_key, max_queue, max_n, allowed_hosts, allowed_origins, **opts):
    """Serve the models over an OpenAI-compatible API; the search flags are the defaults."""
    if not is_loopback(host) and not api_key:
        raise click.ClickException(
            f"refusing to bind {host} without --api-key (only loopback addresses may go without)")
    try:
        from ..server import serve as run_server
    except ImportError as err:
        raise click.ClickException(f"the server needs the server extra ({err.name} is missing): "
                                   "pip install 'specs-local[server]'")
    solver = load_solver(opts, max_n)
    try:
        run_server(solver, preset=opts["preset"], host=host, port=port, api_key=api_key, max_queue=max_queue,
                   allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    finally:
        solver.close()
