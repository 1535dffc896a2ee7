"""Dagster resources wrapping the aiflow engine, and the environment profiles that pick them."""
