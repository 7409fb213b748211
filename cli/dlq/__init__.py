"""``auth0-events dlq``: the command, and the dead-letter queues' inspection, replay and purge over AMQP."""
