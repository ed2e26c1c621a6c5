"""Presenting results: terminal and JSON renderings of a replay (render), CI formats (ci: SARIF, JUnit), plots,
and `ptfuzz show`'s page-table pictures (show)."""
