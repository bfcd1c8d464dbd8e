"""The outer layer: the command line, the demo, the console and the warm runner, and the local
Prefect server they start.

It sits above the flows (it runs them); nothing else in turnout imports it, and the core
(every other module under `turnout/`) imports none of flows, tasks, plugins or this package
(`tests/test_layers.py` walks the imports to keep it so).
"""
