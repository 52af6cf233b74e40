"""probes/debuginfo.py on small ELF fixtures built from tests/debuginfo/data
(build.sh): one function per state of the DWARF check, in DWARF 5 and 4.

The expected source lines are found in the fixture sources by text, the
expected states follow from the attributes written there (noinline,
always_inline, a weak declaration, an IPA-SRA copy, an assembly function).
gdb agrees on these fixtures: `break kp_inlined` has 3 locations,
`break kp_both` 3 (the out-of-line copy and two inlined sites).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kpath.cli_probes import probes_cmd
from probes.catalog import Capture, Direction, Layer, ProbeSpec
from probes.debuginfo import (
    CACHE_FORMAT,
    DebugInfoError,
    State,
    cache_dir,
    describe,
    file_build_id,
    probe_sources,
    read_facts,
    running_build_id,
)

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = [DATA / "fixture-dwarf5.elf", DATA / "fixture-dwarf4.elf"]
NAMES = ["kp_outline", "kp_inlined", "kp_both", "kp_copy", "kp_declared_only", "kp_asm",
         "kp_header", "kp_nowhere", "kp_other_unit"]


def line_of(source: str, text: str) -> int:
    """1-based line of the first line of DATA/source containing text."""
    lines = (DATA / source).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def call_lines(source: str, name: str) -> list[tuple[str, int]]:
    """(file, line) of every call of name in a C source, one per call (a
    definition or declaration has a type after the parenthesis)."""
    lines = (DATA / source).read_text().splitlines()
    call = re.compile(rf"\b{name}\((?!int |struct )")
    return [(source, i) for i, line in enumerate(lines, 1) for _ in call.finditer(line)]


def spec(name: str, *alternates: str, module: str | None = None) -> ProbeSpec:
    return ProbeSpec(name, Layer.TCP, Direction.TX, Capture.SOCK, "synthetic",
                     alternates=alternates, module=module)


@pytest.fixture(params=FIXTURES, ids=lambda p: p.stem)
def fixture_elf(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def facts(elf: Path, tmp_path: Path) -> dict[str, State]:
    got = read_facts(elf, NAMES, tmp_path / "cache").functions
    return {n: describe(n, f).state for n, f in got.items()}


# -- the four states, with their source lines


def test_states(fixture_elf: Path, tmp_path: Path) -> None:
    assert facts(fixture_elf, tmp_path) == {
        "kp_outline": State.OUT_OF_LINE, "kp_inlined": State.INLINED,
        "kp_both": State.OUT_OF_LINE, "kp_copy": State.COPY,
        "kp_declared_only": State.ABSENT, "kp_asm": State.OUT_OF_LINE,
        "kp_header": State.INLINED, "kp_nowhere": State.ABSENT,
        "kp_other_unit": State.OUT_OF_LINE,
    }


def test_out_of_line_source_is_the_definition(fixture_elf: Path, tmp_path: Path) -> None:
    got = read_facts(fixture_elf, ["kp_outline", "kp_both"], tmp_path).functions
    out = describe("kp_outline", got["kp_outline"])
    assert out.source == f"fixture.c:{line_of('fixture.c', 'int kp_outline(int x)')}"
    assert out.symbol == "kp_outline" and out.address and out.inlined_sites == 0
    # kp_both is declared first, then defined: the definition's line counts
    both = describe("kp_both", got["kp_both"])
    assert both.line == line_of("fixture.c", "inline int kp_both(int x)")
    assert both.line != line_of("fixture.c", "int kp_both(int x);")


def test_inlined_only_counts_every_call_site(fixture_elf: Path, tmp_path: Path) -> None:
    got = read_facts(fixture_elf, ["kp_inlined"], tmp_path).functions["kp_inlined"]
    info = describe("kp_inlined", got)
    assert info.state is State.INLINED and info.symbol is None
    assert info.source == f"fixture.c:{line_of('fixture.c', 'int kp_inlined(int x)')}"
    want = call_lines("fixture.c", "kp_inlined")
    assert len(want) == 3
    assert info.inlined_sites == 3
    assert sorted((s.file, s.line) for s in info.call_sites) == want
    assert {s.caller for s in info.call_sites} == {"_start", "kp_caller_a", "kp_caller_b"}
    assert "at 3 call sites, no symbol to probe" in info.detail


def test_out_of_line_and_inlined(fixture_elf: Path, tmp_path: Path) -> None:
    info = describe("kp_both", read_facts(fixture_elf, ["kp_both"], tmp_path).functions["kp_both"])
    assert info.state is State.OUT_OF_LINE and info.symbol == "kp_both"
    assert info.inlined_sites == 2
    assert {s.caller for s in info.call_sites} == {"kp_caller_a", "kp_caller_b"}
    assert sorted((s.file, s.line) for s in info.call_sites) == call_lines("fixture.c", "kp_both")
    assert "also inlined at 2 call sites, which a probe on it does not see" in info.detail


def test_header_inline_is_found_in_every_unit(fixture_elf: Path, tmp_path: Path) -> None:
    info = describe("kp_header",
                    read_facts(fixture_elf, ["kp_header"], tmp_path).functions["kp_header"])
    assert info.source == f"fixture.h:{line_of('fixture.h', 'int kp_header(int x)')}"
    want = call_lines("fixture.c", "kp_header") + call_lines("fixture2.c", "kp_header")
    assert len(want) == 3  # one in fixture.c, two in fixture2.c: two units
    assert info.inlined_sites == 3
    assert sorted((s.file, s.line) for s in info.call_sites) == sorted(want)


def test_compiler_copy_only(fixture_elf: Path, tmp_path: Path) -> None:
    info = describe("kp_copy", read_facts(fixture_elf, ["kp_copy"], tmp_path).functions["kp_copy"])
    assert info.state is State.COPY
    assert info.copies and all(c.startswith("kp_copy.isra") for c in info.copies)
    assert info.symbol == info.copies[0] and info.address
    assert info.source == f"fixture.c:{line_of('fixture.c', 'int kp_copy(struct kp_pair *p)')}"
    assert "their arguments may differ" in info.detail


def test_absent_declared_or_not(fixture_elf: Path, tmp_path: Path) -> None:
    got = read_facts(fixture_elf, ["kp_declared_only", "kp_nowhere"], tmp_path).functions
    declared = describe("kp_declared_only", got["kp_declared_only"])
    assert declared.state is State.ABSENT and declared.source is None
    assert "declared but not defined" in declared.detail
    nowhere = describe("kp_nowhere", got["kp_nowhere"])
    assert nowhere.state is State.ABSENT and "not in this build" in nowhere.detail


def test_assembly_function_source_from_the_line_program(fixture_elf: Path,
                                                        tmp_path: Path) -> None:
    got = read_facts(fixture_elf, ["kp_asm"], tmp_path).functions["kp_asm"]
    assert got.line_source is True and got.symbols
    assert describe("kp_asm", got).source == \
        f"fixture_asm.S:{line_of('fixture_asm.S', 'movl %edi, %eax')}"


# -- probe_sources: alternates, modules


def test_probe_sources_alternates_and_modules(tmp_path: Path) -> None:
    specs = [spec("kp_nowhere", "kp_outline"), spec("kp_inlined", "kp_copy"),
             spec("kp_outline", "kp_inlined"), spec("veth_xmit", module="veth")]
    got = probe_sources(specs, FIXTURES[0], tmp_path)
    assert list(got) == ["kp_nowhere", "kp_inlined", "kp_outline", "veth_xmit"]
    assert (got["kp_nowhere"].function, got["kp_nowhere"].state) == \
        ("kp_outline", State.OUT_OF_LINE)
    # no symbol for the primary: a compiler copy of the alternate is what exists
    assert (got["kp_inlined"].function, got["kp_inlined"].state) == ("kp_copy", State.COPY)
    assert (got["kp_outline"].function, got["kp_outline"].state) == \
        ("kp_outline", State.OUT_OF_LINE)
    assert got["veth_xmit"].state is State.ABSENT and "module veth" in got["veth_xmit"].detail
    # the alternate of a probe-able primary was never read
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert "kp_outline" in doc["functions"] and "kp_inlined" in doc["functions"]
    assert "veth_xmit" not in doc["functions"]


def test_details_are_one_line(tmp_path: Path) -> None:
    got = probe_sources([spec(n) for n in NAMES], FIXTURES[0], tmp_path)
    for info in got.values():
        assert info.detail and "\n" not in info.detail


# -- the cache


def test_cache_by_build_id(tmp_path: Path) -> None:
    first = read_facts(FIXTURES[0], NAMES, tmp_path)
    assert first.cached is False and first.build_id
    assert first.cache_file == tmp_path / f"{first.build_id}.json"
    assert first.cache_file.is_file()
    doc = json.loads(first.cache_file.read_text())
    assert doc["format"] == CACHE_FORMAT and doc["build_id"] == first.build_id
    assert set(NAMES) <= set(doc["functions"])
    again = read_facts(FIXTURES[0], NAMES, tmp_path)
    assert again.cached is True and again.functions == first.functions
    # the other fixture is another build: another file
    other = read_facts(FIXTURES[1], ["kp_outline"], tmp_path)
    assert other.cached is False and other.build_id != first.build_id
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_cache_hit_does_not_read_the_dwarf(tmp_path: Path) -> None:
    first = read_facts(FIXTURES[0], ["kp_outline"], tmp_path)
    assert first.cache_file is not None
    doc = json.loads(first.cache_file.read_text())
    doc["functions"]["kp_outline"]["decl_line"] = 4242
    first.cache_file.write_text(json.dumps(doc))
    hit = read_facts(FIXTURES[0], ["kp_outline"], tmp_path)
    assert hit.cached is True and hit.functions["kp_outline"].decl_line == 4242


def test_cache_miss_extracts_what_is_missing_and_keeps_the_rest(tmp_path: Path) -> None:
    first = read_facts(FIXTURES[0], ["kp_outline"], tmp_path)
    assert first.cache_file is not None
    doc = json.loads(first.cache_file.read_text())
    assert "kp_header" not in doc["functions"]
    doc["functions"]["kp_outline"]["decl_line"] = 4242  # marks the kept entry
    first.cache_file.write_text(json.dumps(doc))
    more = read_facts(FIXTURES[0], ["kp_outline", "kp_header"], tmp_path)
    assert more.cached is False
    assert more.functions["kp_outline"].decl_line == 4242
    assert more.functions["kp_header"].inlined == 3
    assert "kp_header" in json.loads(first.cache_file.read_text())["functions"]


@pytest.mark.parametrize("content", ["not json", '{"format": "kpath-debuginfo", "version": 0}',
                                     "[]"])
def test_bad_cache_is_replaced(tmp_path: Path, content: str) -> None:
    build_id = file_build_id(FIXTURES[0])
    (tmp_path / f"{build_id}.json").write_text(content)
    got = read_facts(FIXTURES[0], ["kp_outline"], tmp_path)
    assert got.cached is False and got.functions["kp_outline"].symbols
    assert read_facts(FIXTURES[0], ["kp_outline"], tmp_path).cached is True


def test_unwritable_cache_is_only_slower(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would be")
    got = read_facts(FIXTURES[0], ["kp_outline"], blocker / "debuginfo")
    assert got.cached is False and got.functions["kp_outline"].symbols


def test_cache_dir_follows_kpath_cache(tmp_path: Path) -> None:
    assert cache_dir({"KPATH_CACHE": str(tmp_path)}) == tmp_path / "debuginfo"
    assert cache_dir({}) == Path.home() / ".cache" / "kpath" / "debuginfo"


# -- build-ids


def test_build_ids() -> None:
    note = (DATA / "fixture-dwarf5.elf").read_bytes()
    build_id = file_build_id(FIXTURES[0])
    assert build_id is not None and len(build_id) == 40
    assert bytes.fromhex(build_id) in note
    assert file_build_id(FIXTURES[1]) != build_id


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def test_running_build_id_from_notes(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    # Xen's notes use type 3 too: only GNU's counts
    notes.write_bytes(_note(b"Xen\0", 3, b"\x00\x00\x00\x80") + _note(b"GNU\0", 3, b"\xab\xcd"))
    assert running_build_id(notes) == "abcd"
    notes.write_bytes(_note(b"Xen\0", 3, b"\x00\x00\x00\x80"))
    assert running_build_id(notes) is None
    assert running_build_id(tmp_path / "missing") is None


# -- errors: one line, DebugInfoError


def _error(path: Path, tmp_path: Path) -> str:
    with pytest.raises(DebugInfoError) as info:
        read_facts(path, ["kp_outline"], tmp_path / "cache")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_error_missing_file(tmp_path: Path) -> None:
    assert _error(tmp_path / "vmlinux-nope", tmp_path).endswith("no such file")


def test_error_directory(tmp_path: Path) -> None:
    assert "is a directory" in _error(tmp_path, tmp_path)


def test_error_not_elf(tmp_path: Path) -> None:
    text = tmp_path / "vmlinux.txt"
    text.write_text("hello\n")
    assert _error(text, tmp_path).endswith("not an ELF file")
    bz = tmp_path / "vmlinuz-6.1.0-57-amd64"
    bz.write_bytes(b"MZ" + b"\0" * 600)
    assert "compressed vmlinuz?" in _error(bz, tmp_path)


def test_error_elf_without_dwarf(tmp_path: Path) -> None:
    msg = _error(DATA / "fixture-nodebug.elf", tmp_path)
    assert "no DWARF debug info" in msg and "linux-image-RELEASE-dbg" in msg


def test_error_relocatable_object(tmp_path: Path) -> None:
    obj = tmp_path / "veth.ko"
    data = bytearray(FIXTURES[0].read_bytes())
    data[16:18] = struct.pack("<H", 1)  # e_type = ET_REL
    obj.write_bytes(data)
    assert "relocatable object" in _error(obj, tmp_path)


def test_error_truncated(tmp_path: Path) -> None:
    cut = tmp_path / "vmlinux-cut"
    cut.write_bytes(FIXTURES[0].read_bytes()[:3000])
    assert "damaged ELF or DWARF" in _error(cut, tmp_path)


def test_damaged_dwarf_never_escapes(tmp_path: Path) -> None:
    """Random bytes in the debug sections: a result or a DebugInfoError,
    never another exception (pyelftools raises a dozen kinds) nor a hang
    (a damaged DW_AT_sibling can make pyelftools loop forever)."""
    from elftools.elf.elffile import ELFFile

    src = FIXTURES[0].read_bytes()
    with open(FIXTURES[0], "rb") as fh:
        sections = [(s["sh_offset"], s["sh_size"]) for s in ELFFile(fh).iter_sections()
                    if s.name.startswith(".debug") or s.name in (".symtab", ".strtab")]
    rnd = random.Random(20261201)
    errors = 0
    for i in range(300):
        data = bytearray(src)
        off, size = rnd.choice(sections)
        for _ in range(rnd.choice((1, 4, 16))):
            data[off + rnd.randrange(size)] = rnd.randrange(256)
        path = tmp_path / f"damaged-{i}.elf"
        path.write_bytes(data)
        try:
            # a cache of its own: the damaged copies share the build-id
            read_facts(path, ["kp_outline", "kp_inlined", "kp_header", "kp_asm"],
                       tmp_path / f"cache-{i}")
        except DebugInfoError as exc:
            errors += 1
            assert "\n" not in str(exc)
        path.unlink()
    assert errors > 10  # the damage was noticed, not ignored


# -- the command


def run(*args: str) -> Result:
    return CliRunner().invoke(probes_cmd, list(args))


def test_cli_vmlinux_without_catalog_functions(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPATH_CACHE", str(tmp_path))
    res = run("--profile", "minimal", "--vmlinux", str(FIXTURES[0]))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"debug info: {FIXTURES[0]}, build-id "
                               f"{file_build_id(FIXTURES[0])}, GNU C17")
    assert "extracted in" in lines[0] and str(tmp_path / "debuginfo") in lines[0]
    dwarf = [ln for ln in lines if ln.startswith("    dwarf: ")]
    assert len(dwarf) == 10  # the minimal profile
    assert all(ln.startswith("    dwarf: absent: not in this build") for ln in dwarf)
    assert lines[-1] == ("dwarf: 10 probes: 0 out-of-line (0 of them also inlined somewhere "
                         "a probe does not see), 0 inlined only, 0 only as a copy, 10 absent")
    again = run("--profile", "minimal", "--vmlinux", str(FIXTURES[0]))
    assert "from the cache" in again.stdout.splitlines()[0]


def test_cli_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPATH_CACHE", str(tmp_path))
    for path, needle in ((tmp_path / "nope", "no such file"),
                         (DATA / "fixture-nodebug.elf", "no DWARF debug info"),
                         (DATA / "fixture.c", "not an ELF file")):
        res = run("--vmlinux", str(path))
        assert res.exit_code == 1, res.output
        err = res.stderr.strip()
        assert err.startswith("kpath: error: ") and "\n" not in err and needle in err, err
        assert "Traceback" not in res.output and res.stdout == ""
    res = run("--markdown", "--vmlinux", str(FIXTURES[0]))
    assert res.exit_code == 2 and "--markdown prints the catalog only" in res.output


def test_fixtures_rebuilt_from_their_sources(tmp_path: Path) -> None:
    """build.sh on this machine's compiler gives the same states (needs gcc
    and binutils; the committed fixtures are what the other tests read)."""
    for tool in ("gcc", "objcopy"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    for name in ("build.sh", "fixture.c", "fixture2.c", "fixture.h", "fixture_asm.S"):
        shutil.copy2(DATA / name, tmp_path / name)
    res = subprocess.run(["bash", str(tmp_path / "build.sh")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    for built, committed in ((tmp_path / "fixture-dwarf5.elf", FIXTURES[0]),
                             (tmp_path / "fixture-dwarf4.elf", FIXTURES[1])):
        assert facts(built, tmp_path / "a") == facts(committed, tmp_path / "b")
