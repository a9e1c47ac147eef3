from broker.api.app import ROUTES, ApiContext, build_app

__all__ = ["ROUTES", "ApiContext", "build_app"]
