"""Pipeline runners: turn a validated spec and a section into an embedding, domains and a model."""
