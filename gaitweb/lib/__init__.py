"""The base every other module stands on: canonical JSON, errors and reason codes, input
validation and parsing, actors and roles, request guards. It imports nothing of the project
above it (the import-linter contracts in pyproject.toml hold it to that)."""
