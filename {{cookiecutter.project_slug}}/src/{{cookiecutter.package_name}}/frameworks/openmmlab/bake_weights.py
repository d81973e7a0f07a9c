"""Baking the offered models' published weights into the image (build time only).

The Dockerfile's ``weights`` stage runs ``python -m <package>.frameworks.<framework>.models
--download /weights``, which calls :func:`bake`. That stage has no PyTorch: every file is
checked with :func:`.checkpoint_file.examine` (complete, and a checkpoint holding a state dict
of tensors) before it goes into the image, and the build fails with a one-line reason when one
cannot be had or is not usable. The files are made readable by every user: YMIR runs the image
as an arbitrary uid (root in its default deployment, a service account in hardened ones).

Where a file comes from, first match wins: the build context's ``weights/`` folder, the BuildKit
cache of earlier builds, a download from ``WEIGHTS_BASE_URL`` (download.openmmlab.com or a
mirror that keeps its paths).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import string
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .checkpoint_file import CheckpointFile, CheckpointFileError, examine
from .weights import ModelSpec

log = logging.getLogger(__name__)

# Where the published weights are; a mirror keeps its paths (the WEIGHTS_BASE_URL build argument).
DEFAULT_WEIGHTS_BASE_URL = "https://download.openmmlab.com"
# Baked files and their folder: readable by every user, because YMIR runs the image as any uid.
FILE_MODE = 0o644
DIRECTORY_MODE = 0o755


class WeightsError(Exception):
    """Weights that cannot be baked; the message says which file, why, and what to do."""


@dataclass(frozen=True)
class BakedWeights:
    spec: ModelSpec
    path: Path  # in the weights folder
    origin: str  # where it came from, for the build log
    checkpoint: CheckpointFile


def mirrored_url(url: str, base_url: str) -> str:
    """``url`` on the server ``base_url``: the same path under another scheme, host (and
    prefix). A mirror of download.openmmlab.com keeps OpenMMLab's paths."""
    return base_url.rstrip("/") + urllib.parse.urlsplit(url).path


def bake(
    specs: Sequence[ModelSpec],
    dest: str | os.PathLike,
    base_url: str = DEFAULT_WEIGHTS_BASE_URL,
    local_dirs: Sequence[str | os.PathLike] = (),
    cache_dir: str | os.PathLike | None = None,
) -> list[BakedWeights]:
    """Put the weights of ``specs`` into ``dest``, each checked and readable by every user.

    Each file comes from the first of: a folder of ``local_dirs`` (the build context's
    ``weights/``), ``cache_dir`` (kept between builds), a download from ``base_url`` (into
    ``cache_dir`` when given). Every file is checked before it is used (:func:`examine`:
    complete, and a checkpoint with a state dict of tensors); a bad local file is an error, a
    bad cached one is downloaded again. A file whose content does not match the SHA-256
    prefix in its name (OpenMMLab's naming convention, not a guarantee) is reported and kept.
    Files land in ``dest`` under a temporary name first, then mode 0644: YMIR runs the
    image as an arbitrary user, which must be able to read them.

    Raises:
        WeightsError: a file cannot be had or is not a usable checkpoint.
    """
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, DIRECTORY_MODE)
    cache = Path(cache_dir) if cache_dir is not None else folder
    cache.mkdir(parents=True, exist_ok=True)
    baked = []
    for spec in specs:
        source, origin, checkpoint = _find_or_download(spec, base_url, local_dirs, cache)
        target = folder / spec.weights_file
        if source != target:
            _copy_readable(source, target)
        os.chmod(target, FILE_MODE)
        baked.append(BakedWeights(spec, target, origin, checkpoint))
    return baked


