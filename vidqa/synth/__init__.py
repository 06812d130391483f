"""The synthetic long-video world: scripted timelines, frames, MLVU-format questions.

``make_timeline`` -> ``render_frame`` / ``write_video`` -> ``make_questions`` / ``check_question``.
"""

from vidqa.synth.questions import TASKS, check_question, make_questions
from vidqa.synth.render import render_frame, write_video
from vidqa.synth.timeline import Timeline, make_timeline

__all__ = ["TASKS", "Timeline", "check_question", "make_questions", "make_timeline", "render_frame", "write_video"]
