"""The ``gwa`` dispatcher: --help, --version, unknown or missing commands, and how command errors surface.

Each command's own behaviour is tested next to its module; here a fake command module exercises the dispatch.
"""

import subprocess
import sys
import textwrap

import pytest

import gwa
from gwa import cli

FAKE = textwrap.dedent("""
    from gwa.cli import CommandError

    def add_arguments(parser):
        parser.add_argument("--do", default="ok")

    def run(args):
        if args.do == "ok":
            print("ran fake")
            return 0
        if args.do == "three":
            return 3
        if args.do == "none":
            return None
        raise {"value": ValueError("bad value for --do"), "command": CommandError("cannot do that"),
               "file": FileNotFoundError("no such run"), "interrupt": KeyboardInterrupt(),
               "bug": RuntimeError("a real bug")}[args.do]
""")


@pytest.fixture
def fake_command(tmp_path, monkeypatch):
    (tmp_path / "gwa_fake_cmd.py").write_text(FAKE)
    (tmp_path / "gwa_needs_extra.py").write_text("import missing_extra_pkg_for_test\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    commands = dict(
        cli.COMMANDS, fake=("gwa_fake_cmd", "a fake command"), needy=("gwa_needs_extra", "needs an extra")
    )
    monkeypatch.setattr(cli, "COMMANDS", commands)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"gwa {gwa.__version__}"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gwa")
    for name in cli.COMMANDS:
        assert name in out
    assert set(cli.COMMANDS) == {"demo", "train", "bench", "report", "flag", "compare"}


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: gwa" in capsys.readouterr().out


def test_unknown_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "gwa.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == f"gwa {gwa.__version__}"


def test_dispatch_to_a_command(fake_command, capsys):
    assert cli.main(["fake"]) == 0
    assert capsys.readouterr().out == "ran fake\n"
    assert cli.main(["fake", "--do", "three"]) == 3
    assert cli.main(["fake", "--do", "none"]) == 0


@pytest.mark.parametrize(
    ("kind", "message"),
    [("value", "bad value for --do"), ("command", "cannot do that"), ("file", "no such run")],
)
def test_expected_errors_are_one_line_with_status_2(fake_command, capsys, kind, message):
    assert cli.main(["fake", "--do", kind]) == 2
    err = capsys.readouterr().err
    assert err == f"gwa fake: error: {message}\n"
    with pytest.raises((ValueError, cli.CommandError, FileNotFoundError), match=message):
        cli.main(["-v", "fake", "--do", kind])  # --verbose shows the traceback instead


def test_interrupt_and_real_bugs(fake_command, capsys):
    assert cli.main(["fake", "--do", "interrupt"]) == 130
    assert "interrupted; every finished epoch is kept in the run directory" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="a real bug"):  # a bug is not disguised as a usage error
        cli.main(["fake", "--do", "bug"])


def test_command_missing_its_extra(fake_command, capsys):
    assert cli.main(["needy"]) == 2
    assert capsys.readouterr().err == (
        "gwa needy: error: this command needs the 'missing_extra_pkg_for_test' package, which is not installed; "
        "install the 'cli' extra: pip install 'gwa-alignment[cli]'\n"
    )
    assert cli.main(["fake"]) == 0  # the other commands still work


def test_demo_without_torch_names_the_extra_to_install(tmp_path):
    """`gwa demo` in an interpreter where torch cannot be imported (as without it installed) says which extra to
    install, not "No module named 'torch'"."""
    block_torch = (
        "import sys\n"
        "class BlockTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, BlockTorch())\n"
        "from gwa.cli import main\n"
        "sys.exit(main(['demo', '--quick', '--out', sys.argv[1]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", block_torch, str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "gwa demo: error: this command needs the 'torch' package, which is not installed; install the 'cli' "
        "extra: pip install 'gwa-alignment[cli]'\n"
    )
    assert not (tmp_path / "demo").exists()


def test_a_torchrun_worker_leaves_without_the_interpreter_teardown(fake_command, monkeypatch, capsys):
    """Under torchrun (WORLD_SIZE > 1) the command's status becomes the process's, through os._exit after
    flushing; a single process (or torchrun with one worker) returns it as usual. (The exit itself is replaced:
    flushing closes the log handlers, which the test process still needs.)"""
    exits = []

    class Exited(Exception):
        pass

    def fake_exit(code):
        exits.append(code)
        raise Exited

    monkeypatch.setattr(cli, "_exit_process", fake_exit)
    assert cli.main(["fake", "--do", "three"]) == 3  # not a torchrun worker
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cli.main(["fake"]) == 0  # one worker: nothing to tear down together
    monkeypatch.setenv("WORLD_SIZE", "2")
    for argv, code in ((["fake"], 0), (["fake", "--do", "three"], 3), (["fake", "--do", "value"], 2)):
        with pytest.raises(Exited):
            cli.main(argv)
        assert exits[-1] == code
    assert exits == [0, 3, 2]
    assert "ran fake" in capsys.readouterr().out


def test_exit_process_flushes_and_keeps_the_status():
    code = "from gwa.cli import _exit_process; print('unflushed', end=''); _exit_process(7)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 7
    assert done.stdout == "unflushed"  # os._exit alone would lose it: stdout to a pipe is block-buffered
