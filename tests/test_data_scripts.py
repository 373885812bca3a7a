"""Dataset download scripts, run against a fake ``curl`` (no internet needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "data" / "scripts"

FAKE_CURL = """#!{python}
# Fake curl: write the archive a URL names, with the layout the real one has.
import io, sys, tarfile, zipfile
args = sys.argv[1:]
out, url = args[args.index("-o") + 1], args[-1]
name = url.rsplit("/", 1)[-1]
with open({log!r}, "a") as f:
    f.write(url + "\\n")
if name.endswith(".tar"):
    year = "2012" if "2012" in name else "2007"
    split = "test" if "test" in name else "trainval"
    with tarfile.open(out, "w") as t:
        data = b"000001\\n"
        info = tarfile.TarInfo(f"VOCdevkit/VOC{{year}}/ImageSets/Main/{{split}}.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
else:
    with zipfile.ZipFile(out, "w") as z:
        stem = name[:-4]
        if stem.startswith("annotations"):
            year = stem[-4:]
            z.writestr(f"annotations/instances_val{{year}}.json", "{{}}")
        else:
            z.writestr(f"{{stem}}/000000000001.jpg", "x")
"""


@pytest.fixture
def fake_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "urls.txt"
    curl = bin_dir / "curl"
    curl.write_text(FAKE_CURL.format(python=sys.executable, log=str(log)))
    curl.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, log


def run(script, *args, env):
    return subprocess.run(["bash", str(SCRIPTS / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_voc_scripts(tmp_path, fake_path):
    env, log = fake_path
    target = tmp_path / "data"
    for script in ("VOC2007.sh", "VOC2012.sh"):
        r = run(script, target, env=env)
        assert r.returncode == 0, r.stderr
    main = target / "VOCdevkit"
    assert (main / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").is_file()
    assert (main / "VOC2007" / "ImageSets" / "Main" / "test.txt").is_file()
    assert (main / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").is_file()
    assert not list(target.glob("*.tar"))  # archives removed after extraction
    assert log.read_text().split() == [
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"]
    assert f"--dataset_root {target}/VOCdevkit" in r.stdout


@pytest.mark.parametrize("year", ["2014", "2017"])
def test_coco_scripts(tmp_path, fake_path, year):
    env, log = fake_path
    target = tmp_path / "d"
    r = run(f"COCO{year}.sh", "--keep", target, env=env)
    assert r.returncode == 0, r.stderr
    coco = target / "coco"
    for split in ("train", "val"):
        assert (coco / "images" / f"{split}{year}" / "000000000001.jpg").is_file()
    assert (coco / "annotations" / f"instances_val{year}.json").is_file()
    assert len(list(target.glob("*.zip"))) == 3  # --keep
    assert f"http://images.cocodataset.org/zips/train{year}.zip" in log.read_text()


def test_dry_run_and_bad_arguments(tmp_path, fake_path):
    env, log = fake_path
    r = run("COCO2017.sh", "--dry-run", tmp_path / "nothing", env=env)
    assert r.returncode == 0 and "curl" in r.stdout and "unzip" in r.stdout
    assert not (tmp_path / "nothing").exists() and not log.exists()
    r = run("VOC2007.sh", "--bogus", env=env)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    failing = {**env, "PATH": f"{tmp_path / 'fail'}{os.pathsep}{env['PATH']}"}
    (tmp_path / "fail").mkdir()
    (tmp_path / "fail" / "curl").write_text("#!/bin/sh\nexit 6\n")
    (tmp_path / "fail" / "curl").chmod(0o755)
    r = run("VOC2012.sh", tmp_path / "x", env=failing)
    assert r.returncode == 1 and "download of http" in r.stderr
