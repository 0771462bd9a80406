"""Scene builders: sampled parameter values + rng → :class:`generator.render.SceneSpec`.

A builder is ``build(sample, rng, width, height) -> SceneSpec``; scenarios name theirs in
YAML (``builder: generator.scenes.digits:build``). Builders never import the renderer.
"""
