"""Live-trace orchestration pieces that run without kprobes: the command gate,
probe status reporting, and the trace CLI's input checks."""

from __future__ import annotations

import time

from click.testing import CliRunner

from kpath.cli import cli
from probes.catalog import BY_NAME
from probes.resolve import Resolved
from tracer.capture.bcc import probe_statuses
from tracer.session import _Command


def _wait(cmd: _Command, limit: float = 10) -> int:
    deadline = time.monotonic() + limit
    while not cmd.poll():
        assert time.monotonic() < deadline, "command did not exit"
        time.sleep(0.01)
    assert cmd.exit_code is not None
    return cmd.exit_code


def test_command_waits_at_the_gate_then_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ran"
    cmd = _Command(["sh", "-c", f"touch {marker}; exit 3"])
    time.sleep(0.2)
    assert not marker.exists(), "command ran before its pid was registered"
    cmd.release()
    assert _wait(cmd) == 3 and marker.exists()


def test_missing_command_exits_127() -> None:
    cmd = _Command(["/nonexistent/kpath-no-such-program"])
    cmd.release()
    assert _wait(cmd) == 127


def test_stop_terminates_a_running_command() -> None:
    cmd = _Command(["sleep", "30"])
    cmd.release()
    start = time.monotonic()
    cmd.stop()
    assert cmd.exit_code is not None and cmd.exit_code < 0
    assert time.monotonic() - start < 5


def test_probe_statuses_keep_every_requested_probe() -> None:
    resolved = [
        Resolved(BY_NAME["tcp_recvmsg"], "tcp_recvmsg", 0x1000),
        Resolved(BY_NAME["tcp_push"], None, reason="inlined", detail="no symbol tcp_push"),
        Resolved(BY_NAME["ip_rcv"], "ip_rcv", 0x2000),
    ]
    st = {s.name: s for s in probe_statuses(resolved, {"ip_rcv": "permission denied"})}
    assert st["tcp_recvmsg"].attached and st["tcp_recvmsg"].kinds == ["entry", "return"]
    assert st["tcp_recvmsg"].attach == ["kprobe:tcp_recvmsg", "kretprobe:tcp_recvmsg"]
    assert not st["tcp_push"].attached and st["tcp_push"].reason == "inlined"
    assert not st["ip_rcv"].attached and st["ip_rcv"].reason == "failed"
    assert st["ip_rcv"].detail == "permission denied"


def test_trace_cli_rejects_bad_filters_without_traceback() -> None:
    runner = CliRunner()
    for args, msg in [
        (["trace", "--port", "70000", "--duration", "1"], "between 1 and 65535"),
        (["trace", "--pid", "-4", "--duration", "1"], "valid process id"),
        (["trace", "--probes", "tcp_v4_rcv,bogus", "--duration", "1"], "bogus"),
        (["trace", "--pid", "1", "--", "true"], "cannot be combined"),
    ]:
        res = runner.invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output and "Traceback" not in res.output


def test_trace_ebpf_prints_the_program_of_the_backend() -> None:
    res = CliRunner().invoke(cli, ["trace", "--ebpf", "--backend", "bcc"])
    assert res.exit_code == 0 and "BPF_ARRAY(config, struct kp_config, 1)" in res.output
    res = CliRunner().invoke(cli, ["trace", "--ebpf", "--backend", "core"])
    assert res.exit_code == 0 and 'SEC("?tp_btf/net_dev_queue")' in res.output


def test_trace_ebpf_honours_and_checks_the_other_options() -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["trace", "--ebpf", "--backend", "bcc", "--probes", "minimal",
                              "--comm", "a*/b", "--port", "80", "--buffer-pages", "64"])
    assert res.exit_code == 0, res.output
    head = res.output.split("*/", 1)[0]
    assert "backend bcc" in head and "ring buffer 64 pages" in head
    # The user's text is shown as data that cannot close the comment.
    assert 'comm="a\\x2a\\x2fb" port=80' in head
    assert "probes requested (minimal): __sys_sendto" in head and "ip_rcv" not in head
    for args, msg in [
        (["--port", "70000"], "--port 70000"),
        (["--probes", "nope"], "nope"),
        (["--no-kprobes", "--backend", "bcc"], "--no-kprobes needs"),
        (["--buffer-pages", "3"], "power of two"),
        (["--duration", "3", "-o", "x.kpath"], "--output, --duration would not change it"),
        (["--", "true"], "a command (-- CMD) would not change it"),
    ]:
        res = runner.invoke(cli, ["trace", "--ebpf", *args])
        assert res.exit_code == 2 and msg in res.output, (args, res.output)


def test_durations_and_timeouts_are_finite() -> None:
    runner = CliRunner()
    for value, msg in [("nan", "not a finite number"), ("inf", "not a finite number"),
                       ("-inf", "not a finite number"), ("0", "out of range"),
                       ("1e9", "out of range"), ("abc", "not a number of seconds")]:
        res = runner.invoke(cli, ["trace", "--duration", value, "--", "true"])
        assert res.exit_code == 2 and msg in res.output, (value, res.output)
        assert "Traceback" not in res.output
    res = runner.invoke(cli, ["vm", "run", "--timeout", "nan", "--", "true"])
    assert res.exit_code == 2 and "not a finite number" in res.output


def test_probes_lists_the_catalog() -> None:
    res = CliRunner().invoke(cli, ["probes", "--profile", "minimal"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].startswith("__sys_sendto") and any("tcp_push" in ln for ln in lines)
    assert not any(ln.startswith("ip_rcv") for ln in lines)


def test_bcc_without_kprobes_says_why_and_writes_nothing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tracer.capture.bcc as bcc

    monkeypatch.setattr(bcc.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bcc, "KPROBE_PMU", tmp_path / "no-kprobe-pmu")
    out = tmp_path / "t.kpath"
    res = CliRunner().invoke(cli, ["trace", "--backend", "bcc", "--duration", "1",
                                   "-o", str(out)])
    assert res.exit_code == 1
    assert "no kprobes (CONFIG_KPROBES is off)" in res.output and "kpath vm run" in res.output
    assert "Traceback" not in res.output and not out.exists()


def test_no_btf_and_no_headers_is_one_line(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tracer.capture.base as base
    import tracer.capture.bcc as bcc

    monkeypatch.setattr(bcc.os, "geteuid", lambda: 0)
    monkeypatch.setattr(base, "BTF_VMLINUX", tmp_path / "no-btf")
    monkeypatch.setattr(bcc.platform, "release", lambda: "6.1.0-kpath-test")
    out = tmp_path / "t.kpath"
    res = CliRunner().invoke(cli, ["trace", "--duration", "1", "-o", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output and not out.exists()
    errors = [ln for ln in res.output.splitlines() if ln.startswith("kpath: error:")]
    assert len(errors) == 1, res.output
    assert "no kernel BTF" in errors[0] and "kernel headers" in errors[0]


def test_trace_to_a_missing_directory_fails_before_anything_else(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "no" / "such" / "dir" / "t.kpath"
    res = CliRunner().invoke(cli, ["trace", "--duration", "1", "-o", str(out)])
    assert res.exit_code == 1
    assert "does not exist" in res.output and "Traceback" not in res.output
