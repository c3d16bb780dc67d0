"""Services only the master runs: which users are syncing on which process,
and clearing the syncing users of a process that died (``syncing_users``)."""
