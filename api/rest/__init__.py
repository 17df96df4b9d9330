"""The REST API: notifications, devices, contacts, bulk sends, explanations, the console's admin API
(``admin/``) and the OpenAPI document; ``register_rest`` adds every route."""

from api.rest.routes import register_rest

__all__ = ["register_rest"]
