"""eval.py and test.py refuse an unwritable output folder before loading data or a model."""

from __future__ import annotations

import os
import stat

import pytest

from ssd.evaluation.cli import eval_main
from ssd.evaluation.cli import test_main as run_test_py
from ssd.folders import OutputFolderError, check_output_folder

# Neither exists: a check that ran after loading them would report them instead.
MISSING = ["--voc_root", "/nonexistent/VOCdevkit", "--trained_model", "/nonexistent/m.pth"]


def test_a_file_is_not_a_folder(tmp_path, capsys):
    afile = tmp_path / "results.txt"
    afile.write_text("keep me")
    for main, flag in ((eval_main, "--save_folder"), (run_test_py, "--save_folder"),
                       (run_test_py, "--save_images")):
        other = ["--save_folder", str(tmp_path)] if flag == "--save_images" else []
        assert main(MISSING + other + [flag, str(afile)]) == 2
        err = capsys.readouterr().err
        assert f"{flag} {afile} is a file, not a folder" in err, err
        assert "nonexistent" not in err
    assert afile.read_text() == "keep me"


def test_a_parent_that_is_a_file(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("")
    assert eval_main(MISSING + ["--save_folder", str(afile / "sub" / "eval")]) == 2
    err = capsys.readouterr().err
    assert f"its parent {afile} is a file" in err and "nonexistent" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_folder_without_write_permission(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert run_test_py(MISSING + ["--save_folder", str(locked / "new")]) == 2
        err = capsys.readouterr().err
        assert "Permission denied" in err and str(locked) in err
    finally:
        locked.chmod(stat.S_IRWXU)


def test_a_read_only_file_system_is_refused():
    ro = "/proc/self"  # procfs: no regular files can be created there, even by root
    if not os.path.isdir(ro):
        pytest.skip("no /proc")
    with pytest.raises(OutputFolderError, match=r"--save_folder /proc/self/out is not writable"
                                                r" \(nothing can be created in /proc/self\): "):
        check_output_folder(os.path.join(ro, "out"), "--save_folder")


def test_good_folders_pass_and_nothing_is_created(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_folder(target, "--save_folder") == target
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a probe file is left
    (tmp_path / "c").mkdir()
    check_output_folder(tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []
