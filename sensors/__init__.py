"""Sensors, schedules and the jobs they start."""
