"""The probe dictionary of a trace: what each probe in the header means,
as recorded, so that reconstruction does not depend on the reading kpath's
catalog (a probe renamed, re-layered or dropped there reads the same)."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from typing import TypeVar

from probes.catalog import BY_NAME, Capture, Direction, Layer, ProbeSpec, Returns
from tracer.events import ProbeStatus

_E = TypeVar("_E", bound=StrEnum)


def describe(status: ProbeStatus, spec: ProbeSpec) -> ProbeStatus:
    """`status` carrying what replay needs from the probe's spec."""
    return replace(status, layer=str(spec.layer), direction=str(spec.direction),
                   capture=str(spec.capture), returns=str(spec.ret),
                   length_arg3=spec.length_arg3)


def describe_unlisted(name: str) -> ProbeStatus:
    """A dictionary entry for a probe that produced events but is not in the
    header (version 1 files, hand-built traces): described by the catalog
    when it knows the name."""
    spec = BY_NAME.get(name)
    status = ProbeStatus(name, "", "", attached=True,
                         detail="events recorded without a header entry")
    return describe(status, spec) if spec is not None else status


def _enum(kind: type[_E], recorded: str | None, fallback: _E | None) -> _E | None:
    if recorded:
        try:
            return kind(recorded)
        except ValueError:
            pass  # a newer kpath's value: this one can only use its catalog's
    return fallback


def recorded_spec(status: ProbeStatus) -> ProbeSpec | None:
    """The probe as the trace recorded it; fields the trace lacks (version 1)
    come from this kpath's catalog. None when neither says how it captured."""
    cat = BY_NAME.get(status.name)
    layer = _enum(Layer, status.layer, cat.layer if cat else None)
    direction = _enum(Direction, status.direction, cat.direction if cat else None)
    capture = _enum(Capture, status.capture, cat.capture if cat else None)
    ret = _enum(Returns, status.returns, cat.ret if cat else Returns.NONE)
    if layer is None or direction is None or capture is None or ret is None:
        return None
    length_arg3 = status.length_arg3 if status.length_arg3 is not None else (
        cat.length_arg3 if cat else False)
    return ProbeSpec(status.name, layer, direction, capture,
                     captures=cat.captures if cat else "", alternates=cat.alternates if cat else (),
                     ret=ret, length_arg3=length_arg3, module=cat.module if cat else None,
                     tracepoint=cat.tracepoint if cat else None, way=cat.way if cat else "")


def probe_specs(probes: list[ProbeStatus]) -> dict[str, ProbeSpec]:
    """Name -> spec for every probe of a header's dictionary that can be
    described; probes the header does not list fall back to the catalog."""
    specs = dict(BY_NAME)
    for status in probes:
        spec = recorded_spec(status)
        if spec is None:
            specs.pop(status.name, None)
        else:
            specs[status.name] = spec
    return specs
