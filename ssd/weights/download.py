"""Downloads that never leave a file that looks good but is not.

A download is streamed into a temporary file in the cache folder, its length checked against
the server's ``Content-Length`` and its SHA-256 against the expected one (full digest or the
leading hex digits torchvision puts in its file names), and only then renamed to its final
name. An interrupted, truncated or tampered download raises and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["ChecksumError", "DownloadError", "cache_dir", "download_file", "sha256_file",
           "verify_sha256"]

_CHUNK = 1 << 20
_USER_AGENT = "ssd-weights-downloader"


class DownloadError(RuntimeError):
    """A download that failed (network, HTTP status, truncated transfer)."""


class ChecksumError(DownloadError):
    """A file whose SHA-256 is not the expected one."""


def cache_dir() -> Path:
    """Where downloaded weights live: ``$SSD_HOME``, else torch hub's ``checkpoints/`` folder
    (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints`` by default), which
    torchvision shares, so a file it already downloaded is reused."""
    home = os.environ.get("SSD_HOME")
    if home:
        return Path(home).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(digest: str, expected: str) -> bool:
    return digest.lower().startswith(expected.lower())


def verify_sha256(path: str | os.PathLike[str], expected: str | None) -> None:
    """Raise :class:`ChecksumError` when ``path``'s SHA-256 does not start with ``expected``
    (a full digest or a prefix); ``None`` checks nothing."""
    if expected is None:
        return
    digest = sha256_file(path)
    if not _matches(digest, expected):
        raise ChecksumError(f"{os.fspath(path)} has SHA-256 {digest}, expected one starting "
                            f"with {expected}: the file is damaged or not the published one")


def _progress_bar(total: int | None, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, dynamic_ncols=True, leave=False)


def _fetch_one(url: str, dest: Path, sha256: str | None, progress: bool, timeout: float,
               check: Callable[[Path], None] | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        digest = hashlib.sha256()
        received = 0
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        # Any failure below (a broken connection, a short body, a failed check, Ctrl-C)
        # removes the temporary file: only a complete, verified file gets the final name.
        try:
            with os.fdopen(fd, "wb") as out, _progress_bar(total, dest.name, progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if total is not None and received != total:
                raise DownloadError(f"the transfer from {url} stopped after {received:,} of "
                                    f"{total:,} bytes")
            if sha256 is not None and not _matches(digest.hexdigest(), sha256):
                raise ChecksumError(
                    f"the file downloaded from {url} has SHA-256 {digest.hexdigest()}, expected "
                    f"one starting with {sha256}: it is damaged or not the published file")
            if check is not None:
                check(tmp)
            # mkstemp makes the file private; give it the permissions open() would have.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


def download_file(urls: str | Sequence[str], dest: str | os.PathLike[str], *,
                  sha256: str | None = None, progress: bool = True, timeout: float = 30.0,
                  check: Callable[[Path], None] | None = None) -> Path:
    """Download the first of ``urls`` that works to ``dest`` (atomically, verified).

    Args:
        urls: one URL or mirrors tried in order.
        dest: the final path; its folder is created. Only a complete, verified file ever
            appears there.
        sha256: expected SHA-256 (full hex digest or a prefix of it); ``None`` skips the check.
        progress: show a tqdm progress bar (on stderr).
        timeout: seconds without data before a connection is given up.
        check: called with the complete temporary file before it is renamed (e.g. to check
            that it loads); an exception it raises rejects the download.

    Raises:
        ChecksumError: the data is not the expected file (nothing is kept).
        DownloadError: every URL failed; the message names them, the reasons, and ``dest``,
            where a file downloaded by other means can be put.
    """
    dest = Path(dest)
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ValueError("download_file needs at least one URL")
    failures = []
    for url in urls:
        try:
            _fetch_one(url, dest, sha256, progress, timeout, check)
            return dest
        except ChecksumError:
            raise
        except urllib.error.HTTPError as e:
            failures.append(f"{url}: HTTP {e.code} {e.reason}")
        except (urllib.error.URLError, http.client.HTTPException, OSError, DownloadError,
                ValueError) as e:
            reason = getattr(e, "reason", None) or e
            failures.append(f"{url}: {type(e).__name__}: {reason}")
    tried = "; ".join(failures)
    raise DownloadError(
        f"could not download {dest.name} ({tried}). If this machine is offline, download "
        f"{urls[0]} elsewhere and put it at {dest}"
        + (f" (SHA-256 starting with {sha256})" if sha256 else ""))
