"""``reidx serve``: the search API and its web page over a gallery index and its model, both loaded once.

``app.py`` builds the FastAPI app from an opened gallery and model (``POST /search``, ``GET /health``,
``GET /gallery/{id}/image``, the page at ``/``); ``server.py`` checks the address and runs uvicorn.
"""
