"""The embedded model is shared by the processes of one machine: machine-wide turns, robust to a killed holder.

These tests drive `lmc.lm.local.MachineSlots` from several real processes without loading the
model; `bench/bench_local_share.py` measures two `lmc run`s on the model itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lmc.errors import ConfigError, LMError
from lmc.lm.local import MachineSlots, check_fits, default_slots, runtime_dir

ROOT = Path(__file__).resolve().parent.parent

HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from lmc.lm.local import MachineSlots
    slots = MachineSlots(1, Path({dir!r}))
    log = open({log!r}, "a")
    go = Path({dir!r}) / "go"
    while {wait_go} and not go.exists():  # start together, so the turns overlap
        time.sleep(0.005)
    for _ in range({turns}):
        fd = slots.acquire()
        log.write("{name} in %.4f\\n" % time.monotonic()); log.flush()
        time.sleep({hold})
        log.write("{name} out %.4f\\n" % time.monotonic()); log.flush()
        slots.release(fd)
    print("done", flush=True)
    time.sleep({linger})
""")


def holder(tmp_path: Path, name: str, *, turns: int = 1, hold: float = 0.05, linger: float = 0.0, wait_go: bool = False) -> subprocess.Popen:
    code = HOLDER.format(
        root=str(ROOT), dir=str(tmp_path), log=str(tmp_path / "log"), turns=turns, hold=hold, linger=linger, name=name, wait_go=wait_go
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def events(tmp_path: Path) -> list[tuple[str, str, float]]:
    out = []
    for line in (tmp_path / "log").read_text().splitlines():
        name, what, at = line.split()
        out.append((name, what, float(at)))
    return sorted(out, key=lambda e: e[2])


def test_two_processes_never_generate_at_the_same_time_and_take_turns(tmp_path):
    a = holder(tmp_path, "a", turns=6, hold=0.04, wait_go=True)
    b = holder(tmp_path, "b", turns=6, hold=0.04, wait_go=True)
    time.sleep(1.0)  # both interpreters started and waiting
    (tmp_path / "go").touch()
    assert a.wait(30) == 0 and b.wait(30) == 0
    a.stdout.close()
    b.stdout.close()
    log = events(tmp_path)
    inside = None
    for name, what, _ in log:
        if what == "in":
            assert inside is None, f"{name} entered while {inside} held the slot"
            inside = name
        else:
            assert inside == name
            inside = None
    turns = [name for name, what, _ in log if what == "in"]
    # Fair turns: neither process runs all six of its generations while the other waits.
    switches = sum(1 for x, y in zip(turns, turns[1:]) if x != y)
    assert switches >= 6, turns


def test_a_killed_holder_frees_the_model(tmp_path):
    victim = holder(tmp_path, "v", hold=60)
    deadline = time.monotonic() + 20
    while not (tmp_path / "log").exists() or "v in" not in (tmp_path / "log").read_text():
        assert time.monotonic() < deadline, "the holder never got its slot"
        time.sleep(0.01)
    slots = MachineSlots(1, tmp_path)
    cancel = threading.Event()
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire(cancel)))
    waiter.start()
    time.sleep(0.3)
    assert not got, "the slot was taken while another process held it"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    victim.stdout.close()
    waiter.join(5)
    assert got and got[0] is not None, "the kernel did not hand the dead holder's slot on"
    slots.release(got[0])
    slots.close()


def test_a_cancelled_generation_stops_waiting(tmp_path):
    first = MachineSlots(1, tmp_path)
    second = MachineSlots(1, tmp_path)  # another open file description: flock treats it as another holder
    fd = first.acquire()
    cancel = threading.Event()
    result: list = []
    t = threading.Thread(target=lambda: result.append(second.acquire(cancel)))
    t.start()
    time.sleep(0.05)
    cancel.set()
    t.join(2)
    assert result == [None]
    first.release(fd)
    assert second.acquire() is not None
    first.close()
    second.close()


def test_as_many_slots_as_the_cores_allow(tmp_path, monkeypatch):
    two = [MachineSlots(2, tmp_path) for _ in range(3)]
    fds = [two[0].acquire(), two[1].acquire()]
    assert all(fd is not None for fd in fds)
    cancel = threading.Event()
    cancel.set()
    assert two[2].acquire(cancel) is None  # both slots are held
    for s, fd in zip(two, fds):
        s.release(fd)
    for s in two:
        s.close()
    monkeypatch.setenv("LMC_LOCAL_SLOTS", "3")
    assert default_slots() == 3
    monkeypatch.setenv("LMC_LOCAL_SLOTS", "0")
    assert default_slots() == 0 and not MachineSlots(0, tmp_path).enabled
    monkeypatch.setenv("LMC_LOCAL_SLOTS", "many")
    with pytest.raises(ConfigError, match="LMC_LOCAL_SLOTS"):
        default_slots()
    monkeypatch.delenv("LMC_LOCAL_SLOTS")
    assert default_slots(n_threads=2) == max(1, len(os.sched_getaffinity(0)) // 2)


def test_the_lock_directory_is_private(tmp_path):
    planted = tmp_path / "planted"
    planted.mkdir()
    os.chmod(planted, 0o777)  # anyone could plant or hold our lock files here
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    fresh = tmp_path / "fresh"
    assert runtime_dir([planted, link, fresh]) == fresh
    assert (fresh.stat().st_mode & 0o777) == 0o700
    assert runtime_dir([planted, link]) is None
    assert runtime_dir() == Path("/tmp") / f"lmc-{os.getuid()}"  # one place for every process of the user


def test_a_prompt_that_leaves_no_room_for_the_answer_is_refused_not_cut():
    check_fits(4000, 4096, 64)
    with pytest.raises(
        LMError,
        match=r"input of 220,936 tokens does not fit the 4,096-token context of "
        r"local/gemma-3-270m with 64 tokens kept for the answer",
    ):
        check_fits(220_936, 4096, 64)


def test_models_still_loaded_at_exit_are_closed_then_and_a_failing_close_is_ignored():
    from lmc.lm import local

    class Model:
        closed = 0

        def close(self):
            self.closed += 1

    class Broken:
        def close(self):
            raise RuntimeError("already freed")

    good, bad = Model(), Broken()
    local._LOADED.add(good)
    local._LOADED.add(bad)
    local._close_loaded()  # what atexit runs, before interpreter shutdown leaves llama_cpp half torn down
    assert good.closed == 1 and len(local._LOADED) == 0
