"""Pack URLs mounted at the site root: the well-known keys document and pack download."""

from django.urls import path

from packs import views

app_name = "packs"

urlpatterns = [
    path(".well-known/gait/keys.json", views.keys_json, name="keys_json"),
    path("packs/<str:pack_id>/download", views.pack_download, name="download"),
]
