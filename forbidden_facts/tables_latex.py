"""LaTeX rendering of the paper's numbers: escaping, number formats, macros, templates.

`forbidden_facts.tables` gathers the values; this module only writes them as LaTeX.
``values.tex`` is generated from `tables.paper_context`: every number of a run
(named in `forbidden_facts.artifacts`) becomes a macro named after it (``total_effect`` -> ``\\TotalEffect`` for
the first run, ``\\ToyCuratedTotalEffect`` for every run, ``\\PaperTotalEffect`` for
the paper model the first run is compared with, ``\\PaperLlamaTwoSevenBChatNStar``
for every paper model), formatted by the rules of `FORMATS`. The tables and the
sentences of the text (``findings.tex``) are jinja2 templates in
``paper/templates/``, which use LaTeX-friendly delimiters so braces and ``%`` stay
LaTeX's: ``((( x )))`` prints, ``((* for ... *))`` is a block, ``((= ... =))`` a
comment. Numbers go through the ``fmt`` filter ("--" when missing), text through
``e`` (`latex_escape`).
"""

from __future__ import annotations

import math
import numbers
import os
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import jinja2

MISSING = "--"

_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # Not special to TeX, but ligatures or odd glyphs in T1 text.
    "-": "-{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    '"': r"\textquotedbl{}",
    "`": r"\textasciigrave{}",
    "'": r"\textquotesingle{}",
}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return not math.isfinite(float(value))
    return False


def latex_escape(value: Any) -> str:
    """Escape text for LaTeX (pdflatex, T1 fonts); "--" for a missing value.

    Escapes ``_ % & # $ { } ~ ^ \\`` and a few characters that T1 fonts turn into
    ligatures. Model tokens can be anything: SentencePiece's word marker "▁" and
    byte-level BPE's "Ġ" become a visible space, control characters their escape
    sequence, and characters pdflatex cannot typeset ``<U+XXXX>``.

    Example:
        >>> latex_escape("L18H9ATN_x & 5%")
        'L18H9ATN\\\\_x \\\\& 5\\\\%'
    """
    if _missing(value):
        return MISSING
    out = []
    for ch in str(value):
        if ch in _SPECIALS:
            out.append(_SPECIALS[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        elif ch in ("\u2581", "\u0120"):
            out.append(r"\textvisiblespace{}")
        elif ch == "\n":
            out.append(r"\textbackslash{}n")
        elif ch == "\t":
            out.append(r"\textbackslash{}t")
        elif "\u00c0" <= ch <= "\u00ff" and unicodedata.category(ch).startswith("L"):
            out.append(ch)  # Latin-1 letters: T1 fonts have them
        else:
            out.append(rf"\textless{{}}U+{ord(ch):04X}\textgreater{{}}")
    # "-{}" only matters before another "-"; keep plain hyphens readable elsewhere.
    return re.sub(r"-\{\}(?!-)", "-", "".join(out))


def _number(text: str) -> str:
    # A minus sign, not a hyphen, in text and in math mode alike.
    return r"\ensuremath{-}" + text[1:] if text.startswith("-") else text


def fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
    """Format a measured number for a table or the text; "--" when it is missing.

    Example:
        >>> fmt(-0.3651, 3), fmt(None), fmt(4251), fmt(0.953, 1, percent=True)
        ('\\\\ensuremath{-}0.365', '--', '4251', '95.3\\\\%')
    """
    if _missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral) and not percent:
        return _number(str(int(value)))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return latex_escape(value)
    if percent:
        x *= 100
    text = f"{x:.{digits}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return _number(text) + (r"\%" if percent else "")


def sig(value: Any, digits: int = 2) -> str:
    """Format a number with `digits` significant digits, as a power of ten when tiny.

    Example:
        >>> sig(1.0074e-06), sig(0.4123), sig(None)
        ('\\\\ensuremath{1.0\\\\times10^{-6}}', '0.41', '--')
    """
    if _missing(value):
        return MISSING
    x = float(value)
    if x != 0 and abs(x) < 1e-3:
        mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
        return rf"\ensuremath{{{mantissa}\times10^{{{int(exponent)}}}}}"
    return _number(f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits}f}")


def pfmt(value: Any, percent: bool = False) -> str:
    """Format a published number as the paper states it (no added digits).

    Example:
        >>> pfmt(0.0086), pfmt(-2.5), pfmt(0.15, percent=True)
        ('0.0086', '\\\\ensuremath{-}2.5', '15\\\\%')
    """
    if _missing(value):
        return MISSING
    if isinstance(value, str):
        return latex_escape(value)
    x = float(value) * (100 if percent else 1)
    return _number(format(round(x, 6), "g")) + (r"\%" if percent else "")


