"""kpath tracer stage."""

from tracer.codecache import install as _install_code_cache

# Before any of the stages' modules makes its dataclasses (tracer/codecache.py).
_install_code_cache()
