"""Tasks (rows + the reward that verifies them) and prompt templates. See aha.data.tasks."""

from aha.data.tasks import SPLITS, TASKS, Task, get_task, register_task
from aha.data.templates import R1_ZERO, render_prompt

__all__ = ["SPLITS", "TASKS", "Task", "get_task", "register_task", "R1_ZERO", "render_prompt"]
