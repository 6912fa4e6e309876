"""The shared run layer: run ids, the run store (lock, torn/junk lines, temp files), the
registry helpers and the CLI helpers every part is built from."""

import argparse
import dataclasses
import math

import pytest

from gradsurrogate.cli import config_flags, config_from_args, run_command
from gradsurrogate.io import atomic_path
from gradsurrogate.registry import check_choice, check_int, check_number, lookup, parse_arg
from gradsurrogate.runs import (
    RunStore,
    StoreBusyError,
    StoreWarning,
    check_writable,
    non_default_fields,
    run_id,
)


@dataclasses.dataclass(frozen=True)
class Old:
    lr: float = 0.1
    depth: int = 2
    names: tuple[str, ...] = ("a", "b")


@dataclasses.dataclass(frozen=True)
class New:  # Old plus a field added later with a default
    lr: float = 0.1
    depth: int = 2
    names: tuple[str, ...] = ("a", "b")
    momentum: float = 0.0
    amsgrad: bool = False
    width: int | None = None


def test_adding_a_field_with_a_default_keeps_run_ids():
    assert run_id(Old()) == run_id(New())
    assert run_id(Old(lr=0.2, names=("c",))) == run_id(New(lr=0.2, names=("c",)))
    assert run_id(New(momentum=0.9)) != run_id(New())
    assert run_id(Old(lr=0.2)) != run_id(Old(lr=0.3))
    assert non_default_fields(New(lr=0.2, names=("c",))) == {"lr": 0.2, "names": ["c"]}
    assert len(run_id(Old())) == 12 and int(run_id(Old()), 16) >= 0


def test_append_terminates_a_torn_line_and_readers_report_junk(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"run_id": "a"}\n{"run_id": "b", "x": ')  # killed mid-line
    with RunStore(tmp_path) as store:
        store.append([{"run_id": "c", "x": math.nan}])
        with pytest.raises(ValueError, match="a record must be a dict with a string"):
            store.append([{"x": 1}])
        with pytest.raises(ValueError, match="a record must be a dict with a string"):
            store.append([{"run_id": 7}])
    assert path.read_bytes().endswith(b'\n{"run_id":"c","x":null}\n')
    path.write_bytes(path.read_bytes() + b'42\nnull\n[]\n{}\n{"run_id": 3}\n\xff\n')
    with pytest.warns(StoreWarning) as caught:
        records = RunStore(tmp_path).records()
    assert list(records) == ["a", "c"] and records["c"]["x"] is None
    msgs = [str(w.message) for w in caught]
    assert msgs[0] == f"{path}:2: skipped, not JSON"
    assert [m.split(":")[1] for m in msgs] == ["2", "4", "5", "6", "7", "8", "9"]


def test_latest_record_wins_and_rekey(tmp_path):
    with RunStore(tmp_path) as store:
        store.append([{"run_id": "a", "v": 1}, {"run_id": "b", "v": 2}, {"run_id": "a", "v": 3}])
    assert RunStore(tmp_path).records() == {"a": {"run_id": "a", "v": 3},
                                            "b": {"run_id": "b", "v": 2}}
    rekeyed = RunStore(tmp_path).records(rekey=lambda r: None if r["v"] == 2 else "z")
    assert rekeyed == {"z": {"run_id": "z", "v": 3, "stored_run_id": "a"}}


def test_lock_refuses_a_second_writer_and_cleans_temp_files(tmp_path):
    (tmp_path / "figures").mkdir()
    stale = [tmp_path / ".results.json.abc.tmp", tmp_path / "figures" / ".a.png.x1.tmp.png"]
    for path in stale:
        path.write_text("partial")
    keep = tmp_path / "figures" / "a.png"
    keep.write_text("figure")
    first = RunStore(tmp_path, part="xor")
    with first:
        assert not any(p.exists() for p in stale) and keep.exists()
        with pytest.raises(StoreBusyError, match=r"in use by another .* \(pid \d+\)"):
            RunStore(tmp_path).acquire()
        with pytest.raises(RuntimeError, match="needs the folder lock"):
            RunStore(tmp_path).append([{"run_id": "x"}])
    with RunStore(tmp_path) as second:  # released on exit
        second.append([{"run_id": "x"}])
    assert (tmp_path / ".gradsurrogate-part").read_text().strip() == "xor"


def test_atomic_writes_leave_no_temp_file_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "dir").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"output folder '.*file/sub' is not writable"):
        check_writable(blocker / "sub")


