"""Grading engine and command line for the loss-functions course.

The engine is split by stage, one module each: ``course`` (where things are),
``collect`` (which submissions exist, whether they are readable, and the plan
for each notebook, with its test cells taken from the gradebook), ``sandbox``
(the confined process student code runs in), ``execute`` (running a notebook's
cells there), ``verdict`` (running each trusted test cell in the grader, with
proxies for the student's names), ``record`` (gradebook, autograded/ and
grades.csv) and ``report`` (what a TA sees).  ``wire`` is the data-only format
between the grader and ``worker``, the program inside the sandbox.  ``cli`` is
a thin layer over them.
"""

__version__ = "0.1.0"

import sys as _sys

# jsonschema (through nbformat) imports rfc3987_syntax, which compiles some 35
# Earley parsers at import: about 0.9 s of every grading run's start, for the
# "iri" formats that no notebook schema uses.  Without it jsonschema leaves
# those formats unchecked (python-jsonschema/jsonschema#1428).
_sys.modules.setdefault("rfc3987_syntax", None)
