"""``netpolc diff``: the semantic difference of two policy sets on one cluster.

:mod:`verifier.diff.compute` decides every cell of the flow space (:mod:`verifier.regions`) under
both versions with the reference semantics and merges the changed cells into compact regions;
:mod:`verifier.diff.render` prints them (text, markdown for pull requests, JSON);
:mod:`verifier.diff.sources` reads ``git:REV:PATH`` inputs.
"""
