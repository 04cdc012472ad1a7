"""The catalogue of registered dataset sources, as plain records (``ultrasam data sources``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .sources._base import Source


def describe_source(source: Source) -> dict[str, Any]:
    """One source's spec as a JSON-ready dict (lists instead of tuples)."""
    spec = source.spec
    return {
        "name": spec.name, "aliases": list(spec.aliases), "us43d": spec.us43d,
        "kind": spec.kind, "anatomy": spec.anatomy, "structures": list(spec.structures),
        "licence": spec.licence, "url": spec.url, "citation": spec.citation,
        "native_format": spec.native_format, "real_sample_tests": spec.real_sample_tests,
        "notes": spec.notes,
    }


def describe_sources(sources: Sequence[Source] | None = None) -> list[dict[str, Any]]:
    """Every registered source (registry order) described by :func:`describe_source`."""
    if sources is None:
        from .registry import all_sources
        sources = all_sources()
    return [describe_source(s) for s in sources]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table: name, kind, anatomy, structures, licence, flags."""
    header = ("name", "kind", "anatomy", "structures", "licence", "us43d", "real")
    lines = [[r["name"], r["kind"], r["anatomy"], ",".join(r["structures"]), r["licence"],
              "yes" if r["us43d"] else "no", "yes" if r["real_sample_tests"] else "no"]
             for r in rows]
    widths = [min(40, max(len(str(x)) for x in col)) for col in zip(header, *lines)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()
    total = f"{len(rows)} sources ({sum(r['us43d'] for r in rows)} US-43d)"
    return "\n".join([fmt(header), *(fmt(line) for line in lines), total])


def sources_markdown() -> str:
    """``docs/sources.md``: every registered source as a Markdown table (a test keeps the
    committed page equal to this)."""
    lines = [
        "# Dataset sources", "",
        "Generated from the source registry (`ultrasam data sources --json`). `real tests`: "
        "converted", "in the test suite from real native samples; the others from synthetic "
        "trees that reproduce the", "documented layout. Licences are as published; a mix "
        "inherits the most restrictive terms", "(research use, attribution). Check each "
        "upstream page before redistributing anything.", "",
        "| dataset | aliases | kind | anatomy | structures | licence | US-43d | real tests | url |",
        "|---|---|---|---|---|---|---|---|---|"]

    def cell(text: object) -> str:
        return str(text).replace("|", "/")

    for r in describe_sources():
        lines.append("| " + " | ".join([
            cell(r["name"]), cell(", ".join(r["aliases"])), cell(r["kind"]), cell(r["anatomy"]),
            cell(", ".join(r["structures"])), cell(r["licence"]),
            "yes" if r["us43d"] else "no", "yes" if r["real_sample_tests"] else "no",
            cell(r["url"])]) + " |")
    return "\n".join(lines) + "\n"
