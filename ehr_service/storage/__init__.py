"""The only place that speaks SQL: tables, repository, migrations."""
