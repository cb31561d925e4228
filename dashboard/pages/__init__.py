"""One module per page. Each has PATH, TITLE, `layout(state, query) -> component` (cheap: it
reads the URL's query and builds controls) and `register(app, state)` (its callbacks)."""

from dashboard.pages import circuits, head, heads, model, scans, steering

PAGES = [model, heads, head, scans, circuits, steering]
