"""The conda environments of envs/: pinned to what the tests run with, torch only where needed."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))


def pins(env: Path) -> dict[str, str]:
    """{distribution: version} of an environment's pip section."""
    deps = yaml.safe_load(env.read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    out = {}
    for line in pip:
        name, sep, version = line.partition("==")
        assert sep, f"{env.name}: {line!r} is not pinned with =="
        out[name] = version
    return out


def test_every_rule_uses_an_env_of_envs():
    used = set()
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        used |= set(re.findall(r'"\.\./\.\./envs/(\w+\.yaml)"', smk.read_text()))
    assert used == {e.name for e in ENVS}


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_pins_match_the_installed_versions(env):
    for name, version in pins(env).items():
        installed = importlib.metadata.version(name)
        if name == "torch":
            # A GPU machine keeps its CUDA build (README); compare the release only.
            installed = installed.split("+")[0]
        assert installed == version, (
            f"envs/{env.name} pins {name}=={version}, tests run {installed}"
        )
    # The package itself is installed without dependencies, after them.
    assert (ROOT / "envs" / f"{env.stem}.post-deploy.sh").exists()


@pytest.mark.parametrize(
    "env, modules",
    [
        (
            "plot",
            [
                "forbidden_facts.steps.figures",
                "forbidden_facts.plots",
                # figure_faithfulness and table_faithfulness run in envs/plot, envs/latex.
                "forbidden_facts.steps.faithfulness",
            ],
        ),
        (
            "latex",
            [
                "forbidden_facts.steps.paper",
                "forbidden_facts.tables",
                "forbidden_facts.steps.faithfulness",
            ],
        ),
    ],
)
def test_envs_without_torch_run_steps_that_never_import_it(env, modules):
    assert "torch" not in pins(ROOT / f"envs/{env}.yaml")
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    loaded = set(ast.literal_eval(out))
    assert not loaded & {"torch", "transformers", "tokenizers", "safetensors"}, loaded
    # Every third-party distribution these steps import directly is pinned in the env.
    dists = importlib.metadata.packages_distributions()
    direct = {"numpy", "pandas", "pyarrow", "matplotlib", "seaborn", "scipy", "jinja2", "yaml"}
    for module in loaded & direct:
        assert dists[module][0].lower() in {p.lower() for p in pins(ROOT / f"envs/{env}.yaml")}, (
            module
        )
