"""An HTTP liveness service and its web page on top of :mod:`mfas.inference` (``pip install 'mfas[serve]'``).

``create_app(run, settings)`` builds the FastAPI app; ``mfas serve RUN`` runs it on uvicorn. See docs/serve.md.
"""

from mfas.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def create_app(*args, **kwargs):
    from mfas.serve.app import create_app as _create

    return _create(*args, **kwargs)
