"""loadstone: a load-balancing proxy for OpenStack controllers."""

__version__ = "0.1.0"
