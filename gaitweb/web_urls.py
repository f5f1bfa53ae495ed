"""The dashboard's URLs (HTML pages; the API lives under /api/v1/)."""

from django.urls import path

from approvals import views as approval_views
from gaitweb import views
from jobs import views as job_views
from jobs import views_job_templates as job_template_views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("jobs/", job_views.jobs_list, name="jobs-list"),
    path("jobs/new/", job_views.job_new, name="jobs-new"),
    path("jobs/<str:job_id>/", job_views.job_detail, name="jobs-detail"),
    path("jobs/<str:job_id>/chain/", job_views.job_chain, name="jobs-chain"),
    path("jobs/<str:job_id>/pack/", job_views.job_pack_build, name="jobs-pack-build"),
    path(
        "jobs/<str:job_id>/<str:action>/",
        job_views.job_action,
        name="jobs-action",
    ),
    path("templates/", job_template_views.templates_list, name="templates-list"),
    path(
        "templates/<str:template_id>/", job_template_views.template_detail, name="templates-detail"
    ),
    path(
        "templates/<str:template_id>/<str:action>/",
        job_template_views.template_action,
        name="templates-action",
    ),
    path("approvals/", approval_views.approvals_queue, name="approvals-queue"),
    path(
        "approvals/<str:request_id>/decide/",
        approval_views.approval_decide_view,
        name="approvals-decide",
    ),
    path(
        "approvals/jobs/<str:job_id>/<str:checkpoint_id>/answer/",
        approval_views.checkpoint_answer_view,
        name="approvals-answer",
    ),
    path("packs/verify/", views.pack_verify_page, name="packs-verify"),
]
