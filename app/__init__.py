"""The autoslim service: settings, database, API routes, dashboard and the command line."""
