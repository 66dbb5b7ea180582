"""Faults and hostile environments: one line and the documented exit code, no orphan worker, no second writer,
no corrupt frame kept, runs that work from any folder."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nerf.checkpoint import locate_dataset, lock_run
from nerf.cli import eval_main, export_main, train_main, train_parser
from raytrace.cli import build_parser as raytrace_parser
from raytrace.cli import main as raytrace_main
from raytrace.cliutil import EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, HelpFormatter, run_command
from raytrace.errors import InputError
from viewer.cli import build_parser as view_parser
from viewer.cli import main as view_main

from .conftest import tiny_config
from .test_cli_raytrace import write_scene

ROOT = Path(__file__).resolve().parents[1]
RT_FLAGS = ["--res", "12", "--quiet", "--workers", "1", "--device", "cpu"]


def one_error_line(err: str, prog: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{prog}: "), err
    return lines[0]


# ---- the error boundary ------------------------------------------------------------------------------------

def _raise(exc: BaseException):
    def body() -> int:
        raise exc
    return body


@pytest.mark.parametrize(("exc", "code", "text"), [
    (InputError("f.json", "frames", "bad"), EXIT_INPUT, "f.json: frames: bad"),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
    (PermissionError(13, "Permission denied", "/out/x"), EXIT_FAILURE, "/out/x: Permission denied"),
    (OSError(28, "No space left on device"), EXIT_FAILURE, "No space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 5120 vs 5032"), EXIT_FAILURE,
     "disk full?"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1e12 bytes"), EXIT_FAILURE,
     "out of memory"),
    (MemoryError(), EXIT_FAILURE, "out of memory"),
])
def test_the_boundary_turns_faults_into_one_line_and_an_exit_code(exc, code, text, capsys) -> None:
    assert run_command("cmd", _raise(exc)) == code
    assert text in one_error_line(capsys.readouterr().err, "cmd")


def test_the_boundary_lets_bugs_through() -> None:
    with pytest.raises(ZeroDivisionError):
        run_command("cmd", _raise(ZeroDivisionError()))


def test_ranks_other_than_zero_stay_quiet(monkeypatch, capsys, tmp_path: Path) -> None:
    from nerf.cli import train_main

    monkeypatch.setenv("RANK", "1")
    assert train_main([str(tmp_path / "no-such-dataset")]) == EXIT_INPUT
    with pytest.raises(SystemExit) as stop:
        train_main([str(tmp_path), "--batch-rays", "0"])
    assert stop.value.code == EXIT_INPUT
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert train_main([str(tmp_path / "no-such-dataset")]) == EXIT_INPUT
    assert "no-such-dataset" in one_error_line(capsys.readouterr().err, "nerf-train")


# ---- output paths, devices ---------------------------------------------------------------------------------

def test_raytrace_into_a_file_shaped_or_unwritable_path(tmp_path: Path, capsys) -> None:
    scene = write_scene(tmp_path / "scene.toml")
    (tmp_path / "file").write_text("x")
    assert raytrace_main([str(scene), "-o", str(tmp_path / "file"), *RT_FLAGS]) == EXIT_INPUT
    assert "not a folder" in one_error_line(capsys.readouterr().err, "raytrace")
    assert raytrace_main([str(scene), "-o", str(tmp_path / "file" / "sub"), *RT_FLAGS]) == EXIT_FAILURE
    assert "Not a directory" in one_error_line(capsys.readouterr().err, "raytrace")


def test_train_into_a_file_shaped_out_folder(ball: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    code = train_main([str(ball), "-o", str(tmp_path / "file" / "runs"), "--device", "cpu", "--steps", "1",
                       "--quiet"])
    assert code == EXIT_FAILURE
    assert "Not a directory" in one_error_line(capsys.readouterr().err, "nerf-train")


@pytest.fixture(scope="module")
def untrained_run(ball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with the checkpoint of step 0 (no training: these tests need a loadable run, not a good one)."""
    from nerf.train import open_session

    session = open_session(tiny_config(ball, tmp_path_factory.mktemp("untrained") / "runs"))
    session.save(0.0)
    session.lock.close()
    return session.run_dir


