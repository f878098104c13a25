"""Run plugins written for other systems."""
