"""aiflow engine."""
