"""Artifacts on disk: json summaries are strict json."""

import json

import numpy as np

from forbidden_facts import io


def test_undefined_means_are_written_as_null_not_nan(tmp_path):
    path = tmp_path / "summary.json"
    summary = {
        "total_effect_log10": float("nan"),
        "by_relation": {"a": {"mean": np.float64("nan"), "n": np.int64(3)}, "b": {"mean": 1.5}},
        "curve": [1.0, float("inf"), np.float32(2.0)],
    }
    io.write_json(path, summary, provenance={"model": "toy"})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    # a strict reader (no NaN constants) accepts it
    data = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert data["total_effect_log10"] is None
    assert data["by_relation"] == {"a": {"mean": None, "n": 3}, "b": {"mean": 1.5}}
    assert data["curve"] == [1.0, None, 2.0]
    assert data["provenance"] == {"model": "toy"}


def _tree(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_replacing_dir_swaps_in_the_new_folder_and_leaves_nothing_beside_it(tmp_path):
    import os
    import stat

    dest = tmp_path / "models" / "m"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old")
    # left by a run killed outright: a work folder and a moved-aside old folder
    (dest.parent / ".m.abcd1234").mkdir()
    (dest.parent / ".m.old.4242").mkdir()
    (dest.parent / ".m.keep-me").mkdir()  # not a temporary of ours: kept
    with io.replacing_dir(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(".m.")
        assert _tree(dest) == {"old.txt": b"old"}  # the old folder stays until the end
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
    assert _tree(dest) == {"sub/new.txt": b"new"}
    assert sorted(p.name for p in dest.parent.iterdir()) == [".m.keep-me", "m"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


def test_replacing_dir_keeps_the_old_folder_when_the_build_fails(tmp_path):
    import pytest

    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "weights").write_bytes(b"old weights")
    for exc in (RuntimeError("conversion failed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with io.replacing_dir(dest) as tmp:
                (tmp / "weights").write_bytes(b"half")
                raise exc
        assert _tree(dest) == {"weights": b"old weights"}
        assert [p.name for p in tmp_path.iterdir()] == ["m"]
    # without an old folder, a failed build leaves no folder at all
    with pytest.raises(RuntimeError):
        with io.replacing_dir(tmp_path / "new") as tmp:
            raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_model_saved_into_replacing_dir_gets_the_mode_of_every_other_artifact(tmp_path):
    # Issue 30, defect 9: save_pretrained writes model.safetensors through a temporary
    # file, 0600, so the organism's and fine-tune's weights were unreadable to the group.
    import os
    import stat

    from tests.conftest import tiny_llama

    umask = os.umask(0o022)
    try:
        dest = tmp_path / "resources/models/toy"
        with io.replacing_dir(dest) as tmp:
            tiny_llama(4).save_pretrained(tmp, safe_serialization=True)
        io.write_json(tmp_path / "summary.json", {"a": 1})
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in dest.iterdir()}
    assert modes["model.safetensors"] == 0o644, modes
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "summary.json").stat().st_mode) == 0o644
