"""Grading engine and command line for the loss-functions course.

The engine is split by stage, one module each: ``course`` (where things are),
``collect`` (which submissions exist and whether they are readable),
``execute`` (running them), ``record`` (gradebook and grades.csv) and
``report`` (what a TA sees).  ``cli`` is a thin layer over them.
"""

__version__ = "0.1.0"
