"""Writer agreement between loadstone instances of an HA group (global.peers):
the message codec (codec), the choice of writer to adopt (agreement), and the
UDP channel that carries the messages (channel)."""
