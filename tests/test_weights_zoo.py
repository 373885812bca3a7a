"""The model zoo and its downloads, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ssd.weights import download as dl
from ssd.weights import zoo


class _Server:
    """Serves ``files`` (path -> bytes); ``modes[path]`` = 'truncate' sends half the body
    under the full Content-Length then closes, 'no_length_truncate' half without a
    Content-Length."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                mode = server.modes.get(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if mode != "no_length_truncate":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode in ("truncate", "no_length_truncate"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


_SMALL = {"w": torch.arange(4000, dtype=torch.float32), "b": torch.ones(3)}


def _entry(server: _Server, name: str, body: bytes, sha256: str | None, **kw) -> zoo.ZooEntry:
    path = f"/models/{name}.pth"
    server.files[path] = body
    base = zoo.ZOO["vgg16_reducedfc"]
    return replace(base, name=name, urls=(server.url(path),), filename=f"{name}.pth",
                   sha256=sha256, **kw)


def _install(monkeypatch, *entries: zoo.ZooEntry) -> None:
    monkeypatch.setattr(zoo, "ZOO", {e.name: e for e in entries})


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_then_reuses_without_network(server, home, monkeypatch):
    body = _torch_bytes(_SMALL)
    full = _entry(server, "full_sha", body, hashlib.sha256(body).hexdigest())
    prefix = _entry(server, "prefix_sha", body, hashlib.sha256(body).hexdigest()[:8])
    nosha = _entry(server, "no_sha", body, None)
    _install(monkeypatch, full, prefix, nosha)
    for e in (full, prefix, nosha):
        assert zoo.cached_path(e.name) is None
        before = len(server.requests)
        path = zoo.fetch(e.name, progress=False)
        assert len(server.requests) == before + 1
        assert path == home / e.filename and path.read_bytes() == body
        assert zoo.cached_path(e.name) == path
        # Second call: served from the cache, no request at all.
        assert zoo.fetch(e.name, progress=False) == path
        assert zoo.resolve_weights(e.name) == path
        assert len(server.requests) == before + 1
    assert _leftovers(home) == sorted(e.filename for e in (full, prefix, nosha))


def test_wrong_checksum_leaves_nothing(server, home, monkeypatch):
    body = _torch_bytes(_SMALL)
    bad = _entry(server, "tampered", body, "0123abcd")
    _install(monkeypatch, bad)
    with pytest.raises(dl.ChecksumError, match="expected one starting with 0123abcd"):
        zoo.fetch("tampered", progress=False)
    assert _leftovers(home) == []
    # A file put in the cache by hand is checked before it is converted.
    home.mkdir(parents=True, exist_ok=True)
    (home / bad.filename).write_bytes(body)
    conv = replace(bad, converter="torchvision_vgg16")
    _install(monkeypatch, conv)
    with pytest.raises(dl.ChecksumError, match="0123abcd"):
        zoo.fetch("tampered", progress=False)
    assert _leftovers(home) == [bad.filename]


@pytest.mark.parametrize("mode", ["truncate", "no_length_truncate"])
def test_interrupted_download_leaves_nothing(server, home, monkeypatch, mode):
    body = _torch_bytes(_SMALL)
    # Without a checksum or Content-Length, only the load check can see the truncation.
    e = _entry(server, f"cut_{mode}", body, None)
    server.modes[f"/models/cut_{mode}.pth"] = mode
    _install(monkeypatch, e)
    with pytest.raises(dl.DownloadError) as info:
        zoo.fetch(e.name, progress=False)
    assert e.urls[0] in str(info.value)
    assert _leftovers(home) == []
    assert zoo.cached_path(e.name) is None


