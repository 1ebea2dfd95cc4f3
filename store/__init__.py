"""The service's state, below both the API (`app`) and the workers (`worker`): its settings
(`store.settings`), the database tables (`store.tables`) and engines and sessions (`store.db`).
Neither of those packages is imported from here, so the two never import each other's layers."""
