"""An attachment as the API shows it: the answer of ``POST /v1/attachments`` and the
``attachments`` of a parent-app inbox message (gateway/api/attachments.py, guardian.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.api.responses import Absent, omitted
from gateway.models import Attachment


class AttachmentView(BaseModel):
    id: str
    name: str
    content_type: str = Field(description="What the bytes are (never what the upload said)")
    size: int
    sha256: str
    url: str | Absent = omitted(description="Download path (parent app only)")


def attachment_view(attachment: Attachment, url: str | None = None) -> AttachmentView:
    """The attachment's metadata; ``url`` where the parent app downloads it."""
    return AttachmentView(
        id=attachment.id,
        name=attachment.name,
        content_type=attachment.content_type,
        size=attachment.size,
        sha256=attachment.sha256,
        url=url,
    )
