"""Helpers the test modules share: test modules never import one another (or conftest.py).

``net``: free ports and waiting for servers; ``models``: a quick scorecard configuration;
``runs``: the robustops executables and the tiny pipeline config (tests/tiny.yaml).
"""
