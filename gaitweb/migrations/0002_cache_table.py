"""Create the database cache table (``gaitweb_cache``).

The cache is shared by every process (API throttles, the engine's sweep token); without Redis it
is Django's database cache, whose table ``createcachetable`` would normally create. Doing it in
a migration means ``migrate`` — run by ``make run``, the test runner and deployments — is
enough. Created whatever CACHES says today, so switching from Redis back to the database cache
needs no extra step.
"""

from django.db import migrations

CACHE_TABLE = "gaitweb_cache"


def create_cache_table(apps, schema_editor):
    from django.core.management.commands.createcachetable import Command

    connection = schema_editor.connection
    if CACHE_TABLE in connection.introspection.table_names():
        return
    command = Command()
    command.verbosity = 0
    command.create_table(connection.alias, CACHE_TABLE, dry_run=False)


def drop_cache_table(apps, schema_editor):
    quote = schema_editor.connection.ops.quote_name
    schema_editor.execute(f"DROP TABLE IF EXISTS {quote(CACHE_TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("gaitweb", "0001_initial")]

    operations = [migrations.RunPython(create_cache_table, drop_cache_table)]
