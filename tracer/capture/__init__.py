"""Capture backends: kernel -> Event records. `core` loads the precompiled
CO-RE object through libbpf; `bcc` compiles at run time (kernels without
BTF). Both sit behind tracer/capture/base.py's Backend interface."""
