"""Tasks (rows + the reward that verifies them), prompt templates, and the one reader of row sources (aha.data.read:
files, `datasets` directories, hub datasets). See aha.data.tasks."""

from aha.data.read import DataError, read_rows
from aha.data.tasks import SPLITS, TASKS, Task, get_task, register_task
from aha.data.templates import R1_ZERO, R1_ZERO_SYSTEM, render_prompt

__all__ = [
    "SPLITS",
    "TASKS",
    "Task",
    "get_task",
    "register_task",
    "R1_ZERO",
    "R1_ZERO_SYSTEM",
    "render_prompt",
    "DataError",
    "read_rows",
]
