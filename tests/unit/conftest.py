"""Unit-test settings: hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE``.

``dev`` (the default) keeps the edit-test loop quick, ``ci`` runs a moderate
number of examples, ``thorough`` is for a deliberate long run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
