"""`make bench-quick` (benchmarks/quick.py): every benchmark has a smoke run, its parser accepts the
smoke run's arguments, and each runs in its own process under TGS_BENCH_QUICK=1. Nothing trains."""

import argparse
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import quick

FOLDER = Path(quick.__file__).parent
MODULES = [module for module, _ in quick.COMMANDS]


def mains():
    """The modules of benchmarks/ that define a ``main``."""
    return {p.stem for p in FOLDER.glob("*.py") if re.search(r"^def main\(", p.read_text(encoding="utf-8"), re.M)}


def children():
    """``{module: {module that runs it}}`` of the modules another one runs as ``python -m`` (the
    peers); a file of benchmarks/suite/ counts as run_all, which runs the suite."""
    found = {}
    for path in FOLDER.rglob("*.py"):
        for name in re.findall(r'"-m", "benchmarks\.(\w+)"', path.read_text(encoding="utf-8")):
            if name != path.stem:
                found.setdefault(name, set()).add("run_all" if path.parent.name == "suite" else path.stem)
    return found


def test_every_benchmark_has_one_smoke_run_and_every_peer_runs_inside_one():
    peers = children()
    assert peers and set(peers) <= mains()  # the peers are found, and each is a runnable module
    assert len(MODULES) == len(set(MODULES))
    assert set(MODULES) == mains() - set(peers) - {"quick"}
    for peer, parents in peers.items():
        assert parents & set(MODULES), f"{peer} runs only inside {parents}, none of them in quick.COMMANDS"


class Parsed(Exception):
    """Raised with the parsed arguments instead of running the benchmark."""


@pytest.mark.parametrize("module, arguments", quick.COMMANDS, ids=MODULES)
def test_each_smoke_run_is_accepted_by_its_benchmarks_parser(module, arguments, monkeypatch):
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))  # a rejected argument exits with status 2 here

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(Parsed) as parsed:
        main(list(arguments))
    if "--quick" in arguments:
        assert parsed.value.args[0].quick is True
    with pytest.raises(SystemExit) as rejected:  # the same check refuses what the parser does not know
        main([*arguments, "--no-such-option"])
    assert rejected.value.code == 2


def test_main_runs_each_benchmark_in_its_own_quick_process_and_reports_failures(monkeypatch, capsys):
    from benchmarks import harness

    calls = []

    def run(command, env, stdout):
        calls.append((command, env["TGS_BENCH_QUICK"], stdout))
        return subprocess.CompletedProcess(command, 3 if command[2] == "benchmarks.grouping_speed" else 0)

    monkeypatch.setattr(harness, "require", lambda *names: calls.append(names))
    monkeypatch.setattr(quick.subprocess, "run", run)
    assert quick.main(["--only", "mlp_size_bound", "grouping_speed", "--jobs", "1"]) == 1
    arguments = dict(quick.COMMANDS)
    assert calls == [("fashion",)] + [([sys.executable, "-m", f"benchmarks.{m}", *arguments[m]], "1", subprocess.DEVNULL)
                                      for m in MODULES if m in ("mlp_size_bound", "grouping_speed")]
    out = capsys.readouterr().out
    assert "grouping_speed: FAILED (exit 3)" in out and "mlp_size_bound: ok" in out
    assert "1 of 2 benchmarks ran" in out
    calls.clear()
    assert quick.main(["--only", "mlp_size_bound", "grouping_speed", "shrink_speed"]) == 1  # two at a time
    assert sorted(c[0][2] for c in calls[1:]) == ["benchmarks.grouping_speed", "benchmarks.mlp_size_bound",
                                                  "benchmarks.shrink_speed"]
    assert "2 of 3 benchmarks ran" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        quick.main(["--jobs", "0"])
    calls.clear()
    assert quick.main(["--list"]) == 0 and calls == []  # lists without running anything
    assert capsys.readouterr().out.splitlines() == [" ".join(["python -m benchmarks." + m, *a]) for m, a in quick.COMMANDS]
