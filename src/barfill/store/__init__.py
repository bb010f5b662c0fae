"""The database edge: tables, migrations, bar upserts and reads, coverage, the queue."""
