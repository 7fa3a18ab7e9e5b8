"""The CI checks of the project: what runs beside the stages, never as one."""
