"""optml's one import name: `optml.container`, `optml.train` and `optml.serve`.

The three folders stay at the top of the repository (the product's layout); `optml/` links to them here
and holds them for real in the image (/opt/optml/optml/), where nothing else of optml is on the path. So a
user's own `train.py`, `serve.py` or `container.py` — AWS's PyTorch examples name their script train.py and
import from it in inference.py — never imports optml's code instead of its own, nor optml the user's.
"""
