"""lb: an HTTP load balancer as an ASGI application.

Vocabulary (Envoy/HAProxy words, one meaning each): a *pool* is a named set of *backends* (upstream
servers); a *strategy* picks one backend of a pool per request; a *route* maps host and path prefix
to a pool; *active health checks* probe backends, *passive health* ejects backends that fail real
requests; a *generation* is one configuration made live, swapped whole on reload.
"""

from lb.app import LoadBalancer, create_app
from lb.config import Config, ConfigError, load_config

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "LoadBalancer", "create_app", "load_config", "__version__"]
