"""The ``serve`` verb: the browser annotation app (extra ``ultrasam[serve]``)."""

from __future__ import annotations

import argparse

FORMATS = ("sam", "medsam", "ultrasam", "native")


def _serve(args: argparse.Namespace) -> int:
    from ..serve.app import serve
    from ..serve.settings import ServeSettings

    settings = ServeSettings(
        host=args.host, port=args.port, token=args.token, max_upload_mb=args.max_upload_mb,
        max_frame_pixels=args.max_frame_pixels, max_decoded_mb=args.max_decoded_mb,
        cache_mb=args.cache_mb, max_images=args.max_images, model_threads=args.model_threads,
        torch_threads=args.torch_threads, max_batch=args.max_batch,
        precision=args.precision)
    serve(args.checkpoint, settings, format=args.format, device=args.device)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..inference.precision import PRECISIONS  # torch-free at import, like the settings
    from ..serve.settings import ServeSettings  # no torch: cheap to import here

    d = ServeSettings()  # the library's defaults are the only defaults
    p = sub.add_parser("serve", help="annotate ultrasound in the browser (local web app)",
                       description="Serve the annotation page and its HTTP API (OpenAPI at "
                                   "/docs). Binds 127.0.0.1 unless --host is given, which then "
                                   "needs --token.")
    p.add_argument("--checkpoint", help="checkpoint file or native folder (default: bundled)")
    p.add_argument("--format", choices=FORMATS, help="checkpoint format (default: detected)")
    p.add_argument("--host", default=d.host, help=f"address to bind (default {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    p.add_argument("--token", help="secret every request must carry; required for a "
                                   "non-loopback --host")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-mb", type=float, default=d.cache_mb,
                   help=f"memory cap of the frame/embedding cache (default {d.cache_mb:g})")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb,
                   help=f"largest upload accepted (default {d.max_upload_mb:g})")
    p.add_argument("--max-frame-pixels", type=int, default=d.max_frame_pixels,
                   help=f"largest frame, rows x columns (default {d.max_frame_pixels:,})")
    p.add_argument("--max-decoded-mb", type=float, default=d.max_decoded_mb,
                   help=f"largest volume decoded at once (default {d.max_decoded_mb:g})")
    p.add_argument("--max-images", type=int, default=d.max_images,
                   help=f"images kept at once; least recently used dropped (default "
                        f"{d.max_images})")
    p.add_argument("--model-threads", type=int, default=d.model_threads,
                   help=f"threads running the model (default {d.model_threads}: one stays free "
                        "for prompts while another embeds a frame)")
    p.add_argument("--torch-threads", type=int, default=d.torch_threads,
                   help="intra-op threads per model thread (default: torch's threads divided "
                        "among the model threads)")
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help=f"most prompts decoded in one model call (default {d.max_batch})")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="model arithmetic (default auto: bf16 autocast on a CPU with native "
                        "bf16, 1.6-2.0x faster per prompt; fp32 elsewhere)")
    p.set_defaults(func=_serve)
