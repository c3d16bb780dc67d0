"""What a worker process has that is not a handler: reporting its syncing
users to the master (``user_sync``) and its start-up checks (``startup``)."""