def _find_or_download(
    spec: ModelSpec, base_url: str, local_dirs: Sequence[str | os.PathLike], cache: Path
) -> tuple[Path, str, CheckpointFile]:
    name = spec.weights_file
    for folder in local_dirs:
        local = Path(folder) / name
        if local.is_file():
            checkpoint = _checked(local, f"{name} from the build context's weights/ folder")
            return local, "the build context's weights/ folder", checkpoint
    cached = cache / name
    if cached.is_file():
        try:
            return cached, "the build cache", _checked(cached, f"cached {name}")
        except WeightsError as error:
            log.warning("%s; downloading it again", error)
            cached.unlink()
    url = mirrored_url(spec.weights_url, base_url)
    _download(url, cached)
    return cached, url, _checked(cached, f"{name} downloaded from {url}", downloaded=True)


def _download(url: str, target: Path) -> None:
    """``url`` -> ``target``, complete or not at all (a temporary file renamed at the end)."""
    log.info("downloading %s", url)
    handle, temporary = tempfile.mkstemp(dir=str(target.parent), suffix=".part")
    try:
        received, expected = 0, None
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=600) as response:
            expected = response.headers.get("Content-Length")
            with contextlib.suppress(http.client.IncompleteRead):  # told apart just below
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    received += len(chunk)
        if expected is not None and received != int(expected):
            raise WeightsError(
                f"cannot download {url}: the download stopped after {received} of {expected} "
                "bytes; build again, or use another server (WEIGHTS_BASE_URL)"
            )
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, str(target))
    except (OSError, ValueError, http.client.HTTPException) as error:  # URLError is an OSError
        raise WeightsError(
            f"cannot download {url}: {_one_line(error)}. Where download.openmmlab.com is not "
            "reachable, build with --build-arg WEIGHTS_BASE_URL=<a mirror with its paths>, or "
            f"put {target.name} into the build context's weights/ folder, or leave these "
            "weights out (BAKE_MODELS=<other models> or BAKE_WEIGHTS=0)"
        ) from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _checked(path: Path, what: str, downloaded: bool = False) -> CheckpointFile:
    """The checkpoint at ``path``, checked; a name-hash mismatch is only reported."""
    try:
        checkpoint = examine(path)
    except CheckpointFileError as error:
        if downloaded:
            path.unlink()
        raise WeightsError(f"{what} is not a usable PyTorch checkpoint: {error}") from error
    expected = name_hash(path.name)
    if expected:
        actual = _sha256(path)
        if not actual.startswith(expected):
            log.warning(
                "%s: its SHA-256 starts with %s, its name says %s. OpenMMLab's file names do "
                "not always match their content; the file is a complete checkpoint (%s), so it "
                "is used. If you expected OpenMMLab's own file, compare it with the one at %s",
                what,
                actual[:8],
                expected,
                checkpoint.describe(),
                DEFAULT_WEIGHTS_BASE_URL,
            )
    return checkpoint


def name_hash(file_name: str) -> str:
    """The SHA-256 prefix in an OpenMMLab checkpoint name (``..._20220902_112414-78e30dcc.pth``),
    or "" when the name carries none."""
    suffix = file_name.rsplit("-", 1)[-1].split(".")[0] if "-" in file_name else ""
    return suffix.lower() if len(suffix) == 8 and all(c in string.hexdigits for c in suffix) else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_readable(source: Path, target: Path) -> None:
    handle, temporary = tempfile.mkstemp(dir=str(target.parent), suffix=".part")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, str(target))
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def add_bake_arguments(parser: argparse.ArgumentParser) -> None:
    """The models command line's options for baking (``--download`` and its sources)."""
    parser.add_argument("--download", metavar="DIR", help="bake the weights into DIR")
    parser.add_argument(
        "--base-url",
        default=DEFAULT_WEIGHTS_BASE_URL,
        help="server to download from: download.openmmlab.com or a mirror with its paths "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--local",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder whose checkpoint files are used instead of downloading them",
    )
    parser.add_argument(
        "--cache", metavar="DIR", help="a folder that keeps downloaded files between builds"
    )


def bake_command(args: argparse.Namespace, specs: Sequence[ModelSpec]) -> int:
    """Run ``--download``: one line per model on stdout, a one-line error on stderr."""
    try:
        baked = bake(specs, args.download, args.base_url, args.local, args.cache)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for item in baked:
        print(f"{item.spec.name}: {item.path} ({item.checkpoint.describe()}; from {item.origin})")
    return 0
