"""gdb's view of functions, as an oracle for probes/debuginfo.py.

Run inside gdb (not by pytest):
    KPATH_ORACLE_NAMES="tcp_push ip_rcv_finish" gdb -batch -nx -x gdb_oracle.py VMLINUX
prints one line per name, "ORACLE " + JSON:
    {"name": ..., "decl": "net/ipv4/tcp.c:706" or absent,
     "locations": [[address, symbol, offset], ...]}
where decl is the file:line of gdb's symbol for the function, and locations
are the places `break NAME` puts a breakpoint (the out-of-line entry and
every inlined instance), each with the ELF symbol that contains it.
"""

import json
import os

import gdb  # type: ignore[import-not-found]

for name in os.environ["KPATH_ORACLE_NAMES"].split():
    rec: dict[str, object] = {"name": name}
    sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
    if sym is not None and sym.symtab is not None:
        rec["decl"] = f"{sym.symtab.filename}:{sym.line}"
    locations = []
    try:
        bp = gdb.Breakpoint(name, internal=True)
        found = [] if bp.pending else list(bp.locations)
    except gdb.error as exc:
        found = []
        rec["error"] = str(exc)
    for loc in found:
        where = gdb.execute(f"info symbol {loc.address:#x}", to_string=True).split()
        offset = int(where[2]) if len(where) > 2 and where[1] == "+" else 0
        locations.append([loc.address, where[0], offset])
    rec["locations"] = locations
    print("ORACLE " + json.dumps(rec), flush=True)
