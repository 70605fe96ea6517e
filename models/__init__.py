"""Preset manifests (one TOML file per preset), installed as ``specs_local.models``.

This folder holds data only; :mod:`specs_local.presets` reads it.
"""