def test_export_into_a_file_shaped_path_and_eval_of_a_file(untrained_run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "d.ply").mkdir()
    assert export_main([str(untrained_run), "--mesh", "--resolution", "8", "--device", "cpu",
                        "-o", str(tmp_path / "file" / "m.ply")]) == EXIT_FAILURE
    assert str(tmp_path / "file") in one_error_line(capsys.readouterr().err, "nerf-export")
    assert export_main([str(untrained_run), "--mesh", "--resolution", "8", "--device", "cpu",
                        "--output", str(tmp_path / "d.ply")]) == EXIT_INPUT  # the old spelling still works
    assert "is a folder" in one_error_line(capsys.readouterr().err, "nerf-export")
    assert export_main([str(untrained_run), "--mesh", "--resolution", "8", "--device", "cpu"]) == EXIT_INPUT
    assert "--threshold: no surface" in one_error_line(capsys.readouterr().err, "nerf-export")
    assert eval_main([str(tmp_path / "file"), "--device", "cpu"]) == EXIT_INPUT
    one_error_line(capsys.readouterr().err, "nerf-eval")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["raytrace", "nerf-train", "nerf-eval", "nerf-export"])
def test_cuda_without_cuda_is_one_line(command: str, tmp_path: Path, capsys) -> None:
    scene = write_scene(tmp_path / "scene.toml")
    run = {"raytrace": lambda: raytrace_main([str(scene), "--device", "cuda", "-o", str(tmp_path / "o")]),
           "nerf-train": lambda: train_main([str(tmp_path), "--device", "cuda:1"]),
           "nerf-eval": lambda: eval_main([str(tmp_path), "--device", "cuda"]),
           "nerf-export": lambda: export_main([str(tmp_path), "--mesh", "--device", "cuda"])}[command]
    assert run() == EXIT_INPUT
    assert "no CUDA device" in one_error_line(capsys.readouterr().err, command)
    assert not (tmp_path / "o").exists()


def test_a_rig_with_zero_views_is_refused(tmp_path: Path, capsys) -> None:
    scene = write_scene(tmp_path / "scene.toml")
    assert raytrace_main([str(scene), "-o", str(tmp_path / "o"), "--views", "1", "--val", "0", "--test", "0",
                          *RT_FLAGS]) == 0
    capsys.readouterr()
    empty = write_scene(tmp_path / "empty.toml",
                        (tmp_path / "scene.toml").read_text().replace("train = 3, val = 2, test = 2",
                                                                      "train = 0, val = 0, test = 0"))
    assert raytrace_main([str(empty), "-o", str(tmp_path / "e"), *RT_FLAGS]) == EXIT_INPUT
    assert "zero views" in one_error_line(capsys.readouterr().err, "raytrace")


def test_a_frame_larger_than_memory_is_refused_before_allocating(tmp_path: Path, capsys) -> None:
    scene = write_scene(tmp_path / "scene.toml")
    assert raytrace_main([str(scene), "-o", str(tmp_path / "o"), "--res", "30000", "--spp", "4096",
                          "--device", "cpu"]) == EXIT_INPUT
    assert "4096 spp needs about" in one_error_line(capsys.readouterr().err, "raytrace")
    assert not (tmp_path / "o").exists()


# ---- frames kept by a rerun or a merge are checked ---------------------------------------------------------