def test_registry_helpers_name_the_value_and_the_accepted_ones():
    assert check_choice("adam", ("adam", "sgd"), "optimizer") == "adam"
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; accepted: adam, sgd"):
        check_choice("adamw", ("adam", "sgd"), "optimizer")
    assert lookup({"mse": 1}, " MSE ", "loss") == 1
    with pytest.raises(ValueError, match="unknown loss 3; accepted: mse"):
        lookup({"mse": 1}, 3, "loss")
    assert parse_arg("Flip:0.3", "mode") == ("flip", "0.3")
    assert parse_arg("sign", "mode") == ("sign", None)
    for bad in ("", "flip:", ":3", None):
        with pytest.raises(ValueError, match="mode"):
            parse_arg(bad, "mode")
    assert check_number("0.5", "lr") == 0.5
    for bad in (0, -1, math.inf, math.nan, 1e300, "x", True, None):
        with pytest.raises(ValueError, match="lr must be a finite number in"):
            check_number(bad, "lr")
    assert check_number(0.0, "p", low=0, high=1, low_open=False) == 0.0
    with pytest.raises(ValueError, match=r"p must be a finite number in \[0, 1\]; got 1.5"):
        check_number(1.5, "p", low=0, high=1, low_open=False)
    assert check_int(3, "steps", 1) == 3
    for bad in (0, 2.0, True, "3"):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            check_int(bad, "steps", 1)


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 0.1
    batch_size: int = 8
    names: tuple[str, ...] = ("a",)
    amsgrad: bool = True
    width: int | None = None
    kind: str = "x"

    def __post_init__(self):
        check_number(self.lr, "lr")


def test_config_flags_follow_the_dataclass():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    config_flags(parser, Cfg, helps={"lr": "learning rate"})
    assert config_from_args(Cfg, parser.parse_args([])) == Cfg()
    args = parser.parse_args(["--lr=0.5", "--batch_size", "4", "--names", "b,c", "d",
                              "--amsgrad=false", "--width", "3", "--kind=y"])
    assert config_from_args(Cfg, args) == Cfg(0.5, 4, ("b", "c", "d"), False, 3, "y")
    assert config_from_args(Cfg, parser.parse_args(["--amsgrad"]), kind="z") == \
        Cfg(amsgrad=True, kind="z")
    assert "learning rate (default: 0.1)" in parser.format_help()


def test_run_command_turns_errors_into_exit_2(capsys):
    parser = argparse.ArgumentParser(prog="gradsurrogate t", allow_abbrev=False)
    config_flags(parser, Cfg)

    def body(argv):
        return lambda: config_from_args(Cfg, parser.parse_args(argv)) and 0

    assert run_command("t", body(["--lr=2"])) == 0
    assert run_command("t", body(["--lr=inf"])) == 2
    assert capsys.readouterr().err == \
        "gradsurrogate t: error: lr must be a finite number in (0, 3.4e+38]; got inf\n"
    assert run_command("t", body(["--batch-size=x"])) == 2
    assert "gradsurrogate t: error: argument --batch-size/--batch_size: invalid int value" in \
        capsys.readouterr().err
    assert run_command("t", body(["--amsgrad=maybe"])) == 2
    assert "expected a boolean" in capsys.readouterr().err


def test_temp_cleanup_spares_subfolders_that_are_stores(tmp_path):
    (tmp_path / "sub").mkdir()
    busy = tmp_path / "sub" / ".r.npz.abc.tmp.npz"  # another process is writing it
    busy.write_text("")
    with RunStore(tmp_path / "sub"):
        busy.write_text("in flight")
        with RunStore(tmp_path):
            assert busy.exists()


def test_a_part_does_not_mix_its_runs_into_another_parts_folder(tmp_path):
    with RunStore(tmp_path, part="restore"):
        pass
    with pytest.raises(ValueError, match="holds restore results; `xor` will not mix"):
        RunStore(tmp_path, part="xor").acquire()
    with RunStore(tmp_path, part="restore"):  # the lock was released by the refusal
        pass
    with pytest.raises(ValueError, match=r"must be an integer >= 0 \(at most 2\*\*63 - 1\)"):
        check_int(2**63, "seed")


def test_a_writer_in_another_process_is_seen(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom gradsurrogate.runs import RunStore\n"
         f"with RunStore({str(tmp_path)!r}, part='xor'):\n"
         "    print('locked', flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError, match=f"pid {holder.pid}"):
            RunStore(tmp_path, part="xor").acquire()
    finally:
        holder.stdin.close()
        holder.wait()
    with RunStore(tmp_path, part="xor"):  # free once the other process is done
        pass
