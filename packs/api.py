"""Evidence packs over HTTP (docs/api.md): build, list, download, verify and inspect an upload —
thin DRF views over packs/services.py.

Verification is a report, not an error: a tampered pack is ``200`` with ``ok: false`` and the
findings; input that is not a pack at all (not a zip, hostile zip, too large) is a 400 envelope
with the zip guard's reason code.
"""

from __future__ import annotations

import io
from typing import IO, Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from gaitweb.api import StrictQuery
from gaitweb.api_views import ApiView
from gaitweb.lib import reasons
from gaitweb.lib.actors import Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import InvalidInput, LimitExceeded
from gaitweb.lib.middleware import upload_max_bytes
from packs.keys import public_key_parse
from packs.selectors import pack_get, pack_list
from packs.services import pack_build, pack_diff, pack_inspect, pack_verify

READ = Scope.READ
CONTROL = Scope.CONTROL


def diff_max_bytes() -> int:
    """Two packs and the multipart framing around them."""
    return 2 * upload_max_bytes() + 64 * 1024


class RawZipParser(BaseParser):
    """``Content-Type: application/zip`` (or octet-stream): the body is the pack."""

    media_type = "application/zip"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = upload_max_bytes()
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise LimitExceeded(
                reasons.UPLOAD_TOO_LARGE,
                f"uploads are limited to {limit} bytes",
                details={"max_bytes": limit},
            )
        return {"file": io.BytesIO(data)}


class OctetStreamParser(RawZipParser):
    media_type = "application/octet-stream"


class ZipRenderer(BaseRenderer):
    media_type = "application/zip"
    format = "zip"
    charset = None

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, bytes | bytearray | memoryview):
            return bytes(data)
        return JSONRenderer().render(data)


class PackOut(serializers.Serializer):
    pack_id = serializers.CharField()
    job_id = serializers.CharField()
    job_revision = serializers.IntegerField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    key_id = serializers.CharField(allow_blank=True)
    created_by = serializers.CharField(allow_blank=True)
    created_at = serializers.CharField()
    download = serializers.CharField(help_text="URL path of the zip")


class PackBuildOut(serializers.Serializer):
    created = serializers.BooleanField(
        help_text="false when the job was unchanged and the stored pack is returned"
    )
    pack = PackOut()


class PackListOut(serializers.Serializer):
    results = PackOut(many=True)


class PackUploadIn(serializers.Serializer):
    file = serializers.FileField(help_text="the pack zip")


class VerifyQuery(StrictQuery):
    allow_unsigned = serializers.BooleanField(
        required=False,
        default=False,
        help_text="accept a pack without a signature a trusted key verifies (the result says "
        "so: accepted_unsigned, notes); a signature that is wrong still fails",
    )
    require_signature = serializers.BooleanField(
        required=False,
        default=False,
        help_text="kept for Gait compatibility: a trusted signature is always required unless "
        "allow_unsigned; true together with allow_unsigned is refused",
    )
    public_key = serializers.ListField(
        required=False,
        child=serializers.CharField(max_length=200),
        help_text="also trust this Ed25519 public key: hex or base64 of its raw 32 bytes, as "
        "`gait keys export-public` prints it (repeatable)",
    )


class DownloadQuery(StrictQuery):
    # DRF's format override (the schema documents it): ?format=zip picks the zip renderer
    format = serializers.ChoiceField(choices=["json", "zip"], required=False)


class PackDiffIn(serializers.Serializer):
    left = serializers.FileField(help_text="the first pack zip")
    right = serializers.FileField(help_text="the second pack zip")


class EventsDiffOut(serializers.Serializer):
    left_count = serializers.IntegerField()
    right_count = serializers.IntegerField()
    added = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    removed = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    changed = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    added_count = serializers.IntegerField()
    removed_count = serializers.IntegerField()
    changed_count = serializers.IntegerField()
    truncated = serializers.BooleanField(help_text="the lists hold only the first entries")


class DiffSideVerifyOut(serializers.Serializer):
    ok = serializers.BooleanField(help_text="the pack verifies (as packs/verify would)")
    signature_status = serializers.ChoiceField(choices=["missing", "skipped", "verified", "failed"])
    chain_ok = serializers.BooleanField()
    hash_mismatches = serializers.ListField(
        child=serializers.CharField(), help_text="files whose content is not what the manifest says"
    )
    missing_files = serializers.ListField(child=serializers.CharField())
    undeclared_files = serializers.ListField(child=serializers.CharField())
    reasons = serializers.ListField(
        child=serializers.CharField(), help_text="why it fails, in a few words (empty when ok)"
    )


