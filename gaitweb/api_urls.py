"""The REST API, mounted at /api/v1/ (docs/api.md).

Every view is a thin DRF view in its app's ``api.py``; the schema and the Swagger UI are served
from the app itself (drf-spectacular + sidecar: no CDN).
"""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from approvals import api as approvals_api
from gaitweb.api_views import NotFoundView
from jobs import api as jobs_api
from jobs import api_calls, api_job_templates
from packs import api as packs_api

urlpatterns = [
    path(
        "schema/",
        SpectacularAPIView.as_view(
            authentication_classes=[], permission_classes=[], throttle_classes=[]
        ),
        name="api-schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="api-schema",
            authentication_classes=[],
            permission_classes=[],
            throttle_classes=[],
        ),
        name="api-docs",
    ),
    path("health", jobs_api.HealthView.as_view(), name="api-health"),
    path("stats", jobs_api.StatsView.as_view(), name="api-stats"),
    # jobs
    path("jobs", jobs_api.JobsView.as_view(), name="api-jobs"),
    path("jobs/<str:job_id>", jobs_api.JobDetailView.as_view(), name="api-job"),
    path("jobs/<str:job_id>/events", jobs_api.JobEventsView.as_view(), name="api-job-events"),
    path(
        "jobs/<str:job_id>/checkpoints",
        jobs_api.JobCheckpointsView.as_view(),
        name="api-job-checkpoints",
    ),
    path(
        "jobs/<str:job_id>/checkpoints/<str:checkpoint_id>",
        jobs_api.JobCheckpointDetailView.as_view(),
        name="api-job-checkpoint",
    ),
    path("jobs/<str:job_id>/steps", jobs_api.JobStepsView.as_view(), name="api-job-steps"),
    path("jobs/<str:job_id>/calls", api_calls.JobCallsView.as_view(), name="api-job-calls"),
    path(
        "jobs/<str:job_id>/calls/<int:position>",
        api_calls.JobCallView.as_view(),
        name="api-job-call",
    ),
    path(
        "jobs/<str:job_id>/signals/<str:name>",
        jobs_api.JobSignalView.as_view(),
        name="api-job-signal",
    ),
    *(
        path(f"jobs/<str:job_id>/{action}", view.as_view(), name=f"api-job-{action}")
        for action, view in jobs_api.JOB_ACTION_VIEWS.items()
    ),
    path("jobs/<str:job_id>/inspect", jobs_api.JobInspectView.as_view(), name="api-job-inspect"),
    path(
        "jobs/<str:job_id>/verify-chain",
        jobs_api.JobVerifyChainView.as_view(),
        name="api-job-verify-chain",
    ),
    path(
        "jobs/<str:job_id>/gate/dispatch",
        approvals_api.GateDispatchView.as_view(),
        name="api-job-dispatch",
    ),
    path("jobs/<str:job_id>/packs", packs_api.JobPacksView.as_view(), name="api-job-packs"),
    # gate, approvals, policies, identities
    path("gate/evaluate", approvals_api.GateEvaluateView.as_view(), name="api-gate-evaluate"),
    path("approvals", approvals_api.ApprovalsView.as_view(), name="api-approvals"),
    path(
        "approvals/expire-due",
        approvals_api.ApprovalExpireView.as_view(),
        name="api-approvals-expire",
    ),
    path(
        "approvals/<str:request_id>/decide",
        approvals_api.ApprovalDecideView.as_view(),
        name="api-approval-decide",
    ),
    path("policies", approvals_api.PoliciesView.as_view(), name="api-policies"),
    path("policies/digest", approvals_api.PolicyDigestView.as_view(), name="api-policy-digest"),
    path("policies/<str:ref>", approvals_api.PolicyDetailView.as_view(), name="api-policy"),
    path(
        "identities/revocations",
        approvals_api.IdentityRevocationsView.as_view(),
        name="api-identity-revoke",
    ),
    path(
        "identities/policies",
        approvals_api.IdentityPoliciesView.as_view(),
        name="api-identity-policies",
    ),
    path(
        "identities/policies/<path:identity>",
        approvals_api.IdentityPolicyDetailView.as_view(),
        name="api-identity-policy",
    ),
    # packs
    path("packs/verify", packs_api.PackVerifyView.as_view(), name="api-pack-verify"),
    path("packs/inspect", packs_api.PackInspectView.as_view(), name="api-pack-inspect"),
    path("packs/diff", packs_api.PackDiffView.as_view(), name="api-pack-diff"),
    path("packs/<str:pack_id>", packs_api.PackDetailView.as_view(), name="api-pack"),
    path(
        "packs/<str:pack_id>/download",
        packs_api.PackDownloadView.as_view(),
        name="api-pack-download",
    ),
    # job templates and recurring jobs (docs/recurring.md)
    *api_job_templates.urlpatterns,
    # anything else under /api/v1/: the error envelope, not an HTML 404
    re_path(r"^.*$", NotFoundView.as_view()),
]
