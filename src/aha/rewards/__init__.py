"""Rule-based, total rewards (any string in, a float out, never an exception) and the runner that scores a
batch with timeouts and worker isolation. See issue 3 and each module's docstring for the exact rules."""

from aha.rewards.answers import ANSWER_MODES, answer_completion, extract_answer, score_answer
from aha.rewards.code import code_reward, extract_code
from aha.rewards.countdown import countdown_reward
from aha.rewards.format import format_reward, last_boxed, tag_reward
from aha.rewards.math import math_accuracy, math_equal, reference_answer
from aha.rewards.registry import REWARDS, get_reward, register_reward
from aha.rewards.runner import RewardResult, RewardRunner, RewardSpec
from aha.rewards.text import exact_match, language_consistency, soft_overlong_penalty

__all__ = [
    "ANSWER_MODES",
    "answer_completion",
    "extract_answer",
    "score_answer",
    "countdown_reward",
    "format_reward",
    "last_boxed",
    "tag_reward",
    "math_accuracy",
    "math_equal",
    "reference_answer",
    "REWARDS",
    "get_reward",
    "register_reward",
    "RewardResult",
    "RewardRunner",
    "RewardSpec",
    "exact_match",
    "language_consistency",
    "soft_overlong_penalty",
    "code_reward",
    "extract_code",
]
