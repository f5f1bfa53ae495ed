from django.apps import AppConfig
from django.db.models.signals import post_migrate

from gaitweb.lib.roles import roles_ensure_on_migrate


class GaitwebConfig(AppConfig):
    name = "gaitweb"
    verbose_name = "gaitweb"

    def ready(self) -> None:
        post_migrate.connect(roles_ensure_on_migrate, dispatch_uid="gaitweb_roles")
