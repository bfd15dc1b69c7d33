"""The compliance dashboard: server-rendered pages (Django templates, enhanced with htmx) for
a tenant's reviewers and admins. See docs/dashboard.md."""
