"""``qplan regress``: memory regression reports between two result sets of the same suite.

- the results file (provenance + measurements) lives in :mod:`planner.results`, beside the records
- :mod:`.compare`    - scenario-by-scenario verdicts and provenance mismatches
- :mod:`.console`    - the rich table for people
- :mod:`.plot`, :mod:`.report` - the PNG plot and the HTML / markdown reports
- :mod:`.run`, :mod:`.predict` - produce a results file from GPU measurements or from qplan's model

Importing this package needs no torch and no matplotlib.
"""
