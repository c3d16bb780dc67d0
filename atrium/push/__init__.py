"""Push notifications: rule evaluation (``evaluator``), the per-event bulk
evaluation run where events are persisted (``bulk``) and the HTTP pusher
that calls push gateways (``http_pusher``)."""
