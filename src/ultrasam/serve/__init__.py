"""``ultrasam serve``: a local web app to annotate ultrasound in the browser, click by click.

Optional extra ``ultrasam[serve]`` (FastAPI, uvicorn, python-multipart). Nothing is imported
here: :func:`ultrasam.serve.app.create_app` builds the ASGI app around a loaded model and
:func:`ultrasam.serve.app.serve` runs it (the ``ultrasam serve`` verb).

Modules, one concept each: ``settings`` (limits and binding), ``guard`` (token, host, origin
and body-size checks as ASGI middleware), ``probe`` (content-sniffed upload validation before any
pixel is decoded), ``lru`` (a byte-bounded LRU), ``store`` (uploaded images, decoded frames,
embeddings and masks), ``worker`` (the one thread that runs the model), ``measure`` (area and
largest diameter), ``export`` (PNG, COCO JSON, CSV), ``schemas`` and ``routes`` (the HTTP API),
``static/`` (the page: plain HTML, CSS and JavaScript modules, no build step).
"""
