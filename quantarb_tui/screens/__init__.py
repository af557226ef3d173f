"""Screens of the workstation."""
