"""Serial console splitting: boot noise hidden, command output live, markers."""

from __future__ import annotations

from vm.console import ConsoleFilter

RUN = "20250101-000000-abcdef"


class Sink:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.notices: list[str] = []

    def filter(self) -> ConsoleFilter:
        return ConsoleFilter(RUN, out=self.out.append, notice=self.notices.append)

    @property
    def text(self) -> str:
        return "".join(self.out)


def test_boot_noise_hidden_output_shown_exit_code_parsed() -> None:
    sink = Sink()
    console = sink.filter()
    console.feed(b"SeaBIOS\r\n[    1.0] some kernel line\r\nkpath-vm: warning: x\r\n")
    console.feed(f"KPATH-VM-START {RUN}\r\nhello\r\nworld\r\n".encode())
    console.feed(f"KPATH-VM-END {RUN} rc=3\r\n[   17.0] sysrq: Power Off\r\n".encode())
    assert sink.text == "hello\nworld\n"
    assert sink.notices == ["kpath-vm: warning: x"]
    assert console.started and console.ended
    assert console.exit_code == 3


def test_markers_split_across_chunks() -> None:
    sink = Sink()
    console = sink.filter()
    data = f"noise\r\nKPATH-VM-START {RUN}\r\nout\r\nKPATH-VM-END {RUN} rc=0\r\n".encode()
    for i in range(len(data)):
        console.feed(data[i : i + 1])
    assert sink.text == "out\n"
    assert console.exit_code == 0


def test_markers_of_another_run_are_plain_output() -> None:
    sink = Sink()
    console = sink.filter()
    console.feed(f"KPATH-VM-START {RUN}\n".encode())
    console.feed(b"KPATH-VM-END 19990101-000000-000000 rc=0\n")
    assert not console.ended
    assert "KPATH-VM-END 19990101" in sink.text


def test_setup_failure_before_start() -> None:
    sink = Sink()
    console = sink.filter()
    console.feed(b"kpath-vm: error: cannot mount the host share\n")
    console.feed(f"KPATH-VM-END {RUN} rc=125\n".encode())
    assert not console.started
    assert console.ended and console.exit_code == 125
    assert sink.notices == ["kpath-vm: error: cannot mount the host share"]


def test_partial_line_shown_when_idle_then_completed() -> None:
    sink = Sink()
    console = sink.filter()
    console.feed(f"KPATH-VM-START {RUN}\r\nprompt> ".encode())
    console.idle()
    assert sink.text == "prompt> "
    console.feed(b"answer\r\n")
    assert sink.text == "prompt> answer\n"


def test_output_without_final_newline_before_end_marker() -> None:
    sink = Sink()
    console = sink.filter()
    console.feed(f"KPATH-VM-START {RUN}\nno newline".encode())
    console.idle()
    console.feed(f"KPATH-VM-END {RUN} rc=1\n".encode())
    assert sink.text == "no newline\n"
    assert console.exit_code == 1


def test_idle_holds_back_a_half_marker() -> None:
    sink = Sink()
    console = sink.filter()
    console.feed(f"KPATH-VM-START {RUN}\nKPATH-VM-E".encode())
    console.idle()
    assert sink.text == ""
    console.feed(f"ND {RUN} rc=0\n".encode())
    assert sink.text == "" and console.exit_code == 0


def test_invalid_utf8_does_not_break_streaming() -> None:
    sink = Sink()
    console = sink.filter()
    console.feed(f"KPATH-VM-START {RUN}\n".encode() + b"\xff\xfe bytes\n")
    assert sink.text.endswith(" bytes\n")
