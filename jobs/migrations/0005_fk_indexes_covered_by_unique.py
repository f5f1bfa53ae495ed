# The job foreign keys of step runs, checkpoints and events need no index of their own: each
# table's unique constraint leads with the job (one index write less per checkpointed step).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_step_allowlists"),
    ]

    operations = [
        migrations.AlterField(
            model_name="checkpoint",
            name="job",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="checkpoints",
                to="jobs.job",
            ),
        ),
        migrations.AlterField(
            model_name="jobevent",
            name="job",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="events",
                to="jobs.job",
            ),
        ),
        migrations.AlterField(
            model_name="steprun",
            name="job",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="step_runs",
                to="jobs.job",
            ),
        ),
    ]
