#!/usr/bin/env bash
# Snakemake runs this once in the new environment, from the workflow's directory: the
# forbidden_facts package itself, without its dependencies. Those are pinned in the
# environment's .yaml (installing the package with them would pull torch into every
# environment).
set -euo pipefail
python -m pip install --no-deps -e .
