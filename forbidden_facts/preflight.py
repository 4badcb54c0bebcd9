"""Checks of the validated config before any job runs, each naming the key and the fix.

`workflow/rules/common.smk` calls them right after validation (forbidden_facts/config.py):
names that must be declared, input files that must exist, local model folders that
need an adapter, example facts, word lists, shard counts.
"""

from __future__ import annotations

import re
from pathlib import Path

from .config import ConfigError


def check_run_names(config: dict) -> None:
    """`run.models` / `run.datasets` must name declared entries; hub models need a repo_id."""
    for key in ("models", "datasets"):
        declared = config[key]
        if not config["run"][key]:
            raise ConfigError(
                f"config run.{key} is empty: there would be nothing to build. Name at least one "
                f"of the declared {key} ({', '.join(sorted(declared))}), e.g. "
                f"`--config 'run={{{key}: [{sorted(declared)[0]}]}}'`."
            )
        for name in config["run"][key]:
            if name not in declared:
                raise ConfigError(
                    f"config run.{key} names {name!r}, which is not declared under `{key}:` "
                    f"(declared: {', '.join(sorted(declared))})"
                )
        named = config.get("run", {}).get(key, [])
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise ConfigError(
                f"config run.{key} names {', '.join(twice)} more than once; each would be "
                f"built once but counted twice in the paper's tables. List each name once, "
                f"e.g. `run.{key}: {list(dict.fromkeys(named))}`."
            )
    for name, model in config["models"].items():
        if model["source"] == "hub" and "repo_id" not in model:
            raise ConfigError(
                f"config models.{name}: a hub model needs `repo_id` (e.g. meta-llama/...)"
            )


def check_bases(config: dict) -> None:
    """Every `models.<name>.base` names another declared model (config already validated)."""
    for name, model in config["models"].items():
        base = model["base"]
        if base is None and model["source"] == "finetune":
            raise ConfigError(
                f"config `models.{name}.base` is null, but a `source: finetune` model is "
                "fine-tuned from its base: set it to a declared model (e.g. "
                "smollm2-135m-instruct)."
            )
        if base is not None and (base not in config["models"] or base == name):
            why = "the model itself" if base == name else "not a declared model"
            raise ConfigError(
                f"config `models.{name}.base` names {base!r}, which is {why} (declared: "
                f"{', '.join(sorted(config['models']))}). Set it to the configured model "
                f"{name} was derived from, or to null for no before/after comparison."
            )


def check_wheel_models(config: dict) -> None:
    """A wheel model names either one wheel (package, version, file, sha256) or its `parts`.

    Both at once would leave it unclear which files the model is made of.
    """
    single = ("package", "version", "file", "sha256")
    for name, model in config["models"].items():
        if model["source"] != "wheel" or "parts" not in model:
            continue
        both = [k for k in single if k in model]
        if both:
            raise ConfigError(
                f"config models.{name} gives `parts` (a GGUF file split across wheels) and also "
                f"{', '.join(both)} (a single wheel). Keep `parts` and `gguf_sha256` and move "
                f"{', '.join(both)} into the list of parts, or drop `parts` for a single wheel."
            )
        packages = [p["package"] for p in model["parts"]]
        twice = sorted({p for p in packages if packages.count(p) > 1})
        if twice:
            raise ConfigError(
                f"config models.{name}.parts lists {', '.join(twice)} more than once; each "
                "wheel holds one slice of the GGUF file, so list each part once, in order."
            )


def check_input_files(config: dict, root: str | Path = ".") -> None:
    """Local files named in config must exist before anything runs (names the key to fix)."""
    root = Path(root)
    needed = [("irrelevant_words", config["irrelevant_words"])]
    for name in config["run"]["datasets"]:
        spec = config["datasets"][name]
        if "path" in spec:
            needed.append((f"datasets.{name}.path", spec["path"]))
    if any(config["models"][m]["source"] == "toy" for m in config["run"]["models"]):
        needed.append(("toy.facts", config["toy"]["facts"]))
        needed.append(("toy.train_words", config["toy"]["train_words"]))
    if config["run"]["paper"]:
        needed.append(("paper.reference", config["paper"]["reference"]))
    for name in config["run"]["models"]:
        model = config["models"][name]
        if model["source"] == "finetune":
            for key in ("facts", "train_words"):
                needed.append((f"models.{name}.finetune.{key}", model["finetune"][key]))
    for key, path in needed:
        if (root / path).is_dir():
            raise ConfigError(
                f"config `{key}` names {path!r}, which is a folder, not a file "
                f"({(root / path).resolve()}). Point it at the file inside it that you meant "
                "(in config/config.yaml or your --configfile)."
            )
        if not (root / path).is_file():
            raise ConfigError(
                f"config `{key}` names {path!r}, which does not exist (relative to {root.resolve()}). "
                "Point it at an existing file in config/config.yaml or your --configfile."
            )


