"""Widgets of the workstation, one per module; each renders a slice of the RuntimeSnapshot."""
