"""Measuring speed and memory: the benchmark's cases (``config``, ``cases``), timing a workload (``measure``), where a
step's time goes (``profile``) and what a step costs against the device's peak (``roofline``).

The cases are what `hmtbench bench` measures (``hmtbench.commands.bench`` writes their records) and what
`hmtbench profile` looks into (``hmtbench.commands.profile``).
"""
