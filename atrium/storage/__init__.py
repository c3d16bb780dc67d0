"""Storage: database engines, the transaction pool, migrations, stores and
the event persistence path (``PersistEventStore``)."""
