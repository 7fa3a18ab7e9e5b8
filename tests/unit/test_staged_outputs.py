"""The outputs of a stage change together: the renames of a commit run with SIGINT and SIGTERM held off, whichever
thread the kernel hands the signal to, and an interrupt that waited for them says the outputs were written."""

from __future__ import annotations

import signal
import threading
import time

import click
import pytest
from click.testing import CliRunner

from pipeline._cli import stage_main
from softmax_regression import atomic
from softmax_regression.atomic import StagedOutputs, signals_deferred


def test_a_signal_another_thread_takes_waits_for_the_end_of_the_block():
    """The kernel hands a process's signal to any thread that does not block it (torch starts several): a
    signal mask on the main thread would not hold it off, and Python would raise in the middle of the block."""
    ready, stop = threading.Event(), threading.Event()
    other = threading.Thread(target=lambda: (ready.set(), stop.wait(60)))
    other.start()
    ready.wait()
    raised_inside = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                signal.pthread_kill(other.ident, signal.SIGINT)
                try:
                    for _ in range(50):  # Python runs its handlers between these
                        time.sleep(0.01)
                except KeyboardInterrupt:
                    raised_inside = True
    finally:
        stop.set()
        other.join()
    assert not raised_inside
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_an_interrupt_during_the_renames_comes_after_them_and_says_the_outputs_were_written(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old")
    (tmp_path / "b.txt").write_text("old")
    replace = atomic.os.replace

    def interrupted_replace(source, target):  # Ctrl-C as the first output is renamed
        signal.raise_signal(signal.SIGINT)
        replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt) as info:
        with StagedOutputs() as outputs:
            outputs.write_text(tmp_path / "a.txt", "new")
            outputs.write_text(tmp_path / "b.txt", "new")
            outputs.commit()
    assert info.value.outputs_written is True
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.parametrize("written, line", [
    (False, "demo: interrupted; no output was written"),
    (True, "demo: interrupted once its outputs were written"),
])
def test_a_stage_says_whether_its_outputs_were_written_when_interrupted(monkeypatch, written, line):
    monkeypatch.delenv("DVC_STAGE", raising=False)

    @click.command()
    @click.option("-v", "--verbose", is_flag=True)
    @stage_main("demo", pinned=False)
    def demo() -> None:
        exc = KeyboardInterrupt()
        exc.outputs_written = written
        raise exc

    previous = signal.getsignal(signal.SIGTERM)  # stage_main takes SIGTERM over for the process
    try:
        result = CliRunner().invoke(demo, [])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 130
    assert result.stderr.splitlines() == [line]
