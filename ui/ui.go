// Package ui is the agent's web UI: plain HTML, CSS and JavaScript embedded
// in the binary and served at /ui/ by every agent's HTTP API, with no build
// step and nothing fetched from the internet. The pages read the existing
// /v1 API with the token the user types (kept in the browser's
// sessionStorage only), so the API's ACL checks decide what each page shows.
//
// The package adds two read-only endpoints (RegisterAPI): the settings
// the pages need first, and the topology's numbers, which nothing else
// gives:
//
//	GET /v1/ui/config     Settings   open: whether ACLs are on
//	GET /v1/ui/topology   Topology   in handler: service:read on both ends of each edge,
//	                                 node:read on each agent asked; filtered
//
// Its numbers come from a Provider: by default the Agents provider, which
// reads this agent's own golden-signal counters and asks every other live
// agent for its counters on its telemetry listener (telemetry.listen), and
// turns two readings into rates; or, with ui.metrics_provider prometheus,
// a Prometheus that scrapes the agents (docs/design.md, "The UI").
package ui

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// PathPrefix is where the UI is served.
const PathPrefix = "/ui/"

// cacheControl keeps the assets fresh: they are small, served on loopback,
// and change with the binary, whose upgrade must not leave a browser on
// stale scripts. Revalidation costs one round trip, answered 304 by ETag.
const cacheControl = "no-cache"

// contentTypes are the types of the assets, fixed here rather than read
// from the host's mime.types, which differ between distributions.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
}

// asset is one embedded file, read once.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// AssetHandler serves the embedded assets under PathPrefix: "/ui/" is the
// index page, any other path a file of the assets directory. A directory or
// an unknown file is 404 (there is no listing), and every answer carries
// its content type, an ETag and Cache-Control: no-cache, plus headers that
// keep the pages from being framed or sniffed.
func AssetHandler() http.Handler {
	files := map[string]asset{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = mime.TypeByExtension(path.Ext(p))
		}
		files[strings.TrimPrefix(p, "assets/")] = asset{body: body, contentType: ct, etag: etagOf(body)}
		return nil
	})
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, PathPrefix)
		if name == "" {
			name = "index.html"
		}
		a, ok := files[name]
		if !ok {
			notFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", cacheControl)
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		if match := r.Header.Get("If-None-Match"); match != "" && match == a.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusOK)
			return
		}
		_, _ = w.Write(a.body)
	})
}

// contentSecurityPolicy allows the UI's own files and calls to its own
// agent, nothing else: no inline script, no remote font or script.
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
