"""The admin dashboard: server-rendered pages over the searches, with inline SVG charts."""
