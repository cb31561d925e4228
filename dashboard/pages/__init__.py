"""One module per page. Each has PATH, TITLE, `layout(state, query) -> component` (cheap: it
reads the URL's query and builds controls) and `register(app, state)` (its callbacks).

PAGES is the one list of pages: the navigation (in this order, labelled by TITLE) and the
router are built from it. Add a page by writing its module and listing it here."""

from dashboard.pages import circuits, head, heads, lens, model, sae, scans, steering

PAGES = [model, heads, head, lens, scans, circuits, steering, sae]
