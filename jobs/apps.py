from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # imports of the project stay inside ready(): models can be imported only once the app
        # registry is loaded, which is what ready() signals.
        # the templates admin lives beside the read-only jobs admin (jobs/admin.py); Django's
        # autodiscovery imports only ``admin``, so register it here
        from django.db.models.signals import post_delete, post_save

        from jobs import admin_job_templates  # noqa: F401
        from jobs.allowlists import allowlists_forget
        from jobs.hardening import process_harden
        from jobs.models import AllowedExecutable, AllowedHttpHost

        # submit's copy of the allow-lists is dropped when this process changes them
        for model in (AllowedExecutable, AllowedHttpHost):
            post_save.connect(allowlists_forget, sender=model, dispatch_uid=f"forget-{model}")
            post_delete.connect(allowlists_forget, sender=model, dispatch_uid=f"del-{model}")
        process_harden()
        # an advance task acknowledges its broker row in the statement that claims its job
        from django_q.signals import post_spawn, pre_execute

        from jobs.broker import broker_row_to_task
        from jobs.wake import worker_spawned

        pre_execute.connect(broker_row_to_task, dispatch_uid="gaitweb-broker-row")
        # a cluster's worker listens for stops of the job it runs (jobs.wake)
        post_spawn.connect(worker_spawned, dispatch_uid="gaitweb-worker-spawned")