def test_reruns_and_merge_re_render_or_refuse_damaged_frames(tmp_path: Path, capsys) -> None:
    scene = write_scene(tmp_path / "scene.toml")
    out = tmp_path / "out"
    assert raytrace_main([str(scene), "-o", str(out), *RT_FLAGS]) == 0
    good = (out / "train" / "r_0.png").read_bytes()
    (out / "train" / "r_0.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    (out / "val" / "r_1_distance.npz").write_bytes(b"junk" * 10)  # junk depth
    capsys.readouterr()
    assert raytrace_main([str(scene), "-o", str(out), *RT_FLAGS]) == 0
    assert "rendered 2, kept 5" in capsys.readouterr().out
    assert (out / "train" / "r_0.png").read_bytes() == good
    (out / "test" / "r_0_depth.png").write_bytes(b"\x89PNG junk")
    assert raytrace_main([str(scene), "-o", str(out), "--merge", *RT_FLAGS]) == EXIT_INPUT
    assert "1 of 7 frames missing or unreadable (test/r_0)" in one_error_line(capsys.readouterr().err, "raytrace")


# ---- no orphan workers -------------------------------------------------------------------------------------

def children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    found: set[int] = set()
    parents = {pid}
    changed = True
    while changed:
        changed = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in found:
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in parents:
                found.add(int(entry.name))
                parents.add(int(entry.name))
                changed = True
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_worker_dies_with_its_parent(sig: int, tmp_path: Path) -> None:
    """The parent-death mechanism of the raytracer's workers, on a parent that spawns one and is then killed."""
    script = textwrap.dedent("""
        import multiprocessing as mp, os, sys, time
        from raytrace.frames import die_with_parent

        def worker(parent):
            die_with_parent(parent)
            time.sleep(600)

        if __name__ == "__main__":
            p = mp.get_context("spawn").Process(target=worker, args=(os.getpid(),))
            p.start()
            print(p.pid, flush=True)
            time.sleep(600)
    """)
    (tmp_path / "parent.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    child = int(proc.stdout.readline())
    time.sleep(1.0)  # the child arms its parent-death signal
    descendants = children_of(proc.pid)
    assert child in descendants
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert wait_until(lambda: not any(alive(p) for p in descendants), 30), [p for p in descendants if alive(p)]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_raytrace_leaves_no_worker(tmp_path: Path) -> None:
    """SIGKILL the parent while both workers render large frames: they and the resource tracker end at once
    (without the parent-death signal each would finish its frame first)."""
    scene = write_scene(tmp_path / "scene.toml")
    proc = subprocess.Popen([sys.executable, "-m", "raytrace.cli", str(scene), "-o", str(tmp_path / "o"),
                             "--views", "16", "--res", "768", "--spp", "64", "--workers", "2", "--quiet",
                             "--device", "cpu"], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert wait_until(lambda: len(children_of(proc.pid)) >= 3, 120)  # 2 workers and the resource tracker
    descendants = children_of(proc.pid)
    assert wait_until(lambda: sum(cpu_seconds(p) > 10 for p in descendants) >= 2, 300)  # both are rendering
    proc.kill()
    proc.wait(timeout=30)
    assert wait_until(lambda: not any(alive(p) for p in descendants), 10), [p for p in descendants if alive(p)]


# ---- run folders -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def lock_held_by_another_process(run_dir: Path) -> Iterator[int]:
    """A child process that holds ``run_dir``'s writer lock; yields its PID."""
    code = (f"import time; from nerf.checkpoint import lock_run; lock_run({str(run_dir)!r}); print('ok', flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "ok"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    with lock_held_by_another_process(tmp_path) as pid, \
            pytest.raises(InputError, match=rf"another nerf-train \(pid {pid}\) is writing this run"):
        lock_run(tmp_path)
    lock_run(tmp_path).close()  # free again once that process is gone
    mine = lock_run(tmp_path)
    assert lock_run(tmp_path) is mine  # a second session of the same process shares the lock
    mine.close()


def test_resuming_a_run_that_is_being_written_is_refused(untrained_run: Path) -> None:
    from nerf.train import open_session

    with lock_held_by_another_process(untrained_run), pytest.raises(InputError, match="is writing this run"):
        open_session(tiny_config(Path("unused"), Path("unused")), resume=untrained_run)


def test_runs_record_absolute_dataset_paths_and_find_moved_ones(ball: Path, tmp_path: Path, monkeypatch) -> None:
    from nerf.model import load_run
    from nerf.train import open_session

    monkeypatch.chdir(ball.parent)
    session = open_session(tiny_config(Path(ball.name), tmp_path / "runs", steps=1))
    session.save(0.0)
    session.lock.close()
    assert Path(session.cfg.data).is_absolute() and Path(session.cfg.data) == ball
    monkeypatch.chdir(tmp_path)
    assert Path(load_run(session.run_dir, "cpu")[0].data) == ball
    assert locate_dataset("/gone/ball", session.run_dir, os.path.relpath(ball, session.run_dir)) == str(ball)
    assert locate_dataset("/gone/ball", session.run_dir, "../nowhere") == "/gone/ball"


def test_a_failed_start_leaves_no_run_folder(ball: Path, tmp_path: Path, monkeypatch) -> None:
    import nerf.train

    def refuse(*args, **kwargs):
        raise InputError(None, "--lr", "refused")

    monkeypatch.setattr(nerf.train, "make_optimizer", refuse)
    with pytest.raises(InputError):
        nerf.train.open_session(tiny_config(ball, tmp_path / "runs"))
    assert not any(p.is_dir() for p in (tmp_path / "runs").rglob("*") if p.parent.parent == tmp_path / "runs")


# ---- nerf-view reports load errors on the terminal ---------------------------------------------------------

def test_view_of_a_missing_run_or_a_dataset_prints_and_exits(ball: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert view_main([str(tmp_path / "missing")]) == EXIT_INPUT
    assert "no checkpoint" in one_error_line(capsys.readouterr().err, "nerf-view")
    assert view_main([str(ball)]) == EXIT_INPUT
    one_error_line(capsys.readouterr().err, "nerf-view")
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 truncated")
    assert view_main([str(tmp_path / "bad.pt")]) == EXIT_INPUT
    assert "truncated or corrupt" in one_error_line(capsys.readouterr().err, "nerf-view")
    assert view_main(["--train", str(tmp_path / "missing")]) == EXIT_INPUT
    assert "dataset folder not found" in one_error_line(capsys.readouterr().err, "nerf-view")


# ---- argparse: choices, help, -o/--out ---------------------------------------------------------------------

PARSERS = {"raytrace": raytrace_parser, "nerf-train": train_parser, "nerf-view": view_parser}


@pytest.mark.parametrize("name", PARSERS)
def test_help_strings_are_sentences_with_one_default(name: str) -> None:
    parser = PARSERS[name]()
    assert parser.formatter_class is HelpFormatter
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help in (None, argparse.SUPPRESS):
            continue
        text = formatter._get_help_string(action) % {"default": action.default, "prog": name}
        bare = {o.lstrip("-").replace("-", " ").replace("_", " ") for o in action.option_strings} | {action.dest}
        assert text.split(" (")[0] not in bare, (name, text)
        assert text.count("default") <= 1, (name, text)
    assert "-o" in parser._option_string_actions or name == "nerf-eval"


@pytest.mark.parametrize(("flag", "choices"), [
    ("--preset", ("auto", "cpu", "gpu")), ("--loss", ("huber", "mse")), ("--model", ("ngp", "nerf")),
    ("--backend", ("auto", "torch", "native", "tcnn")),
])
def test_enum_flags_have_choices(flag: str, choices: tuple[str, ...]) -> None:
    assert tuple(train_parser()._option_string_actions[flag].choices) == choices


# ---- resource limits and silently accepted nonsense --------------------------------------------------------

def test_sizes_beyond_memory_are_refused_before_allocating(capsys) -> None:
    assert train_main(["data", "--device", "cpu", "--levels", "64", "--features", "8", "--log2-table-size", "26"]) \
        == EXIT_INPUT
    assert "GiB" in one_error_line(capsys.readouterr().err, "nerf-train")
    assert export_main(["run", "--mesh", "--resolution", "2048", "--device", "cpu"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "no checkpoint" in one_error_line(err, "nerf-export")  # the run is checked first; the grid next:
    from raytrace.cliutil import check_memory

    with pytest.raises(InputError, match="--resolution: a grid needs about"):
        check_memory(2**80, "--resolution", "a grid")


def test_a_numeric_string_in_a_transform_matrix_is_refused(ball: Path, tmp_path: Path) -> None:
    import json

    from raytrace.dataset_format import read_transforms

    data = json.loads((ball / "transforms_train.json").read_text())
    data["frames"][0]["transform_matrix"][0][3] = "0.5"
    (tmp_path / "transforms_train.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"frames\[0\]\.transform_matrix: expected a 4x4 matrix of numbers"):
        read_transforms(tmp_path / "transforms_train.json")


@pytest.mark.slow
def test_an_input_error_under_gpus_2_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Both ranks meet the missing dataset; rank 0 alone reports it, and torchrun adds nothing."""
    proc = subprocess.run([sys.executable, "-m", "nerf.cli", str(tmp_path / "nope"), "--gpus", "2", "--device", "cpu",
                           "--quiet"], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == EXIT_INPUT
    assert "transforms_train.json" in one_error_line(proc.stderr, "nerf-train")
