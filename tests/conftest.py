"""Hypothesis profiles. The suite gates every landing, so by default it draws
the same examples on every run ("gate"); a failure it finds is then found
again, not by luck. ``pytest --hypothesis-profile=explore`` draws new
ones each run, to look for what the fixed draw misses."""

from hypothesis import settings

settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("gate")