def test_http_error_names_url_and_manual_path(server, home, monkeypatch):
    e = replace(zoo.ZOO["vgg16_reducedfc"], name="gone", urls=(server.url("/missing.pth"),),
                filename="gone.pth")
    _install(monkeypatch, e)
    with pytest.raises(dl.DownloadError) as info:
        zoo.fetch("gone", progress=False)
    msg = str(info.value)
    assert "HTTP 404" in msg and server.url("/missing.pth") in msg
    assert f"put it at {home / 'gone.pth'}" in msg
    assert _leftovers(home) == []
    # Offline (nothing listens on the port): the same advice.
    closed = _Server()
    port_url = closed.url("/x.pth")
    closed.close()
    _install(monkeypatch, replace(e, urls=(port_url,)))
    with pytest.raises(dl.DownloadError, match="put it at"):
        zoo.fetch("gone", progress=False)


def test_converter_runs_once_and_mirrors_fall_back(server, home, monkeypatch):
    body = _torch_bytes(_SMALL)
    e = _entry(server, "conv", body, hashlib.sha256(body).hexdigest()[:8])
    e = replace(e, urls=(server.url("/dead-mirror.pth"), *e.urls), converter="double")
    monkeypatch.setitem(zoo.CONVERTERS, "double", f"{__name__}:_double")
    _install(monkeypatch, e)
    path = zoo.fetch("conv", progress=False)
    assert path == home / "ssd-conv.pth"
    got = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(got["w"], _SMALL["w"] * 2)
    n = len(server.requests)
    assert zoo.fetch("conv", progress=False) == path and len(server.requests) == n


def _double(state):
    return {k: v * 2 for k, v in state.items()}


def test_resolve_weights_paths_and_unknown_names(tmp_path):
    f = tmp_path / "mine.pth"
    f.write_bytes(_torch_bytes(_SMALL))
    assert zoo.resolve_weights(str(f)) == f
    with pytest.raises(FileNotFoundError, match="ssd300_coco, ssd300_voc0712"):
        zoo.resolve_weights("ssd300_cocoo")
    with pytest.raises(KeyError, match="the zoo has: ssd300_coco"):
        zoo.entry("nope")


def test_table_is_complete():
    for e in zoo.ZOO.values():
        assert e.urls and all(u.startswith("https://") for u in e.urls)
        assert e.filename == e.urls[0].rsplit("/", 1)[1]
        assert e.kind in ("ssd", "basenet") and e.licence and e.metric and e.size_mib > 0
        assert e.converter is None or e.converter in zoo.CONVERTERS
        if e.sha256 is not None:  # torchvision's names carry the hash prefix
            assert f"-{e.sha256}." in e.filename
    assert zoo.ZOO["ssd300_voc0712"].classes()[0] == "aeroplane"


@pytest.fixture(scope="module")
def voc_ssd_bytes():
    from ssd.model import build_ssd

    torch.manual_seed(0)
    return _torch_bytes(build_ssd("test", 300, 21).state_dict())


