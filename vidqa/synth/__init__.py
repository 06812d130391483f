"""The synthetic long-video world: scripted timelines, frames, MLVU-format questions, captions.

``make_timeline`` -> ``render_frame`` / ``write_video`` -> ``make_questions`` / ``check_question``
and ``describe``; ``synth_main`` is ``vidqa synth``. The vocabulary lives in ``vocab``.
"""

from vidqa.synth.check import check_question
from vidqa.synth.cli import generate, synth_main
from vidqa.synth.describe import describe
from vidqa.synth.questions import TASKS, clock, make_questions
from vidqa.synth.render import render_frame
from vidqa.synth.timeline import make_timeline
from vidqa.synth.world import Timeline
from vidqa.synth.writer import write_video

__all__ = ["TASKS", "Timeline", "check_question", "clock", "describe", "generate", "make_questions",
           "make_timeline", "render_frame", "synth_main", "write_video"]
