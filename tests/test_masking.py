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


def test_a_prompt_word_inside_a_line_does_not_arm_masking() -> None:
    """Only a line that *ends* like a prompt arms masking (the ``$`` anchor): a prompt word followed
    by more text on the same line, or a prompt on an earlier line, withholds nothing."""
    for output in (
        b"$ grep password: /etc/app.conf",
        b"Password: accepted, welcome",
        b"old passphrase: x\r\nnew",
        b"[sudo] password for ops: \r\n$ ",
        b"Enter PIN: 1234 ok",
    ):
        m = InputMasker(lambda: None)
        m.saw_output(output)
        assert m.split(b"rm -rf /srv\r") == (b"", b"rm -rf /srv\r"), output


def test_prompts_at_the_end_of_the_last_line_arm_masking() -> None:
    for output in (b"Password:", b"Password: ", b"\r\nEnter passphrase for key 'k':  ", b"Verification code:\t", b"PIN: "):
        m = InputMasker(lambda: None)
        m.saw_output(b"$ ssh host\r\n" + output)
        assert m.split(b"pw\rls\r") == (b"pw\r", b"ls\r"), output


def test_prompt_split_across_output_chunks_and_runs_are_counted() -> None:
    m = InputMasker(lambda: None)
    m.saw_output(b"[sudo] pass")
    m.saw_output(b"word for ops: ")
    assert m.split(b"p") == (b"p", b"") and m.runs == 1
    assert m.split(b"w\r") == (b"w\r", b"") and m.runs == 1  # one run, two chunks
    m.saw_output(b"Password: ")
    assert m.split(b"x\r") == (b"x\r", b"") and m.runs == 2
    assert m.split(b"y\r") == (b"", b"y\r") and m.runs == 2


def test_echo_state_overrides_prompt_text_where_it_is_known() -> None:
    """On a local PTY a printed "Password:" means nothing: only the terminal's echo flag counts."""
    m = InputMasker(lambda: False)
    m.saw_output(b"Password: ")
    assert m.split(b"ls\r") == (b"", b"ls\r") and m.runs == 0


def test_prompt_detection_agrees_with_the_prompt_pattern_on_every_chunk() -> None:
    """saw_output skips the regex unless the tail ends in ':' and blanks: it must arm exactly when
    the pattern itself matches the last line (random output, prompts and near-misses mixed in)."""
    import random
    import re

    prompt = re.compile(rb"(?i)(pass(word|phrase)|\bpin\b|secret|verification code)[^\n]{0,60}:\s*$")
    pieces = [b"x", b"ls -l\r\n", b"Password:", b"password for bob: ", b"PIN:\t", b"secret:\x0b\x0c\r",
              b"Verification code: \r", b": ", b":", b"\n", b"\r\n", b"a:b", b"passphrase", b" ", b"\x1b[0m",
              b"pin", b"word: x", bytes(range(256))]
    rng = random.Random(14)
    armed = 0
    for _ in range(2000):
        m = InputMasker(lambda: None)
        tail = b""
        for _ in range(rng.randrange(1, 8)):
            chunk = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 4)))
            tail = (tail + chunk)[-200:]
            was = m.hiding()
            m.saw_output(chunk)
            expected = was or prompt.search(tail.rsplit(b"\n", 1)[-1]) is not None
            assert m.hiding() == expected, (tail, chunk)
        armed += m.hiding()
    assert 100 < armed < 1900  # both outcomes were exercised
