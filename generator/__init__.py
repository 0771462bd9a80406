"""synthloop generator: scenarios, sampling, scene building, rendering, annotations, shards.

Importing this package never imports OpenGL; only :mod:`generator.render.pyrender_backend` does.
(No ``from __future__ import annotations`` here: it would shadow the ``generator.annotations``
submodule as a package attribute.)
"""


__version__ = "0.1.0"
GENERATOR_VERSION = __version__