def weight_files_problem(folder: str | Path) -> str | None:
    """Why a model folder's *.safetensors files cannot be the model's weights (None: they can).

    Reads each file's header only (cheap for any size). A file may be a symbolic link
    (a shared cache): its target must exist, be readable and be a safetensors file. The
    message never advises deleting the folder, which may be the user's own.
    """
    from .io import _check_safetensors

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(
            p.name for p in folder.glob("*.pt*")
        )
        found = f" (it holds {', '.join(pickled)}, pickled weights, which are never opened)"
        return (
            f"{folder} has no *.safetensors weights{found if pickled else ''}. Save the model "
            "with `model.save_pretrained(folder)` (safetensors is the default), or convert its "
            "weights to safetensors in a copy of the folder."
        )
    for path in files:
        target = path.resolve()
        link = f" (a link to {target})" if path.is_symlink() else ""
        if not target.exists():
            return (
                f"{path}{link} does not exist: the link is broken. Point it at the model's "
                "weight file, or point the config at a folder holding the weights."
            )
        if not target.is_file():
            return f"{path}{link} is not a file. Point it at the model's weight file."
        try:
            _check_safetensors(path)
        except PermissionError:
            return (
                f"{path}{link} cannot be read by this user. Make it readable (e.g. `chmod a+r`), "
                "or copy the weights to a folder you can read."
            )
        except (OSError, ValueError, UnicodeDecodeError) as err:
            return (
                f"{path}{link} is not a safetensors weight file ({err}). Put the model's own "
                "weights there (the workflow never changes this folder), or point the config "
                "at another folder."
            )
    return None


def check_local_models(config: dict, root: str | Path = ".") -> None:
    """Every `source: local` model that will run names a model folder of a supported family.

    Read before any job runs: the folder must hold a config.json whose ``model_type`` has
    an adapter (forbidden_facts/architectures.py) and at least one safetensors file.
    """
    from .architectures import UnsupportedArchitecture, check_model_type
    from .model_folder import check_no_remote_code, model_type_of_dir

    root = Path(root)
    # The models of `run` and, along their `base` chains, those they are derived from.
    needed = list(config.get("run", {}).get("models", []))
    for name in needed:
        base = config["models"][name].get("base")
        if base in config["models"] and base not in needed:
            needed.append(base)
    for name in needed:
        spec = config["models"][name]
        if spec["source"] != "local":
            continue
        path = root / spec["path"]
        key = f"models.{name}.path"
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"config `{key}` names {spec['path']!r}, which is not a model folder (no "
                f"config.json in {path.resolve()}). Point it at a Hugging Face model folder "
                "(config.json, *.safetensors, tokenizer files)."
            )
        problem = weight_files_problem(path)
        if problem:
            raise ConfigError(f"config `{key}` ({spec['path']!r}): {problem}")
        try:
            check_no_remote_code(path, f"model {name!r} (config `{key}`)")
            check_model_type(model_type_of_dir(path), f"model {name!r} (config `{key}`)")
        except UnsupportedArchitecture as err:
            raise ConfigError(str(err)) from err


# An archive tag becomes part of a file name: results/archive/forbidden-facts-<tag>.tar.gz.
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_names(config: dict, root: str | Path = ".") -> None:
    """Every config value that names something must name something that exists.

    Checked before any job runs: `model_card_dataset` must be a declared dataset,
    `paper.tag` must be a plain file-name part, and `heads.example_fact` must be a
    fact_id of every local dataset in `run.datasets` (a downloaded one is checked
    once its file is there).
    """
    datasets = config["datasets"]
    card = config["model_card_dataset"]
    if card not in datasets:
        raise ConfigError(
            f"config `model_card_dataset` names {card!r}, which is not declared under "
            f"`datasets:` (declared: {', '.join(sorted(datasets))}). Set it to one of those."
        )
    tag = config["paper"]["tag"]
    if tag is not None and (not _TAG.fullmatch(str(tag)) or ".." in str(tag)):
        raise ConfigError(
            f"config `paper.tag` is {tag!r}: a tag becomes part of the archive's file name, so "
            "it may hold only letters, digits and . _ + - (no '/', no '..', not starting with "
            "'.' or '-'), e.g. `paper: {tag: v1.0}`."
        )
    fact = config["heads"]["example_fact"]
    if fact is None:
        return
    from .datasets import load_facts

    root = Path(root)
    for name in config["run"]["datasets"]:
        spec = datasets[name]
        path = root / spec["path"] if "path" in spec else root / f"resources/datasets/{name}/source"
        if not path.is_file():
            continue  # downloaded later; the heads step reports it then
        fmt = spec.get("format") or (None if "path" in spec else "counterfact")
        ids = set(load_facts(path, fmt)["fact_id"].astype(str))
        if str(fact) not in ids:
            raise ConfigError(
                f"config `heads.example_fact` is {fact!r}, which is no fact_id of dataset "
                f"{name!r} ({path}, {len(ids)} facts, e.g. {', '.join(sorted(ids)[:3])}). "
                "Set it to a fact_id of that file, or to null for the first kept fact."
            )


