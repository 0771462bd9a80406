"""The built-in real evaluation set: real MNIST digits composited onto real photographs.

- :mod:`generator.real.mnist` — the bundled digits and their disjoint, stratified pools;
- :mod:`generator.real.composite` — one composite image with exact masks;
- :mod:`generator.real.build` — the three split shards (``synthloop data real``);
- :mod:`generator.real.splits` — the access rule: ``real-test`` is for final reporting only.

See docs/real-data.md.
"""

from __future__ import annotations

from generator.real.splits import FINAL_REPORT, HELD_OUT_SPLIT, check_split_access, open_real_split

__all__ = ["FINAL_REPORT", "HELD_OUT_SPLIT", "check_split_access", "open_real_split"]
