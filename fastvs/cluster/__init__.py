"""Many directors behind an ECMP router: shard a capture by a hash of each flow
(``shard.py``), run one director per shard on local processes or a Dask cluster and
merge their outputs (``run.py``), and the process command's ``--directors`` mode
(``cli.py``). Import the submodules; this file loads nothing."""