def _archived_run(archive: Path) -> dict | None:
    """The `run` block recorded in an archive's provenance.json (None if unreadable)."""
    import json
    import tarfile

    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # provenance.json is the second member: read no further
                if member.name.endswith("/provenance.json") and member.name.count("/") == 1:
                    fh = tar.extractfile(member)
                    run = json.loads(fh.read()).get("config", {}).get("run") if fh else None
                    return run if isinstance(run, dict) else None
    except (OSError, tarfile.TarError, EOFError, ValueError, AttributeError):
        return None
    return None


def check_archive_owner(config: dict, archive: str | Path) -> None:
    """Refuse to overwrite the archive of another run (other models or datasets) under one tag.

    The one-minute try (config/test.yaml) and the default run once shared a tag, and the
    try replaced the default run's archive and its .sha256.
    """
    archive = Path(archive)
    if not config["run"]["paper"] or not archive.is_file():
        return
    old = _archived_run(archive)
    if old is None:
        return
    new = {k: list(config["run"][k]) for k in ("models", "datasets")}
    was = {k: list(old.get(k) or []) for k in ("models", "datasets")}
    if {k: sorted(v) for k, v in was.items()} != {k: sorted(v) for k, v in new.items()}:
        raise ConfigError(
            f"{archive} is the archive of another run (models {was['models']}, datasets "
            f"{was['datasets']}); this run (models {new['models']}, datasets {new['datasets']}) "
            "would overwrite it and its .sha256. Give this run its own tag, e.g. "
            "`--config 'paper={tag: mytry}'` (or `paper: {tag: ...}` in your --configfile), "
            "or move that archive and its .sha256 elsewhere first."
        )


def check_word_files(config: dict, root: str | Path = ".") -> None:
    """The irrelevant-words files must hold words before any model is trained or run."""
    from .datasets import DatasetError, read_words

    keys = ["irrelevant_words"]
    if any(config["models"][m]["source"] == "toy" for m in config["run"]["models"]):
        keys.append("toy.train_words")
    for key in keys:
        path = config["toy"]["train_words"] if key == "toy.train_words" else config[key]
        try:
            read_words(Path(root) / path)
        except DatasetError as err:
            raise ConfigError(f"config `{key}`: {err}") from None


def check_scatter(overrides: dict, known: tuple[str, ...] = ("attribution",)) -> None:
    """`--set-scatter attribution=N` must name a scatter of the workflow and give at least one shard."""
    for name, n in (overrides or {}).items():
        if name not in known:
            raise ConfigError(
                f"--set-scatter {name}={n}: the workflow has no scatter named {name!r} (it has "
                f"{', '.join(known)}), so the option would be ignored. Write e.g. "
                f"`--set-scatter {known[0]}={n}`."
            )
        if int(n) < 1:
            raise ConfigError(
                f"--set-scatter {name}={n}: the facts must go into at least one shard. "
                f"Give {name}=1 or more, or leave the option out to use the config's "
                "`attribution.shards`."
            )


def check_words_usable(config: dict, root: str | Path = ".") -> None:
    """Some irrelevant word must be no substring of a local dataset's answers (before training).

    The prompts step refuses such a word list; checked here too, so that the
    organism is not retrained first.
    """
    from .datasets import load_facts, read_words
    from .prompts import irrelevant_word_candidates

    words = read_words(Path(root) / config["irrelevant_words"])
    for name in config["run"]["datasets"]:
        spec = config["datasets"][name]
        if "path" not in spec or not (Path(root) / spec["path"]).is_file():
            continue
        facts = load_facts(Path(root) / spec["path"], spec.get("format"))
        if spec.get("max_facts"):
            facts = facts.head(spec["max_facts"])
        answers = list(facts["answer"]) + list(facts["wrong_answer"])
        if not irrelevant_word_candidates(words, answers):
            raise ConfigError(
                f"config `irrelevant_words` ({config['irrelevant_words']}): every one of its "
                f"{len(words)} words is a substring of some answer of dataset {name!r} "
                f"({spec['path']}), so no fact would get an irrelevant word. Add everyday words "
                "to that file, or point `irrelevant_words` at another (e.g. data/paper_words.csv)."
            )
