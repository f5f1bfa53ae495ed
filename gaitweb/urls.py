"""URL map. Each area owns its own urls module; this file only mounts them."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("gaitweb.api_urls")),
    path("", include("packs.urls")),
    path("", include("gaitweb.web_urls")),
]
