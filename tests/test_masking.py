"""InputMasker: a password line is withheld; commands around it never are."""

from __future__ import annotations

from zsp_tui.masking import MASK_BUDGET, InputMasker


def test_local_echo_off_hides_one_line_per_episode() -> None:
    echo_off = [False]
    m = InputMasker(lambda: echo_off[0])
    assert m.split(b"ls\r") == (b"", b"ls\r")
    echo_off[0] = True  # read -s / sudo / stty -echo
    assert m.split(b"hunter2\rrm -rf x\r") == (b"hunter2\r", b"rm -rf x\r")
    assert m.split(b"still echo off\r") == (b"", b"still echo off\r")
    echo_off[0] = False
    assert m.split(b"x") == (b"", b"x")
    echo_off[0] = True  # a new prompt: one more line may be withheld
    assert m.split(b"pw2") == (b"pw2", b"")
    assert m.split(b"\rcmd\r") == (b"\r", b"cmd\r")


def test_budget_caps_a_line_without_enter() -> None:
    m = InputMasker(lambda: True)
    hidden, shown = m.split(b"a" * (MASK_BUDGET + 50))
    assert len(hidden) == MASK_BUDGET and shown == b"a" * 50
    assert m.split(b"more\r") == (b"", b"more\r")


def test_remote_prompts_arm_masking_once() -> None:
    m = InputMasker(lambda: None)
    assert m.split(b"whoami\r") == (b"", b"whoami\r")
    m.saw_output(b"[sudo] password for ops: ")
    assert m.split(b"s3cret\recho after\r") == (b"s3cret\r", b"echo after\r")
    assert m.split(b"next\r") == (b"", b"next\r")
    m.saw_output(b"Enter passphrase for key '/root/.ssh/id': ")
    assert m.split(b"pp\n") == (b"pp\n", b"")
    m.saw_output(b"a password: is not a prompt when more follows\r\n$ ")
    assert m.split(b"ls\r") == (b"", b"ls\r")