class PackDiffOut(serializers.Serializer):
    identical = serializers.BooleanField(
        help_text="true only for the same manifest and the same content, file by file"
    )
    changed = serializers.BooleanField()
    left_pack_id = serializers.CharField()
    right_pack_id = serializers.CharField()
    left_pack_type = serializers.CharField(allow_null=True)
    right_pack_type = serializers.CharField(allow_null=True)
    left_source_ref = serializers.CharField()
    right_source_ref = serializers.CharField()
    added_files = serializers.ListField(child=serializers.CharField())
    removed_files = serializers.ListField(child=serializers.CharField())
    changed_files = serializers.ListField(child=serializers.CharField())
    manifest_delta = serializers.BooleanField()
    signatures_delta = serializers.BooleanField()
    events = EventsDiffOut(required=False, help_text="job packs: events matched by revision")
    left_verify = DiffSideVerifyOut()
    right_verify = DiffSideVerifyOut()
    failing_verification = serializers.ListField(
        child=serializers.ChoiceField(choices=["left", "right"]),
        help_text="the sides that fail verification",
    )


class VerifyOut(serializers.Serializer):
    ok = serializers.BooleanField()
    pack_id = serializers.CharField(allow_blank=True)
    pack_type = serializers.CharField(allow_blank=True)
    source_ref = serializers.CharField(allow_blank=True)
    files_checked = serializers.IntegerField()
    missing_files = serializers.ListField(child=serializers.CharField())
    hash_mismatches = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField())
    )
    undeclared_files = serializers.ListField(child=serializers.CharField())
    signature_status = serializers.ChoiceField(choices=["missing", "skipped", "verified", "failed"])
    signature_required = serializers.BooleanField(help_text="false only with allow_unsigned")
    accepted_unsigned = serializers.BooleanField(
        help_text="ok only because allow_unsigned accepted a pack no trusted key signed"
    )
    notes = serializers.ListField(
        child=serializers.CharField(),
        help_text='e.g. "unsigned, accepted because allow_unsigned"',
    )
    signatures_valid = serializers.IntegerField()
    signatures_total = serializers.IntegerField()
    signature_errors = serializers.ListField(child=serializers.CharField())
    key_ids = serializers.ListField(child=serializers.CharField())
    chain_ok = serializers.BooleanField()
    chain = serializers.DictField(child=serializers.JSONField())
    proof_records_verified = serializers.IntegerField()
    errors = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))


def _pack_dict(pack: Any, job_id: str | None = None) -> dict[str, Any]:
    return {
        "pack_id": pack.pack_id,
        "job_id": job_id or pack.job.job_id,
        "job_revision": pack.job_revision,
        "sha256": pack.sha256,
        "size": pack.size,
        "key_id": pack.key_id,
        "created_by": pack.created_by,
        "created_at": iso_utc(pack.created_at),
        "download": f"/api/v1/packs/{pack.pack_id}/download",
    }


def _upload(request: Request, field: str = "file") -> IO[bytes]:
    upload = request.data.get(field) if hasattr(request.data, "get") else None
    if upload is None or isinstance(upload, str):
        raise InvalidInput(
            reasons.MISSING_FILE,
            f"upload the pack as multipart file field {field!r}"
            + (" or as an application/zip body" if field == "file" else ""),
            details={"field": field},
        )
    size = getattr(upload, "size", None)
    if size is not None and size > upload_max_bytes():
        raise LimitExceeded(
            reasons.UPLOAD_TOO_LARGE, f"uploads are limited to {upload_max_bytes()} bytes"
        )
    return upload


_UPLOAD_SCHEMA = {
    "multipart/form-data": PackUploadIn,
    "application/zip": OpenApiTypes.BINARY,
}