# How each number prints, by its key (first match wins; other floats: 2 decimals).
FORMATS: list[tuple[str, dict]] = [
    (r"ratio", {"digits": 1}),
    (r"frac|share|flipped|_p_(before|after)$", {"digits": 1, "percent": True}),
    (r"attn", {"digits": 4}),
    (r"top_component_mean", {"digits": 3}),
    (r"n_star_ci", {"digits": 0}),
]
# Text values shortened for a line: 12 hex digits identify a file or commit.
_HASHES = ("model_revision", "dataset_sha")


def _format_for(key: str) -> dict:
    return next((spec for pattern, spec in FORMATS if re.search(pattern, key)), {})


def format_value(key: str, value: Any, published: bool = False) -> str | None:
    """One value as LaTeX by the rules of `FORMATS`; None for flags and lists (not macros)."""
    if isinstance(value, bool | list | dict):
        return None
    if key.endswith("overshoot") and not published:
        return sig(value)
    spec = _format_for(key)
    if isinstance(value, str):
        value = value.strip() or None  # an inserted " from X" reads without its space
    if isinstance(value, str) or value is None and not spec:
        if isinstance(value, str) and key in _HASHES:
            value = re.sub(r"^(sha256:)?([0-9a-f]{12})[0-9a-f]+$", r"\1\2", value)
        return latex_escape(value)
    if published:
        return pfmt(value, percent=spec.get("percent", False))
    return fmt(value, **spec)


_DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")


def slug(name: str) -> str:
    """A letters-only CamelCase name usable in a LaTeX macro.

    Example:
        >>> slug("llama2-7b-chat"), slug("total_effect")
        ('LlamaTwoSevenBChat', 'TotalEffect')
    """
    words = []
    for part in re.findall(r"[A-Za-z]+|\d", name):
        words.append(_DIGITS[int(part)] if part.isdigit() else part[0].upper() + part[1:])
    if not words:
        raise ValueError(f"cannot make a LaTeX macro name from {name!r}")
    return "".join(words)


def run_slug(entry: Mapping) -> str:
    """The macro prefix of a run: its model and dataset names (``ToyCurated``)."""
    return slug(entry["model"]) + slug(entry["dataset"])


def macros(context: Mapping) -> dict[str, str]:
    """Every macro of values.tex: name (letters only) -> LaTeX text.

    Args:
        context: `forbidden_facts.tables.paper_context`.
    """
    out: dict[str, str] = {}

    def add(prefix: str, values: Mapping, published: bool = False) -> None:
        for key, value in values.items():
            text = format_value(key, value, published)
            if text is None:
                continue
            name = prefix + slug(key)
            if name in out:
                raise ValueError(
                    f"two values share the macro \\{name}; rename a model or dataset in config "
                    "`models`/`datasets` so that their names differ in letters and digits"
                )
            out[name] = text

    runs = context["runs"]
    add("", runs[0]["numbers"])
    add("Paper", runs[0]["paper"], published=True)
    for entry in runs:
        add(run_slug(entry), entry["numbers"])
    for name, numbers_ in context["paper_models"].items():
        add("Paper" + slug(name), numbers_, published=True)
    out["PaperSource"] = latex_escape(context["source"])
    out["PaperDataset"] = latex_escape(context["paper_dataset"])
    out["NRuns"] = fmt(len(runs))
    out["RunList"] = ", ".join(
        f"{latex_escape(e['model'])}/{latex_escape(e['dataset'])}" for e in runs
    )
    bad = [k for k in out if not re.fullmatch(r"[A-Za-z]+", k)]
    if bad:
        raise ValueError(f"macro names must be letters only: {bad}")
    return out


def values_tex(context: Mapping) -> str:
    """values.tex: one ``\\newcommand{\\Name}{text}`` per value the paper uses."""
    first = context["runs"][0]
    lines = [
        "% Generated by rule `tables` (forbidden_facts.tables_latex.values_tex); do not edit.",
        f"% Unprefixed macros: {first['model']} / {first['dataset']} (the first run of config run).",
    ]
    lines += [rf"\newcommand{{\{name}}}{{{text}}}" for name, text in macros(context).items()]
    return "\n".join(lines) + "\n"


def parse_values_tex(text: str) -> dict[str, str]:
    """The macros of a values.tex (the inverse of `values_tex`, for tests and checks)."""
    return dict(re.findall(r"^\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}$", text, flags=re.M))


def environment(template_dir: str | os.PathLike) -> jinja2.Environment:
    """A jinja2 environment whose delimiters do not clash with LaTeX."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.fspath(template_dir)),
        block_start_string="((*",
        block_end_string="*))",
        variable_start_string="(((",
        variable_end_string=")))",
        comment_start_string="((=",
        comment_end_string="=))",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(e=latex_escape, fmt=fmt, pfmt=pfmt, sig=sig, slug=slug, run_slug=run_slug)
    return env


def render(template: str | os.PathLike, context: Mapping) -> str:
    """Render one template file (``paper/templates/<name>.tex.j2``) with `context`."""
    path = os.fspath(template)
    env = environment(os.path.dirname(path) or ".")
    return env.get_template(os.path.basename(path)).render(**context)
