"""``ultrasam data``: list sources, build a corpus, split an existing one, pack it for training."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _caps(values: list[str] | None) -> dict[str, int]:
    caps: dict[str, int] = {}
    for v in values or []:
        name, sep, n = v.partition("=")
        if not sep or not name or not n.strip().isdigit():
            raise ValueError(f"--cap expects DATASET=N with N >= 0, got {v!r}")
        caps[name] = int(n)
    return caps


def _sources(args: argparse.Namespace) -> int:
    from ..data.catalogue import describe_sources, format_table

    rows = describe_sources()
    print(json.dumps(rows, indent=1, sort_keys=True) if args.json else format_table(rows))
    return 0


def _summary(manifest: dict[str, Any]) -> str:
    splits = ", ".join(f"{s} {v['images']}" for s, v in manifest["splits"].items())
    return (f"{len(manifest['datasets'])} datasets; images: {splits}; "
            f"{len(manifest['warnings'])} warnings (see manifest.json)")


def _build(args: argparse.Namespace) -> int:
    """Build, print the per-dataset table; exit 1 when a requested dataset failed or is empty."""
    import sys

    from ..data.corpus import BuildFailed, build_corpus
    from ..data.manifest import failed_datasets, format_conversion_table

    try:
        manifest = build_corpus(Path(args.sources_dir), Path(args.out), only=args.only,
                                seed=args.seed)
    except BuildFailed as e:
        print(format_conversion_table({r.dataset: r.as_dict() for r in e.results}))
        print(f"error: {e}", file=sys.stderr)
        return 1
    conversion = manifest.get("conversion", {})
    print(format_conversion_table(conversion))
    print(_summary(manifest))
    failed = failed_datasets(conversion)
    if failed:
        print(f"error: {len(failed)} requested dataset(s) failed or converted nothing: "
              f"{', '.join(failed)} (see the table above and manifest.json)", file=sys.stderr)
        return 1
    return 0


def _split(args: argparse.Namespace) -> int:
    from ..data.corpus import split_corpus

    manifest = split_corpus(Path(args.corpus_dir), Path(args.out) if args.out else None,
                            seed=args.seed)
    print(_summary(manifest))
    return 0


def _pack(args: argparse.Namespace) -> int:
    from ..data.pack import pack

    meta = pack(Path(args.source), Path(args.out), max_side=args.max_side, quality=args.quality,
                split=args.split, caps=_caps(args.cap))
    print(f"{meta['samples']} samples, {meta['instances']} instances, "
          f"{meta['pack_bytes_total'] / 2**20:.2f} MiB in {len(meta['shards'])} shards")
    return 0


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="dataset sources, corpus building, packs")
    verbs = data.add_subparsers(dest="data_command", metavar="VERB")
    data.set_defaults(func=lambda _args: data.print_help() or 2)

    p = verbs.add_parser("sources", help="list every registered dataset source")
    p.add_argument("--json", action="store_true", help="print a JSON list of source records")
    p.set_defaults(func=_sources)

    p = verbs.add_parser("build", help="convert native datasets into a split COCO corpus")
    p.add_argument("sources_dir", metavar="SOURCES_DIR",
                   help="one folder per dataset, named by a source name or alias")
    p.add_argument("--out", required=True, metavar="CORPUS_DIR")
    p.add_argument("--only", nargs="+", metavar="NAME", help="convert only these sources")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.set_defaults(func=_build)

    p = verbs.add_parser("split", help="filter, dedup, split, merge and manifest an existing "
                                       "corpus without re-converting")
    p.add_argument("corpus_dir", metavar="CORPUS_DIR")
    p.add_argument("--out", metavar="DIR",
                   help="write merges, lodo/ and manifest here (default: CORPUS_DIR)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.set_defaults(func=_split)

    p = verbs.add_parser("pack", help="write a compact sharded training pack")
    p.add_argument("source", metavar="CORPUS_OR_COCO")
    p.add_argument("--max-side", type=int, required=True, help="longest side in pixels")
    p.add_argument("--quality", type=int, required=True, help="JPEG quality 1-100")
    p.add_argument("--split", choices=("train", "val", "test"))
    p.add_argument("--cap", action="append", metavar="DATASET=N",
                   help="keep at most N images of DATASET, evenly spaced (repeatable)")
    p.add_argument("--out", required=True, metavar="PACK")
    p.set_defaults(func=_pack)