class JobPacksView(ApiView):
    # building stores a row and journals pack_built: a write (packs.services.pack_build)
    required_scopes = {"GET": READ, "POST": CONTROL}

    @extend_schema(
        operation_id="packs_list",
        responses={200: PackListOut},
        summary="Packs built for this job, newest first",
    )
    def get(self, request: Request, job_id: str) -> Response:
        packs = pack_list(actor=self.actor, job_id=job_id)
        return Response(PackListOut({"results": [_pack_dict(p, job_id) for p in packs]}).data)

    @extend_schema(
        operation_id="packs_build",
        request=None,
        responses={201: PackBuildOut, 200: PackBuildOut},
        summary="Build (or return the stored) signed evidence pack of the job",
    )
    def post(self, request: Request, job_id: str) -> Response:
        self.input(None)
        result = pack_build(actor=self.actor, job_id=job_id)
        out = {"created": result.created, "pack": _pack_dict(result.pack)}
        return Response(PackBuildOut(out).data, status=201 if result.created else 200)


class PackDetailView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="packs_show",
        responses={200: PackOut},
        summary="A stored pack's metadata: job, revision, sha256, signing key, download link",
    )
    def get(self, request: Request, pack_id: str) -> Response:
        return Response(PackOut(_pack_dict(pack_get(actor=self.actor, pack_id=pack_id))).data)


class PackDownloadView(ApiView):
    required_scopes = {"GET": READ}
    renderer_classes = [JSONRenderer, ZipRenderer]

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # errors are JSON envelopes even for a client that asked for the zip
        if isinstance(response, Response) and getattr(response, "exception", False):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="packs_download",
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
        summary="The pack zip",
    )
    def get(self, request: Request, pack_id: str) -> HttpResponse:
        self.query(DownloadQuery)
        pack = pack_get(actor=self.actor, pack_id=pack_id)
        response = HttpResponse(bytes(pack.data), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="pack_{pack.pack_id}.zip"'
        response["Content-Length"] = str(pack.size)
        response["X-Content-SHA256"] = pack.sha256
        return response


class PackVerifyView(ApiView):
    required_scopes = {"POST": READ}
    parser_classes = [MultiPartParser, RawZipParser, OctetStreamParser]
    body_max_bytes = staticmethod(upload_max_bytes)  # gaitweb.lib.middleware

    @extend_schema(
        operation_id="packs_verify",
        request=_UPLOAD_SCHEMA,
        parameters=[VerifyQuery],
        responses={200: VerifyOut},
        summary="Verify an uploaded pack offline (ok false lists the findings)",
    )
    def post(self, request: Request) -> Response:
        q = self.query(VerifyQuery)
        self.body_fields("file")
        if q["allow_unsigned"] and q["require_signature"]:
            raise InvalidInput(
                reasons.VERIFY_OPTIONS_CONFLICT,
                "require_signature and allow_unsigned contradict each other",
                details={"field": "allow_unsigned"},
            )
        public_keys = [
            public_key_parse(
                text.encode("ascii", "replace"), source=f"public_key[{i}]", raw_ok=False
            )
            for i, text in enumerate(q.get("public_key", []))
        ]
        result = pack_verify(
            source=_upload(request), allow_unsigned=q["allow_unsigned"], public_keys=public_keys
        )
        return Response(VerifyOut(result.as_dict()).data)


class PackInspectView(ApiView):
    required_scopes = {"POST": READ}
    parser_classes = [MultiPartParser, RawZipParser, OctetStreamParser]
    body_max_bytes = staticmethod(upload_max_bytes)

    @extend_schema(
        operation_id="packs_inspect",
        request=_UPLOAD_SCHEMA,
        responses={200: OpenApiTypes.OBJECT},
        summary="Manifest and contents of an uploaded pack (no verification)",
    )
    def post(self, request: Request) -> Response:
        self.body_fields("file")
        return Response(pack_inspect(source=_upload(request)))


class PackDiffView(ApiView):
    required_scopes = {"POST": READ}
    parser_classes = [MultiPartParser]
    body_max_bytes = staticmethod(diff_max_bytes)

    @extend_schema(
        operation_id="packs_diff",
        request={"multipart/form-data": PackDiffIn},
        responses={200: PackDiffOut},
        summary="Compare two uploaded packs by content: files, events, which side fails verification",
    )
    def post(self, request: Request) -> Response:
        self.body_fields("left", "right")
        diff = pack_diff(left=_upload(request, "left"), right=_upload(request, "right"))
        return Response(PackDiffOut(diff).data)
