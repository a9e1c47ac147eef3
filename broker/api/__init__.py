from broker.api.app import ROUTES, build_app
from broker.api.context import ApiContext

__all__ = ["ROUTES", "ApiContext", "build_app"]
