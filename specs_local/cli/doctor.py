"""``specs-local doctor``: the command to run when something is wrong."""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import cpu_repack_option


def print_report(report: dict) -> None:
    cpu, build = report["cpu"], report["llama_cpp"]
    amx = f", AMX flags {' '.join(cpu['amx_flags'])}" if cpu["amx_flags"] else ", no AMX"
    click.echo(f"specs-local {report['specs_local']}, Python {report['python']}, {report['platform']}")
    click.echo(f"CPU: {cpu['model']}, {cpu['cores']} cores{amx}")
    click.echo(f"llama.cpp: llama-cpp-python {build['llama_cpp_python']}, GPU offload "
               f"{'yes' if build['gpu_offload'] else 'no'}; {build['system_info']}")
    offered = ", ".join(report["extra_buffer_types"]) or "none"
    click.echo(f"CPU weight layouts offered: {offered}; --cpu-repack {report['cpu_repack']}")
    for entry in report["models"]:
        match = {True: "matches the preset", False: "DOES NOT match the preset", None: "no recorded hash"}
        click.echo(f"{entry['role']}: {entry['path']}")
        click.echo(f"  sha256 {entry['sha256']} ({match[entry['sha256_matches']]})")
        for check in entry.get("decode", []):
            state = "ok" if check["ok"] else "FAILED"
            buffers = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in check["weight_buffers"].items())
            shown = repr(check["detail"]) if check["ok"] else check["detail"]
            click.echo(f"  decode with --cpu-repack {check['mode']}: {state} in {check['seconds']:.1f} s: {shown}"
                       + (f" [{buffers}]" if buffers else ""))
    for marker in report["earlier_unclean_exits"]:
        click.echo(f"earlier run ended without exiting: specs-local {marker.get('command')} (pid {marker['pid']})")
    if report["ok"]:
        click.echo("All checks passed.")
    for problem in report["problems"]:
        click.echo(f"problem: {problem}")


@click.command()
@click.option("--preset", default="small", show_default=True,
              help="Preset whose model files are checked (not with --model, unless given too).")
@click.option("--model", "models", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Check this GGUF file (repeatable).")
@cpu_repack_option()
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads of the decode checks.")
@click.option("--no-decode", is_flag=True, help="Skip the decode checks (no model is loaded).")
@click.option("--timeout", type=click.FloatRange(1), default=300, show_default=True,
              help="Seconds a decode check may take.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(preset, models, cpu_repack, threads, no_decode, timeout, as_json):
    """Check this machine: the llama.cpp build, the CPU weight layout, the model files and
    their hashes, and one decode of each model in a child process, so that a crash there is
    reported, not fatal. Exits 1 when a check fails."""
    from ..doctor import diagnose

    explicit = click.get_current_context().get_parameter_source("preset") != click.core.ParameterSource.DEFAULT
    report = diagnose(preset if explicit or not models else None, cpu_repack, models=[str(m) for m in models], threads=threads, decode=not no_decode,
                      timeout=timeout)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
    else:
        print_report(report)
    if not report["ok"]:
        raise SystemExit(1)
