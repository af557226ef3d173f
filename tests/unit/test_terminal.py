"""The TUI's driver pieces for a terminal that goes away: detecting the hangup, and an output
stream that stops failing (and tells once) instead of killing Textual's writer thread."""

from __future__ import annotations

import os
from pathlib import Path

from quantarb_tui.terminal import _Output, terminal_hung_up


def test_a_hung_up_terminal_is_told_from_a_live_one_and_from_a_file(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        assert not terminal_hung_up(slave)  # live
        os.close(master)  # the session's other end went away
        assert terminal_hung_up(slave)
    finally:
        os.close(slave)
    with (tmp_path / "f").open("w") as f:
        assert not terminal_hung_up(f.fileno())  # never a terminal
    read_end, write_end = os.pipe()
    os.close(read_end)
    assert not terminal_hung_up(write_end)
    os.close(write_end)


def test_the_first_failed_write_drops_the_output_and_tells_once() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    gone: list[str] = []
    out = _Output(stream, lambda: gone.append("gone"))
    assert out.write("frame 1") == 7
    out.flush()
    assert os.read(read_end, 100) == b"frame 1"
    os.close(read_end)  # the reader went away: the next flush fails (EPIPE)
    out.write("frame 2")
    out.flush()
    assert out.gone and gone == ["gone"]
    for _ in range(100):  # Textual's writer thread keeps writing: nothing fails, nothing blocks
        assert out.write("frame n") == 7
        out.flush()
    assert gone == ["gone"] and not out.isatty()
    stream.write("more")  # the stream itself now goes to /dev/null: the exit's flush cannot fail
    stream.flush()
    stream.close()
