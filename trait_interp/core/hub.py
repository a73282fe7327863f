"""What a hub reference points at, without loading weights.

``resolve_revision`` turns ``(hub id, revision)`` into the 40-hex commit sha it means now, so
results can record exactly which upload they came from, and a moved ``main`` (a new upload) is
noticed. It uses ``huggingface_hub``'s own resolution (``HfApi.resolve_revision``): online it asks
the Hub (and caches the answer under ``refs/``); offline (``HF_HUB_OFFLINE=1``) it reads the local
cache's ``refs/<revision>`` and never touches the network. Local folders are not hub references:
the caller hashes those itself.
"""

from __future__ import annotations

import re
from pathlib import Path

FULL_SHA = re.compile(r"[0-9a-f]{40}")
"""A full git commit sha, as huggingface_hub's ``REGEX_COMMIT_HASH``."""


def resolve_revision(hub_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None) -> str:
    """The commit sha that ``revision`` (default ``main``) of the model repo ``hub_id`` resolves to.

    A full sha resolves to itself when its snapshot is in the cache; otherwise it must exist on the
    Hub (online) and is an error offline. Offline, a branch or tag resolves from the cache's refs,
    and its snapshot folder must be there too (a ref without files cannot be loaded offline).
    ``cache_dir`` defaults to huggingface_hub's (``HF_HUB_CACHE``).

    Raises ``ValueError`` naming the hub id and revision when it cannot be resolved: not cached
    while offline, unknown repo or revision, no access, a malformed id, or a local folder.
    """
    from huggingface_hub import HfApi, constants, is_offline_mode
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        RevisionResolutionError,
    )

    requested = revision or constants.DEFAULT_REVISION
    where = f"hub model '{hub_id}' at revision '{requested}'"
    if Path(hub_id).expanduser().is_dir():
        raise ValueError(f"cannot resolve {where}: '{hub_id}' is a local folder, not a hub reference (hash the folder)")
    offline = is_offline_mode()
    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()
    api = HfApi()
    try:
        if FULL_SHA.fullmatch(requested):
            if _snapshot(cache, hub_id, requested).is_dir():
                return requested
            if offline:
                raise ValueError(f"cannot resolve {where}: commit not in the local cache ({cache}), HF_HUB_OFFLINE is set")
            # huggingface_hub passes a full sha through unchecked; ask the Hub whether it exists
            sha = api.model_info(hub_id, revision=requested).sha
        else:
            sha = api.resolve_revision(hub_id, revision=requested, cache_dir=cache, local_files_only=offline).resolved
    except HFValidationError as error:
        raise ValueError(f"cannot resolve {where}: not a valid hub id ({error})") from None
    except RevisionResolutionError as error:
        reason = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        raise ValueError(f"cannot resolve {where}: {reason} and the local cache ({cache}) has no such ref") from error
    except GatedRepoError as error:
        reason = "the repo is gated and this token has no access; log in (hf auth login)"
        raise ValueError(f"cannot resolve {where}: {reason}") from error
    except RepositoryNotFoundError as error:
        reason = "no such repo on the Hub (or it is private and this token has no access)"
        raise ValueError(f"cannot resolve {where}: {reason}") from error
    except RevisionNotFoundError as error:
        raise ValueError(f"cannot resolve {where}: the repo has no such branch, tag or commit") from error
    except HfHubHTTPError as error:
        raise ValueError(f"cannot resolve {where}: the Hub answered {error}") from error
    if sha is None or not FULL_SHA.fullmatch(sha):
        raise ValueError(f"cannot resolve {where}: got {sha!r}, not a commit sha")
    if offline and not _snapshot(cache, hub_id, sha).is_dir():
        raise ValueError(f"cannot resolve {where}: the cache's ref points at {sha}, whose snapshot is not in {cache}")
    return sha


def _snapshot(cache: Path, hub_id: str, sha: str) -> Path:
    """The cache folder of one commit of a model repo (``models--org--name/snapshots/<sha>``)."""
    return cache / ("models--" + hub_id.replace("/", "--")) / "snapshots" / sha
