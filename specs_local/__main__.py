"""``python -m specs_local``: the specs-local command without its console script
(for a machine where the package is on PYTHONPATH but not installed)."""
from .cli import main

main(prog_name="specs-local")
