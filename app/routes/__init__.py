"""HTTP routes, one module per resource; `app.main.ROUTERS` mounts them."""
