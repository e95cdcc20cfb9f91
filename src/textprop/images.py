"""Images as values: bytes with their media type, or a URL the provider fetches itself.

    Image.from_bytes(open("176.png", "rb").read())    # media type read from the bytes
    Image.from_url("https://example.org/ant.jpg")     # sent as a URL, never downloaded here

An image is identified by the sha256 of its bytes (or its URL): that is what cache keys,
logs and prompts show, never the bytes themselves.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlparse

from textprop.errors import GraphError

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def media_type_of(data: bytes) -> str | None:
    """The media type of image bytes from their signature (PNG, JPEG, GIF, WEBP), or None."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_url(text: str) -> bool:
    parsed = urlparse(text)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


@dataclass(frozen=True)
class Image:
    """Image bytes and media type, or (with empty `data`) an http(s) URL."""

    data: bytes = field(default=b"", repr=False)
    media_type: str = ""
    url: str = ""

    @classmethod
    def from_bytes(cls, data: bytes) -> Image:
        media_type = media_type_of(data)
        if media_type is None:
            raise GraphError(f"these {len(data)} bytes are not an image textprop can send "
                             f"(PNG, JPEG, GIF or WEBP); they start with {data[:8]!r}")
        return cls(bytes(data), media_type)

    @classmethod
    def from_url(cls, url: str) -> Image:
        if not is_url(url):
            raise GraphError(f"not an http(s) image URL: {url!r}")
        return cls(url=url)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data or self.url.encode("utf-8")).hexdigest()

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    @property
    def data_url(self) -> str:
        """`data:<media type>;base64,...`, or the URL itself for a URL image."""
        return self.url or f"data:{self.media_type};base64,{self.base64}"

    def key(self) -> dict[str, str]:
        """What identifies the image in a cache key: its bytes' hash and type, or its URL."""
        if self.url:
            return {"image_url": self.url}
        return {"image_sha256": self.sha256, "media_type": self.media_type}

    def describe(self) -> str:
        """A short text stand-in for the image, for prompts' text and logs."""
        if self.url:
            return f"<image {self.url}>"
        return f"<image {self.media_type}, {len(self.data)} bytes, sha256 {self.sha256[:12]}>"

    def __str__(self) -> str:
        return self.describe()
