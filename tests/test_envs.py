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


def lock() -> dict[str, str]:
    """{distribution: version} of constraints.txt, the install lock (names normalised)."""
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            out[normalise(match[1])] = match[2]
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# torch is pinned by the README's commands, not by the lock (a GPU machine keeps its CUDA
# build); every env that holds torch pins this release.
README_TORCH = re.search(r"pip install torch==(\S+) ", (ROOT / "README.md").read_text())[1]


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.stem)
def test_env_pins_are_the_lock(env):
    locked = lock()
    for name, version in pins(env).items():
        want = README_TORCH if name == "torch" else locked.get(normalise(name))
        assert want is not None, f"envs/{env.name} pins {name}, which constraints.txt lacks"
        assert version == want, (
            f"envs/{env.name} pins {name}=={version}, constraints.txt has {want}: "
            "set the env's pin to the lock's version (constraints.txt's header says how)"
        )
    # The package itself is installed without dependencies, after them.
    assert (ROOT / "envs" / f"{env.stem}.post-deploy.sh").exists()


def test_the_install_is_the_lock():
    """What the README's test command installed is exactly constraints.txt (and its torch)."""
    wrong = {}
    for name, version in lock().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            wrong[name] = f"{installed} (lock: {version})"
    torch = importlib.metadata.version("torch").split("+")[0]  # a CUDA build's release
    if torch != README_TORCH:
        wrong["torch"] = f"{torch} (README: {README_TORCH})"
    assert not wrong, (
        f"installed versions differ from the lock: {wrong}; install with the README's "
        'command, `pip install torch==2.13.0 -c constraints.txt -e ".[test]"`'
    )


def test_every_install_command_uses_the_lock():
    """The README's two set-up commands and .ci/run install with constraints.txt."""
    installs = [
        line
        for f in ("README.md", ".ci/run")
        for line in (ROOT / f).read_text().splitlines()
        if "pip install" in line and "-e ." in line.replace('".', ".")
    ]
    assert len(installs) >= 3, installs
    for line in installs:
        assert "-c constraints.txt" in line, line


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
