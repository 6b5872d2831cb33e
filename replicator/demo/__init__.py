"""``replicator demo``: the main job on the embedded default, end to end.

Rooms: ``job`` (a synthetic training job writing checkpoints and a dataset
shard, keeping a copy of every version it wrote), ``daemon`` (the real
``replicator run`` as a child process, its /status and its log of durable
versions), ``check`` (every version restored from every peer and compared
with the job's copies), ``view`` (the live table and the summary).
"""
