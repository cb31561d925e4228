"""The workbench's Dash dashboard: explore heads, launch scans, see circuits, steer.

    interp dashboard                      # http://127.0.0.1:8050, the embedded smollm2-135m
    python -c "from dashboard.app import serve; serve()"

Pages (each view is a URL; its state lives in the query string, so views can be shared and the
browser's back/forward buttons work):

    /model      the loaded model's facts, its runs in the store, a model picker
    /heads      layer x head heatmap per detector; compare two (side by side / rank correlation)
    /head       one head: pattern on a typed prompt, scores on every detector, causal checks
    /scans      launch any registered detector as a background job; progress, cancel, errors
    /circuits   patching heatmaps and the IOI circuit graph; launch IOI patching
    /steering   greedy generations with and without an attention edit

Modules: `app` (create_app, serve, the router), `layout` (shell, URL helpers), `pages/*` (one
per page; `pages.PAGES` lists them and the navigation is built from it), `state` (the one
loaded model, caches), `jobs` (background jobs), `data` (store lookups), `detectors` (the
detector registry as forms). The figures come from the libraries (`interp.plots`,
`circuits.plots`), where notebooks draw the same pictures.

It holds no analysis code: every number comes from the results store (`interp.store.Store`)
or from the same library functions the CLI and the notebooks call. Nothing imports it but the
`interp dashboard` command (`interp_cli`); tests/test_layering.py checks that.
"""
