"""Which machine this is, in the words profiles and records carry (read without loading llama.cpp)."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpuinfo_value(keys: tuple[str, ...], cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str | None:
    """The first non-empty value of any of ``keys`` in Linux's cpuinfo; None without one (or the file)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys and value.strip():
            return value.strip()
    return None


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name from Linux's cpuinfo; elsewhere what ``platform`` knows."""
    return cpuinfo_value(("model name",), cpuinfo) or platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux names them (x86 "flags", Arm "Features"); empty without the file."""
    return frozenset((cpuinfo_value(("flags", "Features"), cpuinfo) or "").split())


def machine_name(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """Host, architecture, cores and CPU model. The model is in it because a VM keeps its host
    name when it is started on another CPU, and a profile of one CPU must not price runs on another."""
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {cpu_model(cpuinfo)}"