def test_from_pretrained_list_and_download_commands(server, home, monkeypatch, voc_ssd_bytes,
                                                    capsys):
    import ssd
    from ssd.weights.cli import main as weights_main

    e = _entry(server, "ssd300_voc0712", voc_ssd_bytes, None)
    e = replace(e, kind="ssd", config="voc300", class_names=zoo.ZOO["ssd300_voc0712"].class_names)
    _install(monkeypatch, e, zoo.ZOO["vgg16_reducedfc"])
    assert weights_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "ssd300_voc0712" in out and str(home) in out
    assert out.splitlines()[1].split()[4] == "no"  # the cached column
    assert weights_main(["download", "ssd300_voc0712", "--no_progress"]) == 0
    assert f"ssd300_voc0712: {home / e.filename}" in capsys.readouterr().out
    n = len(server.requests)
    assert weights_main(["list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[4] == "yes"

    det = ssd.Detector.from_pretrained("ssd300_voc0712", device="cpu")
    assert det.class_names[0] == "aeroplane" and len(det.class_names) == 20
    image = Path(__file__).resolve().parents[1] / "data/samples/voc_mini/VOCdevkit/VOC2007/" \
        "JPEGImages/2007_000068.jpg"
    result = det.predict(str(image), threshold=0.0)
    assert len(result) > 0 and result.boxes.shape[1] == 4
    net = ssd.pretrained_model("ssd300_voc0712", device="cpu")
    assert net.phase == "test" and net.num_classes == 21
    assert torch.equal(net.state_dict()["conf.0.bias"], det.model.state_dict()["conf.0.bias"])
    assert len(server.requests) == n  # all from the cache
    with pytest.raises(ValueError, match="base network"):
        ssd.Detector.from_pretrained("vgg16_reducedfc", device="cpu")
    assert weights_main(["download", "nope"]) == 1
    assert "the zoo has: ssd300_voc0712" in capsys.readouterr().err


def test_ssd300_coco_downloads_converts_and_detects(server, home, monkeypatch):
    pytest.importorskip("ssd.weights.torchvision_ssd")
    from torchvision.models.detection import ssd300_vgg16

    import ssd

    torch.manual_seed(0)
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91)
    body = _torch_bytes(tv.state_dict())
    digest = hashlib.sha256(body).hexdigest()
    e = _entry(server, "ssd300_coco", body, digest[:8])
    e = replace(e, kind="ssd", converter="torchvision_ssd", config=None, class_names=None)
    _install(monkeypatch, e)
    path = zoo.fetch("ssd300_coco", progress=False)
    assert path == home / "ssd-ssd300_coco.pth" and (home / e.filename).is_file()
    from ssd.weights import read_weights_file

    found = read_weights_file(path)
    assert found.config is not None and len(found.class_names) == 90
    assert found.meta["source_sha256"] == digest[:8]
    assert torch.equal(found.state_dict["conf.0.weight"],
                       tv.state_dict()["head.classification_head.module_list.0.weight"])
    n = len(server.requests)
    det = ssd.Detector.from_pretrained("ssd300_coco", device="cpu")
    assert det.class_names == list(found.class_names) and len(server.requests) == n


def test_train_basenet_takes_zoo_names(server, home, monkeypatch, tmp_path):
    from ssd.training.cli import SetupError, resolve_basenet

    body = _torch_bytes(_SMALL)
    e = _entry(server, "vgg16_reducedfc", body, None)
    gone = replace(e, name="vgg16_imagenet", urls=(server.url("/gone.pth"),),
                   filename="gone.pth")
    _install(monkeypatch, e, gone)
    assert resolve_basenet("vgg16_reducedfc", str(tmp_path)) == home / e.filename
    assert resolve_basenet("none", str(tmp_path)) is None
    assert resolve_basenet("torchvision-vgg16", str(tmp_path)) == "torchvision-vgg16"
    with pytest.raises(SetupError, match=f"put it at {home / 'gone.pth'}"):
        resolve_basenet("vgg16_imagenet", str(tmp_path))
    with pytest.raises(SetupError, match="or a zoo name \\(vgg16_reducedfc, vgg16_imagenet\\)"):
        resolve_basenet("nothing.pth", str(tmp_path))


def test_mirror_is_tried_first(server, home, monkeypatch):
    body = _torch_bytes(_SMALL)
    e = replace(zoo.ZOO["vgg16_reducedfc"], name="mirrored", filename="mirrored.pth",
                urls=(server.url("/publisher-is-down.pth"),),
                sha256=hashlib.sha256(body).hexdigest())
    server.files["/mirror/mirrored.pth"] = body
    _install(monkeypatch, e)
    monkeypatch.setenv("SSD_MIRROR", f"{server.url('/nothing-here')} {server.url('/mirror/')}")
    n = len(server.requests)
    assert zoo.fetch("mirrored", progress=False).read_bytes() == body
    assert server.requests[n:] == ["/nothing-here/mirrored.pth", "/mirror/mirrored.pth"]
