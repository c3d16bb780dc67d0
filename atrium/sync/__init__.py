"""/sync: stream tokens, the notifier that wakes long-polls, and the sync handler."""
