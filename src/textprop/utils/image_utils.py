"""TextGrad's `utils.image_utils`: URL check and image type (no downloads in textprop)."""

from __future__ import annotations

from textprop.images import is_url, media_type_of


def is_valid_url(url: str) -> bool:
    return is_url(url)


def get_image_type_from_bytes(data: bytes) -> str:
    """"png", "jpeg", "gif" or "webp" (TextGrad's names); "jpeg" when unknown, as TextGrad."""
    media_type = media_type_of(data)
    return media_type.split("/", 1)[1] if media_type else "jpeg"


__all__ = ["get_image_type_from_bytes", "is_valid_url"]
