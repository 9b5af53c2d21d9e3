"""Small shared helpers with no heavy imports: one of each."""
