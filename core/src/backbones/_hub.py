"""Resolve a file of a checkpoint: a local directory, or a hub repository through huggingface_hub.

A local directory never touches the network. A hub id is looked up in the cache first, and a file
found there is used with no network call; only a cache miss downloads (unless offline).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._errors import CheckpointError
from ._options import HUB_OPTION_NAMES

__all__ = ["HUB_OPTIONS", "is_local", "resolve_file"]

HUB_OPTIONS = frozenset(HUB_OPTION_NAMES)
"""The load options that say where hub files come from (see :class:`backbones.LoadOptions`)."""

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


def is_local(name_or_path: str | os.PathLike[str]) -> bool:
    """Whether ``name_or_path`` names a local directory (existing or clearly meant as a path)."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or os.path.isdir(text):
        return True
    return text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_file(
    name_or_path: str | os.PathLike[str],
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    optional: bool = False,
) -> Path | None:
    """Return the local path of ``filename`` from a checkpoint directory or hub repository.

    Args:
        name_or_path: A local directory, or a hub repository id (``"org/name"``).
        filename: The file inside it, e.g. ``"config.json"``.
        revision: Hub branch, tag or commit (default ``"main"``).
        cache_dir: Hub cache directory (default: huggingface_hub's).
        local_files_only: Never touch the network; fail if the file is not cached.
        token: Hub token for private or gated repositories.
        force_download: Download even if the file is cached.
        optional: Return ``None`` instead of raising when the file does not exist.

    Raises:
        CheckpointError: The directory or repository or file does not exist, access is denied,
            or the file is not cached while offline. The message says which and what to do.
    """
    if is_local(name_or_path):
        directory = Path(os.path.expanduser(os.fspath(name_or_path)))
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint directory {directory} does not exist")
        path = directory / filename
        if path.is_file():
            return path
        if optional:
            return None
        raise CheckpointError(f"{filename} not found in checkpoint directory {directory.resolve()}")

    repo_id = os.fspath(name_or_path)
    if not _REPO_ID.match(repo_id):
        raise CheckpointError(f"{repo_id!r} is neither an existing directory nor a hub repository id (like 'org/name')")
    import huggingface_hub
    from huggingface_hub import errors
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    cache = None if cache_dir is None else os.fspath(cache_dir)
    where = f"{filename} of hub repository {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    if not force_download:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        if isinstance(cached, str):
            return Path(cached)
        if cached is _CACHED_NO_EXIST and optional:
            return None
    if local_files_only or _offline():
        if optional:
            return None
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
        raise CheckpointError(
            f"{where} is not in the local cache and {why}; download it once with network access, "
            "or pass a local directory"
        )
    try:
        downloaded = huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache,
            token=token,
            force_download=force_download,
            library_name="backbones",
        )
    except errors.GatedRepoError as error:
        raise CheckpointError(
            f"access to {where} is gated: accept its terms on the hub and pass token=... (or log in)"
        ) from error
    except errors.RepositoryNotFoundError as error:
        raise CheckpointError(
            f"hub repository {repo_id!r} not found (or it is private: pass token=... or log in with `hf auth login`)"
        ) from error
    except errors.RevisionNotFoundError as error:
        raise CheckpointError(f"revision {revision!r} not found in hub repository {repo_id!r}") from error
    except errors.EntryNotFoundError as error:
        if optional:
            return None
        raise CheckpointError(f"{where} not found") from error
    except errors.LocalEntryNotFoundError as error:
        raise CheckpointError(
            f"cannot download {where} and it is not cached (network unreachable or timed out): {error}"
        ) from error
    except errors.HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise CheckpointError(
                f"the hub refused access to {where} (HTTP {status}): pass a valid token=... or log in"
            ) from error
        raise CheckpointError(f"downloading {where} failed: {error}") from error
    except _transfer_errors() as error:
        # huggingface_hub retries a broken or stalled transfer, then lets the HTTP client's own error (a
        # timeout, a dropped connection) or its size check (an OSError) through; its partial file is removed.
        if isinstance(error, OSError) and error.errno is not None:
            raise CheckpointError(
                f"cannot store {where} in the hub cache ({type(error).__name__}: {error}); "
                "check that the cache directory (cache_dir or HF_HUB_CACHE) is writable and has free space"
            ) from error
        raise CheckpointError(
            f"downloading {where} failed ({type(error).__name__}: {error}); check the network connection and retry "
            "(HF_HUB_DOWNLOAD_TIMEOUT sets the timeout; set HF_HUB_OFFLINE=1 to use only cached files). "
            "Nothing partial was kept in the cache"
        ) from error
    return Path(downloaded)


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of a failed transfer: OSError, and the HTTP client's errors (httpx2, or requests before 1.0)."""
    found: list[type[BaseException]] = [OSError]
    for module_name, class_name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        error_class = getattr(module, class_name, None)
        if isinstance(error_class, type) and issubclass(error_class, BaseException):
            found.append(error_class)
    return tuple(found)
