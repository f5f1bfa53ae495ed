from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # the templates admin lives beside the read-only jobs admin (jobs/admin.py); Django's
        # autodiscovery imports only ``admin``, so register it here
        from jobs import admin_templates  # noqa: F401
