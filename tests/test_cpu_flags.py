"""Tests for jaxseg.cpu_flags: the XLA flag and the huge-page re-execution of entry points."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from jaxseg import cpu_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = ("glibc", "2.36")


@pytest.mark.parametrize("text, mode", [("always [madvise] never\n", "madvise"),
                                        ("[always] madvise never\n", "always"),
                                        ("always madvise [never]\n", "never"),
                                        ("garbage\n", "")])
def test_thp_mode_reads_the_bracketed_mode(tmp_path, text, mode):
  path = tmp_path / "enabled"
  path.write_text(text)
  assert cpu_flags.thp_mode(str(path)) == mode


def test_thp_mode_without_the_file():
  assert cpu_flags.thp_mode("/nonexistent/transparent_hugepage/enabled") == ""


def test_huge_page_environment_adds_the_tunable():
  env = cpu_flags.huge_page_environment({"PATH": "/bin"}, mode="madvise", libc=GLIBC)
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  # Existing tunables are kept, the new one appended with glibc's separator.
  env = cpu_flags.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                                        mode="madvise", libc=("glibc", "2.35"))
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  # JAXSEG_KEEP_MALLOC=0 means "do not keep".
  assert cpu_flags.huge_page_environment({"JAXSEG_KEEP_MALLOC": "0"}, mode="madvise",
                                         libc=GLIBC) is not None


@pytest.mark.parametrize("environ, mode, libc", [
    ({}, "always", GLIBC),  # every region gets huge pages anyway
    ({}, "never", GLIBC),  # none can
    ({}, "", GLIBC),  # no THP in this kernel
    ({}, "madvise", ("glibc", "2.34")),  # an unknown tunable: glibc < 2.35 would not take it
    ({}, "madvise", ("", "")),  # musl or no libc found
    ({}, "madvise", ("glibc", "unknown")),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", GLIBC),  # the user's choice
    ({"JAXSEG_KEEP_MALLOC": "1"}, "madvise", GLIBC),
])
def test_huge_page_environment_none(environ, mode, libc):
  assert cpu_flags.huge_page_environment(environ, mode=mode, libc=libc) is None


def _run_probe(tmp_path, env_extra: dict[str, str], *args: str) -> tuple[list[dict], str]:
  """``python -m probepkg.show ARGS``; probepkg calls use_huge_pages at import like experiments."""
  pkg = tmp_path / "probepkg"
  pkg.mkdir(exist_ok=True)
  log = tmp_path / "imports.jsonl"
  (pkg / "__init__.py").write_text(textwrap.dedent(f"""
      import json, os, sys
      with open({str(log)!r}, "a") as f:
        f.write(json.dumps({{"tunables": os.environ.get("GLIBC_TUNABLES"),
                            "argv": sys.argv}}) + "\\n")
      from jaxseg import cpu_flags
      cpu_flags.use_huge_pages(("probepkg",), mode="madvise")
      """))
  (pkg / "show.py").write_text("import sys\nprint('ran', sys.argv[1:])\n")
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "JAXSEG_KEEP_MALLOC")}
  env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), _REPO]), **env_extra)
  proc = subprocess.run([sys.executable, "-m", "probepkg.show", *args], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120, check=True)
  imports = [json.loads(line) for line in log.read_text().splitlines()]
  return imports, proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables: Linux only")
def test_entry_point_re_executes_once_with_the_same_command(tmp_path):
  expected = cpu_flags.huge_page_environment({}, mode="madvise", libc=platform.libc_ver())
  if expected is None:
    pytest.skip(f"libc {platform.libc_ver()} takes no malloc hugetlb tunable")
  imports, stdout = _run_probe(tmp_path, {}, "--flag", "a b")
  # Two imports of the package: the original process, then the re-executed one, which has the
  # tunable and so does not re-execute again; the command line is the same in both.
  assert [i["tunables"] for i in imports] == [None, "glibc.malloc.hugetlb=1"]
  assert imports[0]["argv"] == imports[1]["argv"]
  assert imports[0]["argv"][1:] == ["--flag", "a b"]
  assert stdout.splitlines() == ["ran ['--flag', 'a b']"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables: Linux only")
@pytest.mark.parametrize("env_extra", [{"JAXSEG_KEEP_MALLOC": "1"},
                                       {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}])
def test_entry_point_kept_as_it_is(tmp_path, env_extra):
  imports, stdout = _run_probe(tmp_path, env_extra, "x")
  assert len(imports) == 1
  assert imports[0]["tunables"] == env_extra.get("GLIBC_TUNABLES")
  assert stdout.splitlines() == ["ran ['x']"]


def test_no_re_execution_outside_python_m(monkeypatch):
  # Under pytest (no "-m <package>.<module>" of the entry packages) nothing happens: os.execve
  # would replace the test process.
  def fail(*args):
    raise AssertionError(f"execve{args}")
  monkeypatch.setattr(os, "execve", fail)
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "pytest", "tests"])
  cpu_flags.use_huge_pages(mode="madvise")
  monkeypatch.setattr(sys, "orig_argv", ["python", "script.py"])
  cpu_flags.use_huge_pages(mode="madvise")
  monkeypatch.setattr(sys, "orig_argv", ["python", "-m"])
  cpu_flags.use_huge_pages(mode="madvise")


def test_re_execution_of_an_entry_module(monkeypatch):
  calls = []
  monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  monkeypatch.delenv("JAXSEG_KEEP_MALLOC", raising=False)
  monkeypatch.setattr(platform, "libc_ver", lambda: GLIBC)
  monkeypatch.setattr(sys, "platform", "linux")
  argv = ["python", "-u", "-m", "experiments.tversky", "--data", "promise12"]
  monkeypatch.setattr(sys, "orig_argv", argv)
  cpu_flags.use_huge_pages(mode="madvise")
  (path, args, env), = calls
  assert path == sys.executable and args == argv
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  cpu_flags.use_huge_pages(mode="never")  # nothing to gain: no second call
  assert len(calls) == 1
