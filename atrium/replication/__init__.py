"""Replication: streams of typed rows that every process applies in order.

A writer that changes a stream calls ``ReplicationDataHandler.on_local_update``;
the same handler applies rows arriving from other processes over the bus
(in-process in the embedded default, Redis when split). For each batch of
rows: 1) invalidate caches named by the rows, 2) advance the stream position,
3) wake the notifier. That order is the contract /sync relies on.
"""
