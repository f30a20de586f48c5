"""Developer tools above every stage: they may import any package, and no package imports them.

    lint.py     ``python -m streams.tools.lint`` (``make lint``): every pack and example tenant's
                templates complete, compiling, using only merge tags that exist
    preview.py  ``python -m streams.tools.preview`` (``make preview``): every mail of every example
                tenant rendered from the pack samples into ``.tidings/preview/index.html``
"""
