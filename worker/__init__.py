"""The Celery side: the app, the search task, progress writing and the reaper of lost searches."""
